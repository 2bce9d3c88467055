"""Group commit: finished requests are committed together every few milliseconds, so that
durability costs one transaction per group rather than one per request. Each group's output and
error lines are first written to the worker's result parts (``spool.py``), so the transaction
carries only where they went.

Handing a result over is a list append, not a queue operation: it happens once per request, on
the hot path, and a queue's put, get and task_done cost more than the rest of the hand-over."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from batchd.errors import StoreError
from batchd.models import RequestResult
from batchd.store import SqlStore
from batchd.worker.spool import ResultSpool

log = logging.getLogger("batchd.worker")

MAX_GROUP = 1024
MAX_WAITING = MAX_GROUP * 8
"""Past this many results waiting for a commit (the store is failing), senders wait for room."""
LINGER = 0.005
"""A group waits this long for company: fewer, larger commits cost less per result."""
RETRY_DELAY = 1.0


class GroupCommitter:
    def __init__(
        self, store: SqlStore, spool: ResultSpool, owner: str, on_commit: Callable[[], None]
    ) -> None:
        self._store = store
        self._spool = spool
        self._owner = owner
        self._on_commit = on_commit
        self._waiting: list[RequestResult] = []
        self._added = 0
        self._committed = 0
        self._arrived = asyncio.Event()
        self._progress = asyncio.Event()  # set after each commit

    def add(self, result: RequestResult) -> None:
        self._waiting.append(result)
        self._added += 1
        self._arrived.set()

    @property
    def backlogged(self) -> bool:
        return len(self._waiting) >= MAX_WAITING

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
            if not self._waiting:
                self._arrived.clear()
                await self._arrived.wait()
            if len(self._waiting) < MAX_GROUP:
                await asyncio.sleep(LINGER)
            group, self._waiting = self._waiting[:MAX_GROUP], self._waiting[MAX_GROUP:]
            await self._commit(group)
            self._committed += len(group)
            self._progress.set()
            self._on_commit()

    async def _commit(self, group: list[RequestResult]) -> None:
        placed = False
        while True:
            try:
                if not placed:
                    await self._spool.place(group)
                    placed = True
                await self._store.record_results(self._owner, group)
                return
            except (StoreError, OSError):
                # Results are kept and retried: losing them would send the requests again.
                log.exception("commit_failed", extra={"results": len(group)})
                await asyncio.sleep(RETRY_DELAY)
