"""A batch's progress while it runs: a live bar on a terminal, a line per change elsewhere."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, Self

from rich.console import Console, RenderableType
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from batchd.client.api import Json
from batchd.client.render import counts


class Display(Protocol):
    def __enter__(self) -> Self: ...
    def __exit__(self, *exc_info: object) -> None: ...
    def update(self, batch: Json, trouble: str | None = None) -> None:
        """Show the batch, and ``trouble``: what holds it up, if the server knows."""


def display_for(console: Console) -> Display:
    return LiveBar(console) if console.is_terminal else ChangeLines(console)


class RateColumn(ProgressColumn):
    """Requests finished per second, over rich's recent samples."""

    def render(self, task: Task) -> Text:
        if task.speed is None:
            return Text("- req/s", style="dim")
        return Text(f"{task.speed:.1f} req/s", style="dim")


class _ProgressWithNote(Progress):
    """The bar, and a line of note under it when there is one."""

    note: str | None = None

    def get_renderables(self) -> Iterable[RenderableType]:
        yield from super().get_renderables()
        if self.note:
            yield Text(self.note, style="yellow")


class LiveBar:
    """status ━━━━━━━━━━━━ done/total · N failed · rate · ETA, and what holds it up below."""

    def __init__(self, console: Console) -> None:
        self.progress = _ProgressWithNote(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("[red]{task.fields[failed]} failed"),
            RateColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
        )
        self.task = self.progress.add_task("", total=None, failed=0)

    def __enter__(self) -> Self:
        self.progress.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.progress.stop()

    def update(self, batch: Json, trouble: str | None = None) -> None:
        completed, failed, total = counts(batch)
        self.progress.note = trouble
        self.progress.update(
            self.task,
            description=str(batch.get("status")),
            total=total or None,
            completed=completed + failed,
            failed=failed,
        )


class ChangeLines:
    """``batch_… in_progress: 40/100 done, 2 failed``, printed when something changed."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.last: tuple[object, ...] | None = None
        self.trouble: str | None = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    def update(self, batch: Json, trouble: str | None = None) -> None:
        completed, failed, total = counts(batch)
        now = (batch.get("status"), completed, failed, total)
        if now != self.last:
            self.last = now
            self.console.print(
                Text(
                    f"{batch.get('id')} {batch.get('status')}: "
                    f"{completed + failed}/{total} done, {failed} failed"
                )
            )
        if trouble != self.trouble:
            self.trouble = trouble
            if trouble:
                self.console.print(Text(f"{batch.get('id')} {trouble}"))
