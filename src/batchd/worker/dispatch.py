"""Running the lines of one upstream's batches: at most ``max_concurrency`` in flight, shared
round robin between the batches that use it, each line claimed under a lease before it is sent.

    feeder ──claimed lines──▶ ready jobs ──▶ senders ──▶ outcomes ──▶ committer
    (feeder.py)               (jobs.py)      (senders.py) (outcomes.py) (commits.py)

The breaker (``breaker.py``) and the health record (``health.py``) see every outcome; the
senders wait on the breaker while it is open.
"""

from __future__ import annotations

import asyncio
import contextlib

from batchd.blobstore import BlobStore
from batchd.clock import Clock
from batchd.metrics import UpstreamMetrics
from batchd.models import UpstreamStatus
from batchd.settings import Settings
from batchd.store import SqlStore
from batchd.upstreams import Upstream, UpstreamRouter
from batchd.worker.breaker import BreakerState, CircuitBreaker
from batchd.worker.commits import GroupCommitter
from batchd.worker.feeder import Feeder
from batchd.worker.health import UpstreamHealth
from batchd.worker.jobs import ReadyJobs
from batchd.worker.limiter import ConcurrencyLimiter
from batchd.worker.outcomes import Outcomes
from batchd.worker.retry import RetryPolicy
from batchd.worker.senders import Senders
from batchd.worker.supervisor import Supervisor

PREFETCH_SLOTS = 4
"""Claim more once fewer than this many slots' worth of lines are ready."""


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
        settings: Settings,
        metrics: UpstreamMetrics,
    ) -> None:
        self.upstream = upstream
        self._committer = committer
        self.breaker = CircuitBreaker(
            threshold=settings.breaker_threshold,
            window=settings.breaker_window,
            failure_ratio=settings.breaker_failure_ratio,
            base_cooldown=settings.breaker_base_cooldown,
            max_cooldown=settings.breaker_max_cooldown,
            clock=clock,
        )
        self.health = UpstreamHealth(clock)
        outcomes = Outcomes(
            retry=RetryPolicy(
                settings.max_attempts, settings.retry_base_delay, settings.retry_max_delay
            ),
            breaker=self.breaker,
            health=self.health,
            clock=clock,
            max_retry_after=settings.max_retry_after,
        )
        self._ready = ReadyJobs(PREFETCH_SLOTS * upstream.max_concurrency)
        self.senders = Senders(
            upstream=upstream,
            ready=self._ready,
            committer=committer,
            outcomes=outcomes,
            breaker=self.breaker,
            clock=clock,
            metrics=metrics,
            limiter=_limiter(upstream, metrics),
        )
        self.feeder = Feeder(
            upstream=upstream,
            router=router,
            store=store,
            blobs=blobs,
            committer=committer,
            outcomes=outcomes,
            ready=self._ready,
            owner=owner,
            clock=clock,
            lease_seconds=settings.lease_seconds,
            poll_interval=settings.poll_interval,
            metrics=metrics,
            on_expired=self.senders.cancel_in_flight,
        )
        self._stopping = asyncio.Event()
        self._feeding: asyncio.Task[None] | None = None

    def start(self, supervisor: Supervisor) -> None:
        name = self.upstream.name
        self._feeding = supervisor.spawn(f"feeder:{name}", lambda: self.feeder.run(self._stopping))
        self.senders.start(supervisor, self._stopping)

    def wake(self) -> None:
        self.feeder.wake()

    async def stop_claiming(self) -> None:
        """Claim and send nothing more; hand the lines not yet sent back. Requests in flight go
        on: ``wait_in_flight``."""
        self._stopping.set()
        self._ready.available.set()  # senders waiting for lines: see that it is stopping
        if self.senders.limiter is not None:
            self.senders.limiter.stop()  # senders waiting for a slot: likewise
        if self._feeding is not None:
            self._feeding.cancel()  # what it claims on the way out, it queues or gives back
            with contextlib.suppress(asyncio.CancelledError):
                await self._feeding
        self.feeder.give_back([job.claim for job in self._ready.drain()])

    async def wait_in_flight(self) -> None:
        if self.senders.tasks:
            await asyncio.wait(self.senders.tasks)

    def cancel_in_flight(self) -> None:
        self.senders.cancel_in_flight()

    def status(self) -> UpstreamStatus:
        health = self.health
        if self.breaker.state is BreakerState.OPEN:
            state = "paused"
        elif self.breaker.state is BreakerState.HALF_OPEN:
            state = "probing"
        elif health.failing:
            state = "failing"
        else:
            state = "ok" if health.answered else "idle"
        return UpstreamStatus(
            upstream=self.upstream.name,
            state=state,
            reason=health.reason if state != "ok" else None,
            since=health.since,
            lines_waiting=len(self._ready) + self.senders.in_flight,
            batches=self.feeder.batches,
        )


def _limiter(upstream: Upstream, metrics: UpstreamMetrics) -> ConcurrencyLimiter | None:
    """The upstream's adaptive limit, shown as a gauge; None for a fixed cap."""
    if not upstream.adaptive_concurrency:
        return None

    def show(limit: int) -> None:
        metrics.concurrency_limit = limit

    return ConcurrencyLimiter(upstream.max_concurrency, on_change=show, name=upstream.name)
