"""Sending requests to one upstream: at most ``max_concurrency`` in flight, shared round robin
between the batches that use it, each line claimed under a lease before it is sent.

Claimed lines wait in one queue, the batches' lines interleaved as they are claimed, and a fixed
pool of ``max_concurrency`` senders takes them one at a time: taking the next line is a
``popleft``, and a request costs no task of its own (making, registering and finishing a task, and
a semaphore around it, cost more than the rest of what the dispatcher does per request)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections import deque
from collections.abc import Awaitable, Iterator
from itertools import chain, zip_longest
from operator import attrgetter
from urllib.parse import quote

import msgspec

from batchd.blobstore import BlobStore
from batchd.clock import Clock
from batchd.errors import (
    BlobNotFound,
    StoreError,
    UpstreamDisconnected,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from batchd.metrics import ModelMetrics, UpstreamMetrics
from batchd.models import Batch, ClaimedRequest, RequestResult, RequestState
from batchd.result_lines import answered_line, unanswered_line
from batchd.store import SqlStore
from batchd.upstreams import Upstream, UpstreamResponse, UpstreamRouter
from batchd.worker.breaker import CircuitBreaker
from batchd.worker.commits import GroupCommitter
from batchd.worker.retry import RETRYABLE_STATUSES, RetryPolicy, retry_after

log = logging.getLogger("batchd.worker")

SPARSE_READ_FACTOR = 4
"""Read claimed lines as one span unless the span is this many times the bytes needed."""

PREFETCH_SLOTS = 4
"""Claim more once fewer than this many slots' worth of lines are buffered…"""
CLAIM_SLOTS = 8
"""…and then this many slots' worth, shared between the batches: few, large claims."""

UPSTREAM_FAULT_STATUSES = frozenset({429, 500, 502, 503, 504})
"""Answers that say the server, not the request, is in trouble: they count for the breaker."""

NO_ANSWER: dict[type[UpstreamError], str] = {
    UpstreamTimeout: "timeout",
    UpstreamUnreachable: "unreachable",
    UpstreamDisconnected: "disconnected",
}
"""The ``status`` a request counts under in the metrics when no HTTP answer came."""

NOT_SENT = "batchd failed to send this request (an internal error, logged as send_failed)."


class Job(msgspec.Struct, gc=False):
    """A claimed line ready to send. One is made per request: a Struct, built in C (see
    ``batchd.models``)."""

    claim: ClaimedRequest
    endpoint: str
    observed: ModelMetrics
    body: bytes | None  # None: the line could not be read back
    leased_until: float


class Dispatcher:
    def __init__(
        self,
        *,
        upstream: Upstream,
        router: UpstreamRouter,
        store: SqlStore,
        blobs: BlobStore,
        committer: GroupCommitter,
        owner: str,
        clock: Clock,
        lease_seconds: float,
        poll_interval: float,
        retry: RetryPolicy,
        breaker: CircuitBreaker,
        metrics: UpstreamMetrics,
    ) -> None:
        self.upstream = upstream
        self._router = router
        self._store = store
        self._blobs = blobs
        self._committer = committer
        self._owner = owner
        self._clock = clock
        self._lease_seconds = lease_seconds
        self._poll_interval = poll_interval
        self._retry = retry
        self.breaker = breaker
        self._metrics = metrics
        self._ready: deque[Job] = deque()
        self._batches: dict[str, Batch] = {}
        self._blob_keys: dict[str, str | None] = {}
        self._senders: set[asyncio.Task[None]] = set()
        self._sending: dict[asyncio.Task[None], str] = {}  # sender → the batch of its request
        self._abandoned: set[asyncio.Task[None]] = set()  # senders told to drop their request
        self._admitting = asyncio.Lock()  # while the breaker is open, one sender waits on it
        self._wake = asyncio.Event()
        self._hungry = asyncio.Event()  # the buffer fell below the low watermark
        self._available = asyncio.Event()  # the feeder added jobs
        self.leases_renewed_until = 0.0  # set by the worker's housekeeping
        self._low_watermark = PREFETCH_SLOTS * upstream.max_concurrency
        self._refreshed_at = 0.0

    def wake(self) -> None:
        """Something changed (a batch started, was cancelled): look again now."""
        self._refreshed_at = 0.0
        self._wake.set()

    async def run(self, stopping: asyncio.Event) -> None:
        """Send lines until ``stopping`` is set, while a feeder keeps the queue of claimed lines
        full; then give back the lines not sent. Requests in flight go on: ``wait_in_flight``."""
        feeder = asyncio.create_task(self._feed(stopping))
        self._senders = {
            asyncio.create_task(self._sender(stopping))
            for _ in range(self.upstream.max_concurrency)
        }
        try:
            await stopping.wait()
        finally:
            self._available.set()  # senders waiting for lines: see that it is stopping
            feeder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await feeder
            await self._give_back_ready()

    async def wait_in_flight(self) -> None:
        if self._senders:
            await asyncio.wait(self._senders)

    def cancel_in_flight(self, batch_id: str | None = None) -> None:
        """Abandon the requests in flight of one batch, whose senders go on with other lines; or,
        with no batch (once stopping), all of them, ending the senders. Abandoned lines stay
        leased until the lease runs out, or are closed by the finalizer."""
        if batch_id is None:
            for sender in self._senders:
                sender.cancel()
            return
        for sender, sending in list(self._sending.items()):
            if sending == batch_id:
                del self._sending[sender]
                self._abandoned.add(sender)
                sender.cancel()

    async def _sender(self, stopping: asyncio.Event) -> None:
        me = asyncio.current_task()
        assert me is not None
        while True:
            try:
                await self._send_lines(me, stopping)
                return
            except asyncio.CancelledError:
                if stopping.is_set() or me not in self._abandoned:
                    raise
                self._abandoned.discard(me)  # its request was abandoned: go on with the next
                me.uncancel()
            except Exception:
                # The store failing while a line whose lease lapsed is given back, or while the
                # committer is waited on: the upstream keeps its sender all the same.
                log.exception("sender_failed", extra={"upstream": self.upstream.name})
                await asyncio.sleep(self._poll_interval)

    async def _send_lines(self, me: asyncio.Task[None], stopping: asyncio.Event) -> None:
        sending, committer = self._sending, self._committer
        while (job := await self._next_job(stopping)) is not None:
            sending[me] = job.claim.batch_id
            try:
                result = await self._send(job)
            except Exception:
                log.exception(
                    "send_failed",
                    extra={"upstream": self.upstream.name, "batch_id": job.claim.batch_id},
                )
                result = self._not_sent(job.claim)
            sending.pop(me, None)  # abandoning it may have taken it out
            committer.add(result)
            if committer.backlogged:
                await committer.room()

    async def _next_job(self, stopping: asyncio.Event) -> Job | None:
        ready = self._ready
        while not stopping.is_set():
            if self.breaker.is_open and not await self._admitted(stopping):
                return None
            if len(ready) <= self._low_watermark:
                self._hungry.set()
            if ready:
                job = ready.popleft()
                if not self._lease_lapsed(job):
                    return job
                await self._store.release_requests(self._owner, [job.claim])
                continue
            self._available.clear()
            await self._available.wait()
        return None

    async def _admitted(self, stopping: asyncio.Event) -> bool:
        """Wait for the open breaker to let a request through; whether it did before stopping.
        Senders wait on it one at a time, so that it lets one probe through, not one each."""
        async with self._admitting:
            return await _unless_stopped(self.breaker.admit(), stopping)

    async def _feed(self, stopping: asyncio.Event) -> None:
        """Claim lines ahead of need, so that a freed slot never waits on the store."""
        while not stopping.is_set():
            self._wake.clear()
            try:
                if self._clock.now() - self._refreshed_at >= self._poll_interval:
                    await self._refresh()
                if len(self._ready) < self._low_watermark and await self._refill():
                    self._available.set()
                    continue
            except StoreError:
                log.exception("dispatch_feed_failed", extra={"upstream": self.upstream.name})
            self._hungry.clear()
            await _wait_for_any(self._hungry, self._wake, stopping, within=self._poll_interval)

    def _lease_lapsed(self, job: Job) -> bool:
        """Whether the line's lease may have run out (renewals fell behind): another worker may
        hold it now, so sending it could send it twice."""
        return max(job.leased_until, self.leases_renewed_until) <= self._clock.now()

    async def _refresh(self) -> None:
        """Learn which batches this upstream should run; give back lines of any that stopped."""
        self._refreshed_at = self._clock.now()
        now = self._clock.now()
        batches = await self._store.dispatchable_batches(int(now))
        previous, self._batches = (
            self._batches,
            {
                b.id: b
                for b in batches
                if b.model and self._router.for_model(b.model) is self.upstream
            },
        )
        gone = previous.keys() - self._batches.keys()
        for batch_id in gone:
            if previous[batch_id].expires_at <= now:
                self.cancel_in_flight(batch_id)  # their answers would be discarded anyway
        if gone and self._ready:
            stopped = [job for job in self._ready if job.claim.batch_id in gone]
            kept = [job for job in self._ready if job.claim.batch_id not in gone]
            self._ready.clear()  # in place: senders waiting for lines hold this queue
            self._ready.extend(kept)
            await self._store.release_requests(self._owner, [job.claim for job in stopped])

    async def _refill(self) -> bool:
        if not self._batches:
            return False
        share = max(8, -(-CLAIM_SLOTS * self.upstream.max_concurrency // len(self._batches)))
        now = self._clock.now()
        until = now + self._lease_seconds
        claimed: list[list[Job]] = []
        for batch in list(self._batches.values()):
            claims = await self._store.claim_requests(batch.id, self._owner, share, now, until)
            if claims:
                claimed.append(await self._read_jobs(batch, claims, until))
        if not claimed:
            self._refreshed_at = 0.0  # whatever we knew is stale: nothing left to claim
        self._ready.extend(_taking_turns(claimed))
        return bool(claimed)

    async def _read_jobs(
        self, batch: Batch, claims: list[ClaimedRequest], until: float
    ) -> list[Job]:
        key = await self._input_blob_key(batch)
        raw_lines: list[bytes | None]
        try:
            raw_lines = await self._read_lines(key, claims) if key else [None] * len(claims)
        except BlobNotFound:
            raw_lines = [None] * len(claims)
        endpoint, observed = batch.endpoint, self._metrics.model(batch.model or "")
        return [
            Job(claim, endpoint, observed, _body_of(raw), until)
            for claim, raw in zip(claims, raw_lines, strict=True)
        ]

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

    async def _send(self, job: Job) -> RequestResult:
        claim = job.claim
        if job.body is None:
            self.breaker.abandoned()  # nothing was sent: if this was the probe, allow another
            return _failed(claim, "invalid_request", "The input line could not be read back.")
        headers = {
            "x-batchd-batch-id": claim.batch_id,
            "x-batchd-custom-id": _header_safe(claim.custom_id),
        }
        observed = job.observed
        self._metrics.sending += 1
        started = time.perf_counter()
        try:
            response = await self.upstream.send(job.endpoint, job.body, headers)
        except UpstreamError as exc:
            reason = NO_ANSWER.get(type(exc), "error")
            observed.sent(reason, time.perf_counter() - started)
            return self._unanswered(claim, exc, reason)
        finally:
            self._metrics.sending -= 1
        observed.sent(response.status, time.perf_counter() - started)
        return self._answered(claim, response, observed)

    def _unanswered(self, claim: ClaimedRequest, exc: UpstreamError, reason: str) -> RequestResult:
        self.breaker.failed()
        refund = isinstance(exc, UpstreamUnreachable) and self.breaker.is_open
        if refund or self._retry.may_retry(claim.attempts):
            self._metrics.retried(reason)
            return self._again(claim, self._retry.backoff(claim.attempts), refund)
        return _failed(claim, exc.code, exc.message)

    def _not_sent(self, claim: ClaimedRequest) -> RequestResult:
        """A line whose sending raised an error batchd does not expect (a bug): tried again like
        one that got no answer, and failed once out of tries, so that its batch still ends."""
        self.breaker.abandoned()  # if it was the probe: it was not sent, let another go
        if self._retry.may_retry(claim.attempts):
            return self._again(claim, self._retry.backoff(claim.attempts), refund=False)
        return _failed(claim, "server_error", NOT_SENT)

    def _answered(
        self, claim: ClaimedRequest, response: UpstreamResponse, observed: ModelMetrics
    ) -> RequestResult:
        if response.status in RETRYABLE_STATUSES:
            pause = retry_after(response.headers, self._clock.now())
            if response.status in UPSTREAM_FAULT_STATUSES:
                self.breaker.failed(pause)
            else:
                self.breaker.succeeded()  # it answered: whatever 408/409 mean, it is up
            if self._retry.may_retry(claim.attempts):
                self._metrics.retried(str(response.status))
                delay = max(pause or 0.0, self._retry.backoff(claim.attempts))
                return self._again(claim, delay, refund=False)
        else:
            self.breaker.succeeded()
        state, line, usage = answered_line(
            claim.custom_id, response.status, response.request_id, response.body
        )
        if usage is not None:
            observed.used(usage)
        return RequestResult(claim.batch_id, claim.line, state, line, usage, span=claim.span)

    def _again(self, claim: ClaimedRequest, delay: float, refund: bool) -> RequestResult:
        """Try the line again later.

        A failure that cannot be the line's fault (no connection could be made) while the
        upstream is known to be down gives the attempt back, so lines do not run out of tries
        waiting for the server. Any answer (429, 5xx), a dropped connection or a timeout costs an
        attempt: it may be the request itself that the server refuses or chokes on, and such a
        line must fail in the end rather than retry forever. While the upstream is down only one
        probe at a time is sent, so an outage costs few lines an attempt.
        """
        return RequestResult(
            claim.batch_id,
            claim.line,
            RequestState.PENDING,
            span=claim.span,
            retry_at=self._clock.now() + delay,
            attempts=claim.attempts - refund,
        )

    async def _give_back_ready(self) -> None:
        ready = list(self._ready)
        self._ready.clear()
        if ready:
            await self._store.release_requests(self._owner, [job.claim for job in ready])


_LENGTH = attrgetter("length")

_UNQUOTED = re.compile(r"[A-Za-z0-9_.~-]*").fullmatch
"""Characters ``quote`` leaves as they are: most custom_ids are made of them alone."""


def _failed(claim: ClaimedRequest, code: str, message: str) -> RequestResult:
    """The line failed with no answer to show: its error line."""
    line = unanswered_line(claim.custom_id, code, message)
    return RequestResult(claim.batch_id, claim.line, RequestState.FAILED, line, span=claim.span)


def _taking_turns(claimed: list[list[Job]]) -> Iterator[Job]:
    """One job of each batch in turn (in C: it runs for every job)."""
    return filter(None, chain.from_iterable(zip_longest(*claimed)))  # None: zip_longest's fill


def _header_safe(custom_id: str) -> str:
    """The custom_id percent-encoded for a header (it may hold any Unicode)."""
    return custom_id if _UNQUOTED(custom_id) else quote(custom_id, safe="")


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


async def _unless_stopped(work: Awaitable[None], stopping: asyncio.Event) -> bool:
    """Await ``work`` unless ``stopping`` is set first; whether the work finished."""
    task = asyncio.ensure_future(work)
    stop = asyncio.create_task(stopping.wait())
    await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
    stop.cancel()
    if not task.done():
        task.cancel()
        return False
    return True


async def _wait_for_any(*events: asyncio.Event, within: float) -> None:
    waiters = [asyncio.create_task(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, timeout=within, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
