"""What the client shows people: the progress bar, the batch panel, error lines."""

from __future__ import annotations

import io
import re
from typing import Any

from rich.console import Console

from batchd.client.errors import ServerError
from batchd.client.exits import ExitCode, outcome
from batchd.client.output import Output
from batchd.client.progress import ChangeLines, LiveBar, Rate, display_for
from batchd.client.render import batch_panel, problem_count


def terminal(width: int = 120) -> tuple[Console, io.StringIO]:
    sink = io.StringIO()
    return Console(file=sink, force_terminal=True, width=width, color_system=None), sink


def bar_frames(sink: io.StringIO, marker: str) -> list[str]:
    """Each frame of the live bar drawn, as plain text, that holds ``marker``."""
    frames = sink.getvalue().replace("\r", "\n").splitlines()
    plain = [re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", frame) for frame in frames]
    return [frame for frame in plain if marker in frame]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


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
        "batch_1 validating",
        "batch_1 in_progress: 1/4 done, 0 failed",
        "batch_1 completed: 4/4 done, 1 failed",
    ]


def test_elsewhere_a_failed_validation_says_so_with_its_error_count() -> None:
    """A batch that failed validation has no counts to show: the line says why it failed."""
    sink = io.StringIO()
    errors = {"object": "list", "data": [{"code": "invalid_json_line", "line": n} for n in (1, 2)]}
    with ChangeLines(Console(file=sink, width=120)) as display:
        display.update(batch("validating"))
        display.update(batch("failed", errors=errors))
    assert sink.getvalue().splitlines() == [
        "batch_1 validating",
        "batch_1 failed: validation failed, 2 errors",
    ]


def test_the_rate_is_what_finished_over_the_time_it_took() -> None:
    """10 requests more after 2 s is 5 req/s, over the samples of the last 10 s."""
    clock = Clock()
    rate = Rate(clock)
    assert rate.observe(batch("in_progress", 0, 0, 100)) is None
    clock.now = 2.0
    assert rate.observe(batch("in_progress", 8, 2, 100)) == 5.0
    clock.now = 14.0
    assert rate.observe(batch("in_progress", 70, 12, 100)) == 6.0  # 72 more in 12 s since t=2


def test_no_rate_when_nothing_finished_in_the_interval_or_after_a_cancel() -> None:
    """A stalled batch and a cancelled one (its lines all marked failed at once) show no rate."""
    clock = Clock()
    rate = Rate(clock)
    rate.observe(batch("in_progress", 10, 0, 1000))
    clock.now = 11.0
    assert rate.observe(batch("in_progress", 20, 0, 1000)) is not None
    clock.now = 22.0
    assert rate.observe(batch("in_progress", 20, 0, 1000)) is None
    clock.now = 23.0
    assert rate.observe(batch("cancelling", 20, 0, 1000)) is None
    assert rate.observe(batch("cancelled", 20, 980, 1000)) is None


def test_the_bar_shows_no_rate_or_eta_after_a_cancel() -> None:
    """The jump of a cancel (980 lines failed in a second) is not shown as a rate."""
    clock = Clock()
    console, sink = terminal()
    with LiveBar(console, clock) as display:
        display.update(batch("in_progress", 10, 0, 1000))
        clock.now = 1.0
        display.update(batch("cancelled", 20, 980, 1000))
    last = bar_frames(sink, "/1000")[-1]
    assert "1000/1000" in last and "- req/s" in last and "ETA -:--:--" in last


def test_the_bar_leaves_room_for_the_ctrl_c_echo_at_80_columns() -> None:
    """The terminal echoes ^C after the bar: a bar as wide as the screen would wrap there and
    leave a copy of itself, so every line stays short of the right edge."""
    clock = Clock()
    console, sink = terminal(width=80)
    with LiveBar(console, clock) as display:
        display.update(batch("in_progress", 2000, 21, 50000))
        clock.now = 1.0
        display.update(batch("in_progress", 3354, 21, 50000))
    bars = bar_frames(sink, "/50000")
    assert bars and "1354.0 req/s" in bars[-1]
    assert max(len(bar) for bar in bars) <= 80 - 3  # room for "^C"


def test_a_list_the_server_cut_short_says_so() -> None:
    """1,000 listed errors may not be all: the count says it is a first part, or of how many."""
    listed = [{"code": "invalid_json_line", "line": n} for n in range(1, 1001)]
    assert problem_count(batch("failed", errors={"data": listed[:3]})) == "3 errors"
    assert problem_count(batch("failed", errors={"data": listed})) == (
        "showing the first 1,000 errors (the server lists no more)"
    )
    counted = batch("failed", errors={"data": listed, "total": 2000})
    assert problem_count(counted) == "showing 1,000 of 2,000 errors"
    console, sink = terminal()
    console.print(batch_panel(counted))
    assert "problems: showing 1,000 of 2,000 errors" in sink.getvalue()


def test_a_completed_batch_with_failed_requests_has_its_own_exit_code() -> None:
    """Completed with failures exits 9, distinct from success and from a failed batch."""
    assert outcome("completed", 0) is ExitCode.OK
    assert outcome("completed", 3) is ExitCode.REQUESTS_FAILED == 9
    assert outcome("failed", 0) is ExitCode.BATCH_FAILED
    assert outcome("cancelled", 10) is ExitCode.BATCH_CANCELLED


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
