"""How API objects look in a terminal: rich tables and panels built from the JSON objects."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from batchd.validation import MAX_REPORTED_ERRORS

Json = dict[str, Any]

STATUS_STYLE = {
    "completed": "green",
    "failed": "red",
    "expired": "yellow",
    "cancelled": "yellow",
    "cancelling": "yellow",
    "in_progress": "cyan",
    "finalizing": "cyan",
    "validating": "blue",
}
BATCH_TIMES = (
    "created_at",
    "in_progress_at",
    "finalizing_at",
    "completed_at",
    "failed_at",
    "expired_at",
    "cancelling_at",
    "cancelled_at",
    "expires_at",
)


def when(timestamp: object) -> str:
    if not isinstance(timestamp, int | float):
        return "-"
    return datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S")


def status(batch: Json) -> Text:
    value = str(batch.get("status"))
    return Text(value, style=STATUS_STYLE.get(value, ""))


def counts(batch: Json) -> tuple[int, int, int]:
    """(completed, failed, total)."""
    found = batch.get("request_counts") or {}
    return (
        int(found.get("completed") or 0),
        int(found.get("failed") or 0),
        int(found.get("total") or 0),
    )


def failed_lines(failed: int, total: int, path: str) -> Text:
    """The line pointing at the error file, when requests failed."""
    return Text(f"{failed:,} of {total:,} requests failed: see {path}", style="bold red")


def batch_panel(batch: Json) -> RenderableType:
    grid = _facts(_batch_facts(batch))
    errors = _listed_errors(batch)
    body: RenderableType = grid
    if errors:
        body = Group(grid, line_errors(errors, title=f"problems: {problem_count(batch)}"))
    return Panel(body, title=Text(str(batch.get("id"))), title_align="left", expand=False)


def _batch_facts(batch: Json) -> list[tuple[str, Text | str]]:
    completed, failed, total = counts(batch)
    facts: list[tuple[str, Text | str]] = [
        ("status", status(batch)),
        ("endpoint", str(batch.get("endpoint"))),
        ("model", str(batch.get("model") or "-")),
        ("requests", f"{completed} completed, {failed} failed, {total} total"),
        ("input file", str(batch.get("input_file_id"))),
        ("output file", str(batch.get("output_file_id") or "-")),
        ("error file", str(batch.get("error_file_id") or "-")),
        ("window", str(batch.get("completion_window"))),
    ]
    facts += [(name.removesuffix("_at"), when(batch[name])) for name in _times_set(batch)]
    facts += _usage_facts(batch.get("usage"))
    facts += [(f"metadata.{k}", str(v)) for k, v in (batch.get("metadata") or {}).items()]
    return facts


def _times_set(batch: Json) -> list[str]:
    return [name for name in BATCH_TIMES if batch.get(name) is not None]


def _usage_facts(usage: Json | None) -> list[tuple[str, Text | str]]:
    if not usage or not usage.get("total_tokens"):
        return []
    tokens = f"{usage.get('input_tokens')} in, {usage.get('output_tokens')} out"
    return [("tokens", tokens)]


def _facts(rows: Iterable[tuple[str, Text | str]]) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    for name, value in rows:
        grid.add_row(name, value if isinstance(value, Text) else Text(value))
    return grid


def _listed_errors(batch: Json) -> list[Json]:
    return list((batch.get("errors") or {}).get("data") or [])


def problem_count(batch: Json) -> str:
    """``2 errors``; for a list the server cut short, how many it shows of how many, or that
    there may be more (the server lists at most ``MAX_REPORTED_ERRORS``)."""
    listed = len(_listed_errors(batch))
    total = (batch.get("errors") or {}).get("total")
    if isinstance(total, int) and total > listed:
        return f"showing {listed:,} of {total:,} errors"
    if listed >= MAX_REPORTED_ERRORS:
        return f"showing the first {listed:,} errors (the server lists no more)"
    return f"{listed:,} error" + ("" if listed == 1 else "s")


def line_errors(errors: list[Json], title: str = "problems") -> Table:
    """Validation errors (``errors.data``), one row per problem, with its line number."""
    table = Table(title=title, title_justify="left", expand=False)
    table.add_column("line", justify="right")
    table.add_column("code", style="red")
    table.add_column("param")
    table.add_column("message")
    for error in errors:
        line = error.get("line")
        table.add_row(
            "-" if line is None else str(line),
            Text(str(error.get("code"))),
            Text(str(error.get("param") or "")),
            Text(str(error.get("message"))),
        )
    return table


def batch_table(batches: list[Json]) -> Table:
    table = Table(expand=False)
    table.add_column("id", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("endpoint")
    table.add_column("done", justify="right", no_wrap=True)
    table.add_column("failed", justify="right")
    table.add_column("created", no_wrap=True)
    for batch in batches:
        completed, failed, total = counts(batch)
        table.add_row(
            Text(str(batch.get("id"))),
            status(batch),
            Text(str(batch.get("endpoint"))),
            f"{completed + failed}/{total}",
            str(failed),
            when(batch.get("created_at")),
        )
    return table


def file_table(files: list[Json]) -> Table:
    table = Table(expand=False)
    table.add_column("id", no_wrap=True)
    table.add_column("filename")
    table.add_column("purpose", no_wrap=True)
    table.add_column("bytes", justify="right")
    table.add_column("created", no_wrap=True)
    for file in files:
        table.add_row(
            Text(str(file.get("id"))),
            Text(str(file.get("filename"))),
            str(file.get("purpose")),
            str(file.get("bytes")),
            when(file.get("created_at")),
        )
    return table


def file_panel(file: Json) -> RenderableType:
    facts: list[tuple[str, Text | str]] = [
        ("filename", str(file.get("filename"))),
        ("purpose", str(file.get("purpose"))),
        ("bytes", str(file.get("bytes"))),
        ("created", when(file.get("created_at"))),
        ("expires", when(file.get("expires_at"))),
    ]
    return Panel(_facts(facts), title=Text(str(file.get("id"))), title_align="left", expand=False)


def more_hint(command: str, page: Json) -> Text | None:
    """How to ask for the next page, when there is one."""
    if not page.get("has_more"):
        return None
    return Text(f"more: {command} --after {page.get('last_id')}  (or --all)", style="dim")
