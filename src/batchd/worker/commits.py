"""Group commit: finished requests are committed together every few milliseconds, so that
durability costs one transaction per group rather than one per request."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from batchd.errors import StoreError
from batchd.models import RequestResult
from batchd.store import SqlStore

log = logging.getLogger("batchd.worker")

MAX_GROUP = 1024
LINGER = 0.005
"""A group waits this long for company: fewer, larger commits cost less per result."""
RETRY_DELAY = 1.0


class GroupCommitter:
    def __init__(self, store: SqlStore, owner: str, on_commit: Callable[[], None]) -> None:
        self._store = store
        self._owner = owner
        self._on_commit = on_commit
        self._queue: asyncio.Queue[RequestResult] = asyncio.Queue(maxsize=MAX_GROUP * 8)

    async def add(self, result: RequestResult) -> None:
        await self._queue.put(result)

    async def flush(self) -> None:
        """Return once every result added so far is committed."""
        await self._queue.join()

    async def run(self) -> None:
        while True:
            group = [await self._queue.get()]
            if self._queue.qsize() < MAX_GROUP:
                await asyncio.sleep(LINGER)
            while len(group) < MAX_GROUP and not self._queue.empty():
                group.append(self._queue.get_nowait())
            await self._commit(group)
            for _ in group:
                self._queue.task_done()
            self._on_commit()

    async def _commit(self, group: list[RequestResult]) -> None:
        while True:
            try:
                await self._store.record_results(self._owner, group)
                return
            except StoreError:
                # Results are kept and retried: losing them would send the requests again.
                log.exception("commit_failed", extra={"results": len(group)})
                await asyncio.sleep(RETRY_DELAY)
