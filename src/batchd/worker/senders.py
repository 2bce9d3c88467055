"""Sending to one upstream: a fixed pool of ``max_concurrency`` senders, each taking the next
ready line, sending it and handing its outcome to the committer. The pool's size is the cap on
requests in flight; a request costs no task of its own (making, registering and finishing a task,
and a semaphore around it, cost more than the rest of what a sender does per request). With
adaptive concurrency, a sender also holds a slot of the upstream's limiter (``limiter.py``) while
it takes and sends a line: senders beyond the limit wait.

A sender holds a line from the moment it takes it until its result is handed over, whatever
happens in between: an error batchd does not expect while sending becomes a result too.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable
from urllib.parse import quote

from batchd.clock import Clock
from batchd.errors import (
    UpstreamDisconnected,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from batchd.metrics import UpstreamMetrics
from batchd.models import RequestResult, RequestState
from batchd.upstreams import Upstream
from batchd.worker.breaker import CircuitBreaker
from batchd.worker.commits import GroupCommitter
from batchd.worker.jobs import Job, ReadyJobs
from batchd.worker.limiter import ConcurrencyLimiter
from batchd.worker.outcomes import Outcomes
from batchd.worker.supervisor import Supervisor

log = logging.getLogger("batchd.worker")

SERVER_PROBE_TIMEOUT = 10.0

NO_ANSWER: dict[type[UpstreamError], str] = {
    UpstreamTimeout: "timeout",
    UpstreamUnreachable: "unreachable",
    UpstreamDisconnected: "disconnected",
}
"""The ``status`` a request counts under in the metrics when no HTTP answer came."""


class Senders:
    def __init__(
        self,
        *,
        upstream: Upstream,
        ready: ReadyJobs,
        committer: GroupCommitter,
        outcomes: Outcomes,
        breaker: CircuitBreaker,
        clock: Clock,
        metrics: UpstreamMetrics,
        limiter: ConcurrencyLimiter | None = None,
    ) -> None:
        self._upstream = upstream
        self.limiter = limiter
        self._ready = ready
        self._committer = committer
        self._outcomes = outcomes
        self._breaker = breaker
        self._clock = clock
        self._metrics = metrics
        self._sending: dict[asyncio.Task[None], str] = {}  # sender → the batch of its request
        self._abandoned: set[asyncio.Task[None]] = set()  # senders told to drop their request
        self._admitting = asyncio.Lock()  # while the breaker is open, one sender waits on it
        self.tasks: set[asyncio.Task[None]] = set()
        self.leases_renewed_until = 0.0  # set by the worker's lease renewal

    @property
    def in_flight(self) -> int:
        return len(self._sending)

    def cancel_in_flight(self, batch_id: str | None = None) -> None:
        """Abandon the requests in flight of one batch, whose senders go on with other lines; or,
        with no batch (once stopping), all of them, ending the senders. Abandoned lines stay
        leased until the lease runs out, or are closed by the finalizer."""
        if batch_id is None:
            for sender in self.tasks:
                sender.cancel()
            return
        for sender, sending in list(self._sending.items()):
            if sending == batch_id:
                del self._sending[sender]
                self._abandoned.add(sender)
                sender.cancel()

    def start(self, supervisor: Supervisor, stopping: asyncio.Event) -> None:
        """Start ``max_concurrency`` senders, each under the supervisor."""
        name = f"sender:{self._upstream.name}"
        self.tasks = {
            supervisor.spawn(name, lambda: self._run(stopping))
            for _ in range(self._upstream.max_concurrency)
        }

    async def _run(self, stopping: asyncio.Event) -> None:
        """One sender: send lines until ``stopping`` is set and its request in flight is over."""
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
                self._breaker.abandoned()  # if it was the probe: it will never report back

    async def _send_lines(self, me: asyncio.Task[None], stopping: asyncio.Event) -> None:
        if self.limiter is not None:
            return await self._send_lines_limited(me, stopping, self.limiter)
        while (job := await self._next_job(stopping)) is not None:
            await self._send_one(me, job)
        return None

    async def _send_lines_limited(
        self, me: asyncio.Task[None], stopping: asyncio.Event, limiter: ConcurrencyLimiter
    ) -> None:
        """As ``_send_lines``, each line taken and sent under a slot of the limiter."""
        while True:
            await limiter.acquire()
            try:
                job = await self._next_job(stopping)
                if job is None:
                    return
                await self._send_one(me, job)
            finally:
                limiter.release()

    async def _send_one(self, me: asyncio.Task[None], job: Job) -> None:
        self._sending[me] = job.claim.batch_id
        try:
            result = await self._send(job)
        except Exception:
            log.exception(
                "send_failed",
                extra={"upstream": self._upstream.name, "batch_id": job.claim.batch_id},
            )
            result = self._outcomes.not_sent(job.claim)
        self._sending.pop(me, None)  # abandoning it may have taken it out
        committer = self._committer
        committer.add(result)
        if committer.backlogged:
            await committer.room()

    async def _next_job(self, stopping: asyncio.Event) -> Job | None:
        ready, breaker = self._ready, self._breaker
        while not stopping.is_set():
            if self._committer.stalled and not await _unless_stopped(
                self._committer.resumed(), stopping
            ):
                return None
            if not ready.jobs:
                ready.hungry.set()
                ready.available.clear()
                await ready.available.wait()  # set when stopping, too
                continue
            if breaker.is_open and not await self._admitted(stopping):
                return None
            probing = breaker.probing
            job = ready.take(fresh=probing)
            if job is None or self._lease_lapsed(job):
                breaker.abandoned()  # if this sender was the probe, another may be
                if job is not None:
                    self._committer.add(job.claim.given_back())
                continue
            if probing and job.claim.span is None and not await self._server_answers():
                ready.jobs.appendleft(job)  # still down: the line waits with the others
                continue
            return job
        return None

    async def _server_answers(self) -> bool:
        """The probe when only lines tried before are ready: such a line may fail on its own,
        again and again, and keep the upstream paused for good, so the server itself is asked
        (``GET /models``). If it answers, the breaker closes and the line goes like any other."""
        try:
            async with asyncio.timeout(SERVER_PROBE_TIMEOUT):
                await self._upstream.probe()
        except (UpstreamError, TimeoutError) as exc:
            self._outcomes.probe_failed(
                exc if isinstance(exc, UpstreamError) else UpstreamTimeout()
            )
            return False
        self._breaker.succeeded()
        return True

    async def _admitted(self, stopping: asyncio.Event) -> bool:
        """Wait for the open breaker to let a request through; whether it did before stopping.
        Senders wait on it one at a time, so that it lets one probe through, not one each."""
        async with self._admitting:
            return await _unless_stopped(self._breaker.admit(), stopping)

    def _lease_lapsed(self, job: Job) -> bool:
        """Whether the line's lease may have run out (renewals fell behind): another worker may
        hold it now, so sending it could send it twice."""
        return max(job.leased_until, self.leases_renewed_until) <= self._clock.now()

    async def _send(self, job: Job) -> RequestResult:
        claim = job.claim
        headers = {"x-batchd-batch-id": claim.batch_id}
        custom_id = _header_safe(claim.custom_id)
        if len(custom_id) <= MAX_CUSTOM_ID_HEADER:
            headers["x-batchd-custom-id"] = custom_id
        observed = job.observed
        self._metrics.sending += 1
        if self.limiter is not None:
            self.limiter.sent()
        started = time.perf_counter()
        try:
            response = await self._upstream.send(job.endpoint, job.body, headers)
        except UpstreamError as exc:
            reason = NO_ANSWER.get(type(exc), "error")
            observed.sent(reason, time.perf_counter() - started)
            if self.limiter is not None and isinstance(exc, UpstreamTimeout):
                self.limiter.overloaded(started)
            result = self._outcomes.unanswered(claim, exc)
            if result.state is RequestState.PENDING:
                self._metrics.retried(reason)
            return result
        finally:
            self._metrics.sending -= 1
            if self.limiter is not None:
                self.limiter.done()
        took = time.perf_counter() - started
        observed.sent(response.status, took)
        if self.limiter is not None:
            self.limiter.answered(response.status, started, took)
        result = self._outcomes.answered(claim, response)
        if result.usage is not None:
            observed.used(result.usage)
        elif result.state is RequestState.PENDING:
            self._metrics.retried(str(response.status))
        return result


MAX_CUSTOM_ID_HEADER = 512
"""A custom_id longer than this, percent-encoded, is not sent as a header: model servers stop
reading headers at ~8 KB and would refuse the request."""

_UNQUOTED = re.compile(r"[A-Za-z0-9_.~-]*").fullmatch
"""Characters ``quote`` leaves as they are: most custom_ids are made of them alone."""


def _header_safe(custom_id: str) -> str:
    """The custom_id percent-encoded for a header (it may hold any Unicode)."""
    return custom_id if _UNQUOTED(custom_id) else quote(custom_id, safe="")


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
