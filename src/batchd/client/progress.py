"""A batch's progress while it runs: a live bar on a terminal, a line per change elsewhere."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Protocol, Self

from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TextColumn,
)
from rich.text import Text

from batchd.client.api import Json
from batchd.client.render import counts, problem_count

RATE_WINDOW = 10.0
"""Seconds of recent polls the rate is measured over."""

ECHO_ROOM = 3
"""Columns the bar leaves free at the right: the terminal echoes Ctrl-C as ``^C`` after it, and
a bar filling the whole width would wrap there, leaving a copy of itself on the screen."""


class Display(Protocol):
    def __enter__(self) -> Self: ...
    def __exit__(self, *exc_info: object) -> None: ...
    def update(self, batch: Json, trouble: str | None = None) -> None:
        """Show the batch, and ``trouble``: what holds it up, if the server knows."""


def display_for(console: Console) -> Display:
    return LiveBar(console) if console.is_terminal else ChangeLines(console)


class Rate:
    """Requests finished per second while the batch is ``in_progress``, from the counts seen over
    the last ``RATE_WINDOW`` seconds. None when nothing finished in that interval, and in any other
    status: a cancel or an expiry marks every unfinished line failed at once, which is no rate."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.samples: deque[tuple[float, int]] = deque()

    def observe(self, batch: Json) -> float | None:
        if batch.get("status") != "in_progress":
            self.samples.clear()
            return None
        completed, failed, _ = counts(batch)
        now, done = self.clock(), completed + failed
        self.samples.append((now, done))
        while len(self.samples) > 2 and now - self.samples[1][0] >= RATE_WINDOW:
            self.samples.popleft()
        since, done_then = self.samples[0]
        if now <= since or done <= done_then:
            return None
        return (done - done_then) / (now - since)


class RateColumn(ProgressColumn):
    """Requests finished per second (``Rate``), or ``-`` when there is none to show."""

    def render(self, task: Task) -> Text:
        rate = task.fields.get("rate")
        return Text("- req/s" if rate is None else f"{rate:.1f} req/s", style="dim")


class EtaColumn(ProgressColumn):
    """The requests left at the current rate; ``-:--:--`` without one."""

    def render(self, task: Task) -> Text:
        rate, left = task.fields.get("rate"), task.remaining
        if rate is None or left is None:
            return Text("ETA -:--:--", style="cyan")
        return Text(f"ETA {timedelta(seconds=round(left / rate))}", style="cyan")


class _ShortOfTheEdge:
    """A renderable drawn ``ECHO_ROOM`` columns narrower than it could be."""

    def __init__(self, renderable: RenderableType) -> None:
        self.renderable = renderable

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield from console.render(
            self.renderable, options.update_width(options.max_width - ECHO_ROOM)
        )


class _ProgressWithNote(Progress):
    """The bar, short of the right edge, and a line of note under it when there is one."""

    note: str | None = None

    def get_renderables(self) -> Iterable[RenderableType]:
        yield _ShortOfTheEdge(self.make_tasks_table(self.tasks))
        if self.note:
            yield Text(self.note, style="yellow")


class LiveBar:
    """status ━━━━━━━━━━━━ done/total · N failed · rate · ETA, and what holds it up below."""

    def __init__(self, console: Console, clock: Callable[[], float] = time.monotonic) -> None:
        self.progress = _ProgressWithNote(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("[red]{task.fields[failed]} failed"),
            RateColumn(),
            EtaColumn(),
            console=console,
        )
        self.task = self.progress.add_task("", total=None, failed=0, rate=None)
        self.rate = Rate(clock)

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
            rate=self.rate.observe(batch),
        )


class ChangeLines:
    """``batch_… in_progress: 40/100 done, 2 failed``, printed when something changed."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.last: str | None = None
        self.trouble: str | None = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    def update(self, batch: Json, trouble: str | None = None) -> None:
        line = change_line(batch)
        if line != self.last:
            self.last = line
            self.console.print(Text(line))
        if trouble != self.trouble:
            self.trouble = trouble
            if trouble:
                self.console.print(Text(f"{batch.get('id')} {trouble}"))


def change_line(batch: Json) -> str:
    """What is known of the batch in a line: no counts before there are any to show."""
    where = f"{batch.get('id')} {batch.get('status')}"
    completed, failed, total = counts(batch)
    if batch.get("status") == "failed" and not total:
        return f"{where}: validation failed, {problem_count(batch)}"
    if not total:
        return where
    return f"{where}: {completed + failed:,}/{total:,} done, {failed:,} failed"
