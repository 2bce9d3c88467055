"""Logging set-up for the server and worker processes: one handler on stderr, JSON lines for
machines or plain text for people.

Events are logged with the stdlib: the message is the event's name, and its fields go in
``extra={...}``; both formatters print every such field.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

import orjson

LogFormat = Literal["auto", "json", "text"]

_RECORD_FIELDS = frozenset(
    logging.LogRecord("", 0, "", 0, None, None, None).__dict__.keys()
    | {"message", "asctime", "color_message"}
)
"""Attributes every LogRecord has (and uvicorn's coloured copy of the message): anything else on
a record came from ``extra``."""


def fields_of(record: logging.LogRecord) -> dict[str, Any]:
    """The ``extra`` fields a record carries."""
    return {k: v for k, v in record.__dict__.items() if k not in _RECORD_FIELDS}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, ``event``, the extra fields, and
    ``exception`` (the formatted traceback) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        entry.update(fields_of(record))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(entry, default=str).decode()


class TextFormatter(logging.Formatter):
    """``time LEVEL logger event key=value…``, then the traceback on the lines below."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        pairs = " ".join(f"{k}={_text(v)}" for k, v in fields_of(record).items())
        return f"{line} {pairs}" if pairs else line


def _text(value: object) -> str:
    text = value if isinstance(value, str) else orjson.dumps(value, default=str).decode()
    return text if text and " " not in text and '"' not in text else orjson.dumps(text).decode()


def formatter_for(log_format: LogFormat, stream: TextIO) -> logging.Formatter:
    """JSON unless asked for text or ``auto`` on a terminal."""
    if log_format == "auto":
        log_format = "text" if stream.isatty() else "json"
    return JsonFormatter() if log_format == "json" else TextFormatter()


def configure(level: str, log_format: LogFormat = "auto") -> None:
    """Send every log record at ``level`` and above to stderr, formatted for its reader."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter_for(log_format, sys.stderr))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
