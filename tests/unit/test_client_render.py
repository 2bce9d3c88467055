"""What the client shows people: the progress bar, the batch panel, error lines."""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console

from batchd.client.errors import ServerError
from batchd.client.output import Output
from batchd.client.progress import ChangeLines, LiveBar, display_for
from batchd.client.render import batch_panel


def terminal() -> tuple[Console, io.StringIO]:
    sink = io.StringIO()
    return Console(file=sink, force_terminal=True, width=120, color_system=None), sink


def batch(status: str, completed: int = 0, failed: int = 0, total: int = 0, **extra: Any) -> Any:
    counts = {"completed": completed, "failed": failed, "total": total}
    return {"id": "batch_1", "status": status, "request_counts": counts, **extra}


def test_a_terminal_gets_a_live_bar_with_counts_and_failures() -> None:
    """On a terminal: the status, done of total, and the failures."""
    console, sink = terminal()
    display = display_for(console)
    assert isinstance(display, LiveBar)
    with display:
        display.update(batch("in_progress", completed=38, failed=2, total=100))
    shown = sink.getvalue()
    assert "in_progress" in shown and "40/100" in shown and "2 failed" in shown
    assert "req/s" in shown and "ETA" in shown


def test_what_holds_the_batch_up_is_shown_under_the_bar() -> None:
    """A model server in trouble gets a line of its own below the bar, instead of a silent ETA."""
    console, sink = terminal()
    with LiveBar(console) as display:
        trouble = "model server gpu-1 failing (connection refused), retrying"
        display.update(batch("in_progress", total=5), trouble)
    lines = sink.getvalue().splitlines()
    below = [n for n, line in enumerate(lines) if "connection refused" in line]
    bar = [n for n, line in enumerate(lines) if "0/5" in line]
    assert below and bar and min(below) > min(bar)


def test_elsewhere_a_line_is_printed_only_when_something_changed() -> None:
    """Off a terminal: one plain line per change, none for a poll that saw nothing new."""
    sink = io.StringIO()
    display = display_for(Console(file=sink, width=120))
    assert isinstance(display, ChangeLines)
    with display:
        for seen in [
            batch("validating"),
            batch("in_progress", 1, 0, 4),
            batch("in_progress", 1, 0, 4),
            batch("completed", 3, 1, 4),
        ]:
            display.update(seen)
    assert sink.getvalue().splitlines() == [
        "batch_1 validating: 0/0 done, 0 failed",
        "batch_1 in_progress: 1/4 done, 0 failed",
        "batch_1 completed: 4/4 done, 1 failed",
    ]


def test_the_panel_of_a_failed_batch_lists_its_problems_by_line() -> None:
    """A batch that failed validation shows each error with its line number."""
    console, sink = terminal()
    errors = {"data": [{"code": "invalid_json_line", "message": "Bad [json]", "line": 7}]}
    console.print(batch_panel(batch("failed", errors=errors, endpoint="/v1/embeddings")))
    shown = sink.getvalue()
    assert "failed" in shown and "invalid_json_line" in shown and "Bad [json]" in shown
    assert "7" in shown and "/v1/embeddings" in shown


def test_server_errors_show_message_status_and_code(capsys: Any) -> None:
    """The message, then the HTTP status, type, code and request id, on stderr."""
    error = ServerError(429, "Slow down [now]", type="rate_limit_error", request_id="req_9")
    Output(as_json=False).error(error)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "error: Slow down [now]" in captured.err
    assert "HTTP 429 · type rate_limit_error · request req_9" in captured.err
