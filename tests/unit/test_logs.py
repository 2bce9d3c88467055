"""Log formatting: JSON lines for machines, text for people, extra fields and tracebacks in both."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from batchd import logs
from batchd.batches import log_status
from batchd.logs import JsonFormatter, TextFormatter, configure, formatter_for
from batchd.models import Batch, BatchStatus, LineError, Usage


def record(
    message: str = "batch_completed", exc: bool = False, **extra: object
) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("boom")
        except ValueError:
            exc_info = sys.exc_info()
    made = logging.LogRecord("batchd.worker", logging.INFO, __file__, 1, message, None, exc_info)
    made.__dict__.update(extra)
    return made


def test_json_line_has_the_event_and_every_extra_field() -> None:
    """One JSON object: ts, level, logger, event, then the extra fields as given."""
    line = JsonFormatter().format(record(batch_id="batch_1", project="p", total=3))
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["event"] == "batch_completed"
    assert (entry["level"], entry["logger"]) == ("info", "batchd.worker")
    assert (entry["batch_id"], entry["project"], entry["total"]) == ("batch_1", "p", 3)
    assert entry["ts"].endswith("+00:00")


def test_json_line_carries_the_traceback_and_odd_values_as_text() -> None:
    """An exception becomes an ``exception`` field; values JSON cannot hold are written as text."""
    entry = json.loads(JsonFormatter().format(record(exc=True, path=Path("/x"))))
    assert "ValueError: boom" in entry["exception"] and "Traceback" in entry["exception"]
    assert entry["path"] == "/x"


def test_uvicorn_coloured_copy_of_the_message_is_left_out() -> None:
    entry = json.loads(JsonFormatter().format(record("Started", color_message="\x1b[36mStarted")))
    assert "color_message" not in entry


def test_json_message_arguments_are_applied() -> None:
    made = logging.LogRecord("batchd", logging.WARNING, __file__, 1, "took %d s", (3,), None)
    assert json.loads(JsonFormatter().format(made))["event"] == "took 3 s"


def test_text_line_has_key_value_fields_and_the_traceback_below() -> None:
    """``… INFO logger event key=value``; a value with spaces is quoted; the traceback follows."""
    text = TextFormatter().format(record(exc=True, batch_id="batch_1", note="two words", n=2))
    first, *rest = text.splitlines()
    assert " INFO    batchd.worker batch_completed " in first
    assert first.endswith('batch_id=batch_1 note="two words" n=2')
    assert rest and rest[-1] == "ValueError: boom"


def test_text_line_without_fields_is_just_the_message() -> None:
    assert TextFormatter().format(record("worker_started")).endswith("batchd.worker worker_started")


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_auto_is_text_on_a_terminal_and_json_elsewhere() -> None:
    assert isinstance(formatter_for("auto", _Terminal()), TextFormatter)
    assert isinstance(formatter_for("auto", io.StringIO()), JsonFormatter)
    assert isinstance(formatter_for("json", _Terminal()), JsonFormatter)
    assert isinstance(formatter_for("text", io.StringIO()), TextFormatter)


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    """The root logger, restored after the test."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield root
    root.handlers[:] = handlers
    root.setLevel(level)


def test_configure_sends_records_at_the_level_to_stderr(
    root_logger: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    """configure(level, format) replaces the root handlers with one on stderr."""
    configure("warning", "json")
    logging.getLogger("batchd.test").info("hidden")
    logging.getLogger("batchd.test").warning("shown", extra={"batch_id": "b"})
    lines = capsys.readouterr().err.splitlines()
    assert [json.loads(line)["event"] for line in lines] == ["shown"]
    assert root_logger.level == logging.WARNING and len(root_logger.handlers) == 1


def test_configure_defaults_to_auto(root_logger: logging.Logger) -> None:
    """The format argument is optional (auto), so older callers keep working."""
    configure("info")
    handler = root_logger.handlers[0]
    assert isinstance(handler.formatter, TextFormatter if sys.stderr.isatty() else JsonFormatter)
    assert logs.configure.__defaults__ == ("auto",)


def _batch(status: BatchStatus, **fields: object) -> Batch:
    values: dict[str, object] = {
        "id": "batch_1",
        "project": "team-a",
        "endpoint": "/v1/chat/completions",
        "input_file_id": "file-1",
        "completion_window": "24h",
        "status": status,
        "created_at": 0,
        "expires_at": 1,
    }
    return Batch(**{**values, **fields})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("status", "event", "fields"),
    [
        (BatchStatus.VALIDATING, "batch_created", {"input_file_id": "file-1"}),
        (BatchStatus.IN_PROGRESS, "batch_in_progress", {"total": 4, "model": "m"}),
        (
            BatchStatus.COMPLETED,
            "batch_completed",
            {"completed": 3, "failed": 1, "input_tokens": 7},
        ),
        (BatchStatus.FAILED, "batch_failed", {"errors": 1}),
    ],
)
def test_batch_events_are_named_by_status_with_id_project_and_counts(
    caplog: pytest.LogCaptureFixture, status: BatchStatus, event: str, fields: dict[str, object]
) -> None:
    """log_status logs ``batch_<status>`` (``batch_created`` for a new batch) once, at info."""
    batch = _batch(
        status,
        model="m",
        total=4,
        completed=3,
        failed=1,
        usage=Usage(input_tokens=7, output_tokens=2),
        errors=[LineError("invalid_json", "bad", line=2)] if status is BatchStatus.FAILED else None,
    )
    with caplog.at_level(logging.INFO, logger="batchd"):
        log_status(batch)
    [logged] = caplog.records
    assert logged.levelno == logging.INFO and logged.getMessage() == event
    extra = logs.fields_of(logged)
    assert extra["batch_id"] == "batch_1" and extra["project"] == "team-a"
    assert fields.items() <= extra.items()
