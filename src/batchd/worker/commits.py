"""Group commit: finished requests are committed together every few milliseconds, so that
durability costs one transaction per group rather than one per request. Each group's output and
error lines are first written to the worker's result parts (``spool.py``), so the transaction
carries only where they went.

Handing a result over is a list append, not a queue operation: it happens once per request, on
the hot path, and a queue's put, get and task_done cost more than the rest of the hand-over.

When a commit fails the results are kept, never dropped (dropping them would send their requests
again), and the committer is ``stalled`` until one succeeds: the feeders claim nothing and the
senders send nothing meanwhile (a full disk, the store away). A group that keeps failing with an
error that trying again only repeats (a value the store cannot hold) is committed in halves, down
to the results that fail alone; each of those fails its own line, and its neighbours go on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import msgspec

from batchd.errors import StoreError
from batchd.models import RequestResult, RequestState
from batchd.result_lines import unanswered_line
from batchd.store import SqlStore
from batchd.worker.spool import ResultSpool

log = logging.getLogger("batchd.worker")

MAX_GROUP = 1024
MAX_WAITING = MAX_GROUP * 8
"""Past this many results waiting for a commit (the store is failing), senders wait for room."""
LINGER = 0.005
"""A group waits this long for company: fewer, larger commits cost less per result."""
RETRY_DELAY = 0.25
MAX_RETRY_DELAY = 2.0
"""Tries again at most this long after a failure: once a full disk has room, work resumes within
seconds."""
ISOLATE_AFTER = 3
"""Failures in a row, with an error that trying again only repeats, before the group is split."""
ISOLATE_AGAIN_EVERY = 30
STILL_FAILING_EVERY = 30.0
"""Seconds between the warnings while commits keep failing."""

UNRECORDABLE = (
    "The request was answered, but batchd could not record its result (logged as "
    "result_unrecordable). Send it again."
)


class GroupCommitter:
    def __init__(
        self, store: SqlStore, spool: ResultSpool, owner: str, on_commit: Callable[[], None]
    ) -> None:
        self._store = store
        self._spool = spool
        self._owner = owner
        self._on_commit = on_commit
        self._waiting: list[RequestResult] = []
        self._group: list[RequestResult] = []  # being committed; kept here across a restart
        self._placed = False  # whether the group's lines are in their parts
        self._added = 0
        self._committed = 0
        self._arrived = asyncio.Event()
        self._progress = asyncio.Event()  # set after each commit
        self._writable = asyncio.Event()
        self._writable.set()
        self._failing_since: float | None = None
        self._warned_at = 0.0

    def add(self, result: RequestResult) -> None:
        self._waiting.append(result)
        self._added += 1
        self._arrived.set()

    @property
    def backlogged(self) -> bool:
        return len(self._waiting) >= MAX_WAITING

    @property
    def stalled(self) -> bool:
        """Whether commits are failing: claim and send nothing more until one succeeds."""
        return not self._writable.is_set()

    async def resumed(self) -> None:
        """Return once commits succeed again."""
        await self._writable.wait()

    async def room(self) -> None:
        """Return once fewer than ``MAX_WAITING`` results wait for a commit."""
        while self.backlogged:
            await self._next_commit()

    async def flush(self) -> None:
        """Return once every result added so far is committed."""
        target = self._added
        while self._committed < target:
            await self._next_commit()

    async def _next_commit(self) -> None:
        self._progress.clear()
        await self._progress.wait()

    async def run(self) -> None:
        while True:
            if not self._group:
                await self._gather()
            await self._commit(self._group)
            self._committed += len(self._group)
            self._group, self._placed = [], False
            self._progress.set()
            self._on_commit()

    async def _gather(self) -> None:
        if not self._waiting:
            self._arrived.clear()
            await self._arrived.wait()
        if len(self._waiting) < MAX_GROUP:
            await asyncio.sleep(LINGER)
        self._group, self._waiting = self._waiting[:MAX_GROUP], self._waiting[MAX_GROUP:]

    async def _commit(self, group: list[RequestResult]) -> None:
        failures = 0
        while True:
            try:
                if not self._placed:
                    await self._spool.place(group)
                    self._placed = True
                await self._store.record_results(self._owner, group, again=failures > 0)
                break
            except Exception as exc:
                failures += 1
                self._failed(exc, len(group))
                if self._placed and not _transient(exc) and _isolating(failures):
                    refused = await self._isolate(group)
                    if len(refused) < len(group):  # the store took the rest: these are bad
                        for result in refused:
                            await self._fail_alone(result)
                        break
                    # It took none: it refuses everything for now, not these results.
                await asyncio.sleep(_delay(failures))
        self._succeeded()

    async def _isolate(self, results: list[RequestResult]) -> list[RequestResult]:
        """Commit ``results`` (in their parts already) in halves, down to those the store
        refuses alone; those refused."""
        failures = 0
        while True:
            try:
                await self._store.record_results(self._owner, results, again=True)
                return []
            except Exception as exc:
                failures += 1
                if not _transient(exc):
                    break
                self._failed(exc, len(results))  # the store went away meanwhile: wait for it
                await asyncio.sleep(_delay(failures))
        if len(results) == 1:
            return results
        middle = len(results) // 2
        return [*await self._isolate(results[:middle]), *await self._isolate(results[middle:])]

    async def _fail_alone(self, result: RequestResult) -> None:
        """A result the store refuses while it takes others: its line fails as ``server_error``
        (a retry to record is given back instead: it has no line to show)."""
        log.error("result_unrecordable", extra={"batch_id": result.batch_id, "line": result.line})
        custom_id = _custom_id(result)
        if custom_id is None:
            instead = RequestResult(
                result.batch_id,
                result.line,
                RequestState.PENDING,
                span=result.span,
                attempts=result.attempts,
            )
        else:
            line = unanswered_line(custom_id, "server_error", UNRECORDABLE)
            instead = RequestResult(
                result.batch_id, result.line, RequestState.FAILED, line, span=result.span
            )
        try:
            await self._store.record_results(self._owner, [instead], again=True)
        except Exception:  # it took the others: nothing is left to try for this line
            log.exception("result_unrecordable", extra={"batch_id": result.batch_id})

    def _failed(self, error: Exception, results: int) -> None:
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = self._warned_at = now
            self._writable.clear()
            log.error("commit_failed", exc_info=error, extra={"results": results})
        elif now - self._warned_at >= STILL_FAILING_EVERY:
            self._warned_at = now
            log.error(
                "commit_still_failing",
                extra={
                    "results": results,
                    "seconds": round(now - self._failing_since),
                    "error": str(error),
                },
            )

    def _succeeded(self) -> None:
        if self._failing_since is not None:
            seconds = time.monotonic() - self._failing_since
            log.warning("commit_resumed", extra={"seconds": round(seconds, 1)})
            self._failing_since = None
            self._writable.set()


def _transient(error: Exception) -> bool:
    """Whether trying the same commit again may work: an I/O error (a full disk), or the store
    away, locked or full."""
    return isinstance(error, OSError) or (isinstance(error, StoreError) and error.transient)


def _isolating(failures: int) -> bool:
    """Whether to look for the results that fail alone after this many failures in a row: at
    the third, then every thirtieth (an error that hits every commit makes isolation useless,
    and it costs a commit per result)."""
    return failures == ISOLATE_AFTER or failures % ISOLATE_AGAIN_EVERY == 0


def _delay(failures: int) -> float:
    return float(min(MAX_RETRY_DELAY, RETRY_DELAY * 2 ** (failures - 1)))


class _Line(msgspec.Struct):
    custom_id: str


def _custom_id(result: RequestResult) -> str | None:
    """The custom_id of a final result, read back from its line (None for a retry: no line)."""
    if result.state is RequestState.PENDING:
        return None
    return msgspec.json.decode(result.output_line, type=_Line).custom_id
