"""The file commands: ``batchd files ls | get | rm``."""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import click
from rich.text import Text

from batchd.client import render
from batchd.client.api import every_page
from batchd.client.downloads import save
from batchd.client.exits import ExitCode
from batchd.client.session import Session, with_session


@click.group()
def files() -> None:
    """Files: list, show or download, delete."""


@files.command(name="ls")
@click.option("--purpose", help="Only files of this purpose, e.g. batch or batch_output.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True)
@click.option("--after", metavar="FILE_ID", help="Start after this file (the next page).")
@click.option("--order", type=click.Choice(["desc", "asc"]), default="desc", show_default=True)
@click.option("--all", "every", is_flag=True, help="Every page, not only the first.")
@with_session
def ls(
    session: Session,
    purpose: str | None,
    limit: int,
    after: str | None,
    order: str,
    every: bool,
) -> int:
    """List files, newest first."""
    fetch = functools.partial(session.api.files, purpose=purpose, limit=limit, order=order)
    page = every_page(fetch, after) if every else fetch(after=after)
    session.output.result(page, render.file_table(page["data"]))
    hint = render.more_hint("batchd files ls", page)
    if hint is not None:
        session.output.show(hint)
    return ExitCode.OK


@files.command()
@click.argument("file_id")
@click.option("--content", is_flag=True, help="Write the file's bytes to stdout.")
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the file's bytes to this path (implies --content); metadata still printed.",
)
@with_session
def get(session: Session, file_id: str, content: bool, output: Path | None) -> int:
    """Show a file's metadata, or download its content (streamed, never held in memory)."""
    if output is not None:
        file = session.api.file(file_id)
        save(session.api, file_id, output)
        session.output.result(file, render.file_panel(file))
        session.output.note(Text(f"saved to {output}"))
    elif content:
        if session.output.json:
            raise click.UsageError("--content writes raw bytes to stdout; drop --json or use -o.")
        session.api.download(file_id, sys.stdout.buffer)
    else:
        file = session.api.file(file_id)
        session.output.result(file, render.file_panel(file))
    return ExitCode.OK


@files.command()
@click.argument("file_id")
@with_session
def rm(session: Session, file_id: str) -> int:
    """Delete a file."""
    deleted = session.api.delete_file(file_id)
    session.output.result(deleted, Text(f"deleted {deleted.get('id', file_id)}"))
    return ExitCode.OK
