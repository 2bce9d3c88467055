"""Feeding one upstream's senders: learn which batches it runs, claim their lines ahead of need
(each under a lease), read the lines' bytes, and queue them, the batches taking turns.

A line claimed is always accounted for: queued, handed to the committer as a result (a line that
cannot be read), or given back; never dropped while this worker renews its lease.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from itertools import chain, zip_longest
from operator import attrgetter

import msgspec

from batchd.blobstore import BlobStore
from batchd.clock import Clock
from batchd.errors import BlobNotFound, StoreError
from batchd.metrics import UpstreamMetrics
from batchd.models import Batch, ClaimedRequest, RequestResult
from batchd.store import SqlStore
from batchd.upstreams import Upstream, UpstreamRouter
from batchd.worker.commits import GroupCommitter
from batchd.worker.jobs import Job, ReadyJobs
from batchd.worker.outcomes import Outcomes

log = logging.getLogger("batchd.worker")

SPARSE_READ_FACTOR = 4
"""Read claimed lines as one span unless the span is this many times the bytes needed."""
CLAIM_SLOTS = 8
"""Claim this many slots' worth of lines at a time, shared between the batches: few, large
claims."""


class Feeder:
    def __init__(
        self,
        *,
        upstream: Upstream,
        router: UpstreamRouter,
        store: SqlStore,
        blobs: BlobStore,
        committer: GroupCommitter,
        outcomes: Outcomes,
        ready: ReadyJobs,
        owner: str,
        clock: Clock,
        lease_seconds: float,
        poll_interval: float,
        metrics: UpstreamMetrics,
        on_expired: Callable[[str], None],
    ) -> None:
        self._upstream = upstream
        self._router = router
        self._store = store
        self._blobs = blobs
        self._committer = committer
        self._outcomes = outcomes
        self._ready = ready
        self._owner = owner
        self._clock = clock
        self._lease_seconds = lease_seconds
        self._poll_interval = poll_interval
        self._metrics = metrics
        self._on_expired = on_expired
        self._batches: dict[str, Batch] = {}
        self._blob_keys: dict[str, str | None] = {}
        self._wake = asyncio.Event()
        self._refreshed_at = 0.0

    @property
    def batches(self) -> int:
        """How many batches this upstream is running."""
        return len(self._batches)

    def wake(self) -> None:
        """Something changed (a batch started, was cancelled): look again now."""
        self._refreshed_at = 0.0
        self._wake.set()

    async def run(self, stopping: asyncio.Event) -> None:
        """Keep the queue above its low watermark until ``stopping`` is set."""
        ready = self._ready
        while not stopping.is_set():
            self._wake.clear()
            if self._committer.stalled:  # results cannot be kept: claim nothing more
                await _wait_for_any(stopping, within=self._poll_interval)
                continue
            try:
                if self._clock.now() - self._refreshed_at >= self._poll_interval:
                    await self._refresh()
                if len(ready) < ready.low_watermark and await self._refill():
                    continue
            except StoreError as exc:
                log.warning(
                    "dispatch_feed_failed",
                    extra={"upstream": self._upstream.name, "error": str(exc)},
                )
            ready.hungry.clear()
            await _wait_for_any(ready.hungry, self._wake, stopping, within=self._poll_interval)

    def give_back(self, claims: list[ClaimedRequest]) -> None:
        """Hand claimed lines that will not be sent back to the store, through the committer."""
        for claim in claims:
            self._committer.add(claim.given_back())

    async def _refresh(self) -> None:
        """Learn which batches this upstream should run; give back lines of any that stopped."""
        self._refreshed_at = now = self._clock.now()
        batches = await self._store.dispatchable_batches(int(now))
        previous, self._batches = (
            self._batches,
            {
                b.id: b
                for b in batches
                if b.model and self._router.for_model(b.model) is self._upstream
            },
        )
        gone = previous.keys() - self._batches.keys()
        for batch_id in gone:
            self._blob_keys.pop(batch_id, None)
            if previous[batch_id].expires_at <= now:
                self._on_expired(batch_id)  # their answers would be discarded anyway
        if gone:
            self.give_back([job.claim for job in self._ready.remove(gone)])

    async def _refill(self) -> bool:
        if not self._batches:
            return False
        share = max(8, -(-CLAIM_SLOTS * self._upstream.max_concurrency // len(self._batches)))
        now = self._clock.now()
        until = now + self._lease_seconds
        claimed: list[list[Job]] = []
        try:
            for batch in list(self._batches.values()):
                claims = await self._store.claim_requests(batch.id, self._owner, share, now, until)
                if claims:
                    claimed.append(await self._jobs(batch, claims, until))
        finally:
            self._ready.add(_taking_turns(claimed))  # what was claimed before a failure too
        if not claimed:
            self._refreshed_at = 0.0  # whatever we knew is stale: nothing left to claim
        return bool(claimed)

    async def _jobs(self, batch: Batch, claims: list[ClaimedRequest], until: float) -> list[Job]:
        """The claimed lines as jobs; a line that cannot be read becomes its result at once."""
        try:
            lines = await self._read(batch, claims)
        except OSError:
            log.exception("input_read_failed", extra={"batch_id": batch.id})
            self._finish([self._outcomes.read_failed(claim) for claim in claims])
            return []
        except BaseException:
            self.give_back(claims)
            raise
        endpoint, observed = batch.endpoint, self._metrics.model(batch.model or "")
        jobs, unreadable = [], []
        for claim, line in zip(claims, lines, strict=True):
            body = _body_of(line)
            if body is None:
                unreadable.append(self._outcomes.unreadable(claim))
            else:
                jobs.append(Job(claim, endpoint, observed, body, until))
        self._finish(unreadable)
        return jobs

    def _finish(self, results: list[RequestResult]) -> None:
        for result in results:
            self._committer.add(result)

    async def _read(self, batch: Batch, claims: list[ClaimedRequest]) -> list[bytes | None]:
        key = await self._input_blob_key(batch)
        if key is None:
            return [None] * len(claims)
        try:
            return await self._read_lines(key, claims)
        except BlobNotFound:
            return [None] * len(claims)

    async def _input_blob_key(self, batch: Batch) -> str | None:
        if batch.id not in self._blob_keys:
            file = await self._store.get_file(batch.project, batch.input_file_id)
            self._blob_keys[batch.id] = file.blob_key if file else None
        return self._blob_keys[batch.id]

    async def _read_lines(self, key: str, claims: list[ClaimedRequest]) -> list[bytes | None]:
        start, last = claims[0].offset, claims[-1]  # claims come in line order
        end = last.offset + last.length
        needed = sum(map(_LENGTH, claims))
        if end - start <= SPARSE_READ_FACTOR * needed:
            span = await self._blobs.read_range(key, start, end - start)
            return [span[c.offset - start : c.offset - start + c.length] for c in claims]
        return [await self._blobs.read_range(key, c.offset, c.length) for c in claims]


_LENGTH = attrgetter("length")


def _taking_turns(claimed: list[list[Job]]) -> Iterator[Job]:
    """One job of each batch in turn (in C: it runs for every job)."""
    return filter(None, chain.from_iterable(zip_longest(*claimed)))  # None: zip_longest's fill


class _Forwarded(msgspec.Struct):
    body: msgspec.Raw


_forwarded = msgspec.json.Decoder(_Forwarded)


def _body_of(raw: bytes | None) -> bytes | None:
    """The request body to forward, from a validated input line: its bytes as the user wrote
    them, found without building the body's objects."""
    if raw is None:
        return None
    try:
        return bytes(_forwarded.decode(raw).body)
    except msgspec.DecodeError:
        return None


async def _wait_for_any(*events: asyncio.Event, within: float) -> None:
    waiters = [asyncio.create_task(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, timeout=within, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
