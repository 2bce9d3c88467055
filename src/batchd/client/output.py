"""Where a command's output goes: readable text on stdout, or one JSON document with ``--json``;
notes, progress and errors on stderr, so stdout stays parseable."""

from __future__ import annotations

import json
import sys
from typing import Any

import click
from rich.console import Console, RenderableType
from rich.text import Text

from batchd.client.errors import ClientError, ServerError

PIPE_WIDTH = 160
"""Width of text written to a pipe or file: wide enough that ids are never cut."""


def console(*, stderr: bool = False) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else PIPE_WIDTH
    return Console(file=stream, width=width, highlight=False, soft_wrap=width is not None)


class Output:
    def __init__(self, as_json: bool) -> None:
        self.json = as_json
        self.out = console()
        self.err = console(stderr=True)

    def show(self, renderable: RenderableType) -> None:
        """Readable output; nothing with ``--json``."""
        if not self.json:
            self.out.print(renderable)

    def document(self, document: Any) -> None:
        """The command's one JSON document (``--json`` only)."""
        if self.json:
            click.echo(json.dumps(document, indent=2))

    def result(self, document: Any, readable: RenderableType) -> None:
        """The command's result: ``document`` with ``--json``, ``readable`` otherwise."""
        self.document(document)
        self.show(readable)

    def note(self, text: str | Text) -> None:
        self.err.print(text)

    def error(self, error: ClientError) -> None:
        if self.json:
            click.echo(json.dumps(_error_document(error), indent=2))
            return
        message = Text(f"{error.label}: ", style="bold red").append(error.message, style="default")
        self.err.print(message)
        if isinstance(error, ServerError):
            self.err.print(Text("  " + _server_error_facts(error), style="dim"))


def _error_document(error: ClientError) -> dict[str, Any]:
    document: dict[str, Any] = {"error": error.details()}
    if isinstance(error, ServerError):
        document["http_status"] = error.status_code
    return document


def _server_error_facts(error: ServerError) -> str:
    facts = [f"HTTP {error.status_code}"]
    facts += [f"{name} {value}" for name, value in _named_facts(error) if value]
    return " · ".join(facts)


def _named_facts(error: ServerError) -> list[tuple[str, str | None]]:
    return [
        ("type", error.type),
        ("code", error.code),
        ("param", error.param),
        ("request", error.request_id),
    ]
