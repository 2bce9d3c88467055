"""The batch commands: submit, wait, status, ls, cancel, results."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Group
from rich.text import Text

from batchd.client import render
from batchd.client.api import BatchAPI, Json, every_page
from batchd.client.downloads import download_results
from batchd.client.errors import ClientError, NotFinished
from batchd.client.exits import TERMINAL, ExitCode, outcome
from batchd.client.progress import display_for
from batchd.client.session import Session, with_session
from batchd.client.watch import Follower, OnInterrupt, follow, interrupt_policy

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def _metadata(_ctx: click.Context, _param: click.Parameter, pairs: tuple[str, ...]) -> Any:
    metadata: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {pair!r}")
        metadata[key] = value
    return metadata


def follow_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--output``, ``--poll-interval`` and ``--on-interrupt``, for the commands that wait."""
    options: list[Decorator] = [
        click.option(
            "--output",
            "-o",
            type=click.Path(file_okay=False, path_type=Path),
            help="Where to put <batch_id>_output.jsonl and <batch_id>_error.jsonl [default: .].",
        ),
        click.option(
            "--poll-interval",
            type=click.FloatRange(min=0.05),
            default=1.0,
            show_default=True,
            help="Seconds between looks at the batch.",
        ),
        click.option(
            "--on-interrupt",
            type=click.Choice([p.value for p in OnInterrupt if p is not OnInterrupt.WATCH]),
            default=OnInterrupt.ASK.value,
            show_default=True,
            help="What Ctrl-C does: ask (stop watching when nobody can answer), cancel, detach.",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@click.command()
@click.argument(
    "path", metavar="FILE", type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option("--endpoint", required=True, help="e.g. /v1/chat/completions")
@click.option("--completion-window", default="24h", show_default=True)
@click.option(
    "--metadata", multiple=True, metavar="KEY=VALUE", callback=_metadata, help="Repeatable."
)
@click.option("--wait", is_flag=True, help="Follow the batch, then download its results.")
@follow_options
@with_session
def submit(
    session: Session,
    path: Path,
    endpoint: str,
    completion_window: str,
    metadata: dict[str, str],
    wait: bool,
    **follow_flags: Any,
) -> int:
    """Upload FILE (purpose=batch) and create a batch from it; print the batch id."""
    if follow_flags["output"] is not None and not wait:
        raise click.UsageError("--output needs --wait (or use `batchd results ID --output DIR`).")
    batch = _create(session.api, path, endpoint, completion_window, metadata)
    if not session.output.json:
        click.echo(batch["id"])
    if not wait:
        session.output.document(batch)
        return ExitCode.OK
    return _follow_and_fetch(session, batch, **follow_flags)


def _create(
    api: BatchAPI, path: Path, endpoint: str, window: str, metadata: dict[str, str]
) -> Json:
    file = api.upload(path)
    try:
        return api.create_batch(
            input_file_id=str(file["id"]), endpoint=endpoint, window=window, metadata=metadata
        )
    except ClientError:
        # Nothing will use the upload (its id was never shown); the create error is the news.
        with contextlib.suppress(ClientError):
            api.delete_file(str(file["id"]))
        raise


@click.command(name="wait")
@click.argument("batch_id")
@follow_options
@with_session
def wait_command(session: Session, batch_id: str, **follow_flags: Any) -> int:
    """Follow a batch until it finishes, then download its results."""
    return _follow_and_fetch(session, session.api.batch(batch_id), **follow_flags)


def _follow_and_fetch(
    session: Session, batch: Json, output: Path | None, poll_interval: float, on_interrupt: str
) -> int:
    err = session.output.err
    follower = Follower(session.api, batch, poll_interval, lambda: display_for(err))
    policy = interrupt_policy(OnInterrupt(on_interrupt), session.output.json)
    finished = follow(follower, policy, session.output.note)
    return _fetch(session, finished, output or Path())


def _fetch(session: Session, batch: Json, directory: Path) -> int:
    downloaded = download_results(session.api, batch, directory)
    session.output.result(
        {"batch": batch, "downloaded": downloaded},
        Group(render.batch_panel(batch), *_downloaded_lines(downloaded)),
    )
    _, failed, total = render.counts(batch)
    if failed and downloaded["error"]:
        session.output.note(render.failed_lines(failed, total, downloaded["error"]))
    return outcome(str(batch["status"]), failed)


def _downloaded_lines(downloaded: dict[str, str | None]) -> list[Text]:
    return [Text(f"{kind} file: {path}") for kind, path in downloaded.items() if path]


@click.command()
@click.argument("batch_id")
@click.option("--output", "-o", type=click.Path(file_okay=False, path_type=Path), default=".")
@with_session
def results(session: Session, batch_id: str, output: Path) -> int:
    """Download a finished batch's output and error files into OUTPUT.

    Exits with the batch's outcome: 0 completed, 9 completed with failed requests, 5 failed,
    6 expired, 7 cancelled; 8 while it runs.
    """
    batch = session.api.batch(batch_id)
    if batch.get("status") not in TERMINAL:
        raise NotFinished(batch_id, str(batch.get("status")))
    return _fetch(session, batch, output)


@click.command()
@click.argument("batch_id")
@with_session
def status(session: Session, batch_id: str) -> int:
    """Show a batch."""
    batch = session.api.batch(batch_id)
    session.output.result(batch, render.batch_panel(batch))
    return ExitCode.OK


@click.command()
@click.argument("batch_id")
@with_session
def cancel(session: Session, batch_id: str) -> int:
    """Cancel a batch: finished results are kept, the rest become batch_cancelled lines."""
    batch = session.api.cancel(batch_id)
    session.output.result(batch, Text.assemble(f"{batch_id}: ", render.status(batch)))
    return ExitCode.OK


@click.command(name="ls")
@click.option("--limit", type=click.IntRange(1, 100), default=20, show_default=True)
@click.option("--after", metavar="BATCH_ID", help="Start after this batch (the next page).")
@click.option("--all", "every", is_flag=True, help="Every page, not only the first.")
@with_session
def ls(session: Session, limit: int, after: str | None, every: bool) -> int:
    """List batches, newest first."""
    fetch = functools.partial(session.api.batches, limit=limit)
    page = every_page(fetch, after) if every else fetch(after=after)
    session.output.result(page, render.batch_table(page["data"]))
    hint = render.more_hint("batchd ls", page)
    if hint is not None:
        session.output.show(hint)
    return ExitCode.OK


COMMANDS = [submit, wait_command, status, ls, cancel, results]
