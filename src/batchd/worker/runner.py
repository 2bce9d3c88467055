"""The worker: loops that validate, dispatch and finalize, the renewal of its leases, and the
housekeeping that expires files and, at start, deletes the lines a stopped worker left of batches
already finished. (Work whose worker died is taken over by claims, once its lease has run out.)"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace

from batchd import ids
from batchd.batches import log_status
from batchd.blobstore import BlobStore
from batchd.clock import Clock, SystemClock
from batchd.errors import StoreError
from batchd.files import purge_expired
from batchd.idempotency import IDEMPOTENCY_WINDOW
from batchd.metrics import Metrics, MetricsServer
from batchd.models import TERMINAL, Batch, BatchStatus
from batchd.orphans import GRACE, collect_orphans
from batchd.settings import Settings
from batchd.store import SqlStore
from batchd.upstreams import UpstreamRouter
from batchd.webhooks import DeliveryPolicy
from batchd.worker.commits import GroupCommitter
from batchd.worker.deliveries import Deliveries
from batchd.worker.dispatch import Dispatcher
from batchd.worker.finalize import Finalizer, drop_lines
from batchd.worker.ingest import Ingest
from batchd.worker.reporter import UpstreamReporter
from batchd.worker.spool import ResultSpool
from batchd.worker.supervisor import Supervisor

log = logging.getLogger("batchd.worker")


class Worker:
    """Every long-lived task of a worker, under one supervisor:

    - ``committer``: group commits of results (``commits.py``);
    - ``feeder:UPSTREAM`` and ``sender:UPSTREAM`` (max_concurrency of them): each upstream's
      dispatch (``dispatch.py``);
    - ``ingest`` and ``finalize``: the whole-batch phases, one batch at a time;
    - ``leases``: renewing the leases of what this worker holds;
    - ``housekeeping``: expiry, blobs nothing refers to (``orphans.py``) and idempotency keys
      past their day (both hourly), and lines a stopped worker left of finished batches;
    - ``upstreams``: each upstream's state, to the log and the store (``GET /v1/upstreams``);
    - ``deliveries``: webhook events, from the store's outbox to their endpoints.

    ``on_fatal`` is called once a task keeps failing: the process is to exit non-zero.
    """

    def __init__(
        self,
        settings: Settings,
        store: SqlStore,
        blobs: BlobStore,
        router: UpstreamRouter,
        clock: Clock | None = None,
        metrics: Metrics | None = None,
        on_fatal: Callable[[str], None] = lambda task: None,
    ) -> None:
        self.id = ids.worker_id()
        self.metrics = metrics or Metrics()
        self._settings = settings
        self._store = store
        self._blobs = blobs
        self._router = router
        self._clock = clock or SystemClock()
        self._stopping = asyncio.Event()
        self._validate_wake = asyncio.Event()
        self._finalize_wake = asyncio.Event()
        self._held: set[str] = set()
        self._ingest = Ingest(store, blobs, router, settings)
        self._finalizer = Finalizer(store, blobs)
        self.supervisor = Supervisor(on_fatal)
        self.committer = GroupCommitter(
            store, ResultSpool(store, blobs), self.id, on_commit=self._finalize_wake.set
        )
        self.dispatchers = [
            Dispatcher(
                upstream=upstream,
                router=router,
                store=store,
                blobs=blobs,
                committer=self.committer,
                owner=self.id,
                clock=self._clock,
                settings=settings,
                metrics=self.metrics.upstream(upstream.name),
            )
            for upstream in router.upstreams
        ]
        self._reporter = UpstreamReporter(
            store, self.id, self.dispatchers, self._clock, settings.lease_seconds
        )
        self._deliveries = Deliveries(
            store,
            self.id,
            self._clock,
            DeliveryPolicy(settings.webhook_retry_base_delay, settings.webhook_retry_max_delay),
            timeout=settings.webhook_timeout,
            poll_interval=settings.poll_interval,
            metrics=self.metrics,
        )
        self._metrics_server = (
            MetricsServer(self.metrics, store, settings.host, settings.metrics_port)
            if settings.metrics_port is not None
            else None
        )

    @property
    def trouble(self) -> list[str]:
        """What keeps this worker from doing its work now: tasks down, commits failing."""
        trouble = [f"worker task {name}" for name in self.supervisor.trouble]
        if self.committer.stalled:
            trouble.append("result commits")
        return trouble

    def notify(self) -> None:
        """A batch was created or cancelled in this process: react now, not at the next poll."""
        self._validate_wake.set()
        self._finalize_wake.set()
        for dispatcher in self.dispatchers:
            dispatcher.wake()

    async def start(self) -> None:
        if self._metrics_server is not None:
            await self._metrics_server.start()
        log.info("worker_started", extra={"worker": self.id})
        spawn = self.supervisor.spawn
        spawn("committer", self.committer.run)
        spawn("ingest", lambda: self._phase_loop(self._validate_one, self._validate_wake))
        spawn("finalize", lambda: self._phase_loop(self._finalize_one, self._finalize_wake))
        spawn("leases", self._renew_leases)
        spawn("housekeeping", self._housekeeping)
        spawn("upstreams", lambda: self._reporter.run(self._stopping))
        spawn("deliveries", lambda: self._deliveries.run(self._stopping))
        for dispatcher in self.dispatchers:
            dispatcher.start(self.supervisor)

    async def stop(self, grace: float = 10.0) -> None:
        """Stop claiming; let requests in flight finish within ``grace``; commit their results."""
        self._stopping.set()
        self.notify()
        for dispatcher in self.dispatchers:
            await dispatcher.stop_claiming()
        in_flight = [asyncio.create_task(d.wait_in_flight()) for d in self.dispatchers]
        if in_flight:
            await asyncio.wait(in_flight, timeout=grace)
        for dispatcher in self.dispatchers:
            dispatcher.cancel_in_flight()  # past the grace period: their leases will run out
        try:
            await asyncio.wait_for(self.committer.flush(), timeout=grace)
        except TimeoutError:
            log.error("shutdown_commit_timeout: results not committed will be redone")
        await self.supervisor.stop()
        await self._reporter.forget()
        if self._metrics_server is not None:
            await self._metrics_server.stop()
        log.info("worker_stopped", extra={"worker": self.id})

    async def _phase_loop(self, step: Callable[[], Awaitable[bool]], wake: asyncio.Event) -> None:
        while not self._stopping.is_set():
            try:
                did_work = await step()
            except Exception:
                log.exception("worker_step_failed")  # one batch's trouble: the others go on
                did_work = False
            if not did_work:
                wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), timeout=self._settings.poll_interval)

    def _lease_until(self) -> float:
        return self._clock.now() + self._settings.lease_seconds

    async def _validate_one(self) -> bool:
        if self.committer.stalled:
            return False  # the store or the disk cannot take writes: start nothing new
        batch = await self._store.claim_batch_to_validate(
            self.id, self._clock.now(), self._lease_until()
        )
        if batch is None:
            return False
        await self._hold(batch, self._ingest.run)
        await self._log_validated(batch.id)
        for dispatcher in self.dispatchers:
            dispatcher.wake()
        return True

    async def _finalize_one(self) -> bool:
        batch = await self._store.claim_batch_to_finalize(
            self.id, self._clock.now(), self._lease_until()
        )
        if batch is None:
            return False
        await self._hold(batch, self._finalizer.run)
        done = await self._store.get_batch(batch.id)
        if done is not None and done.status in TERMINAL:
            log_status(done)
            self._deliveries.wake()
        return True

    async def _log_validated(self, batch_id: str) -> None:
        """Log how validation ended, read back from the store: the batch may have moved on since
        (a cancel), so its timestamps, not its status, say whether it started."""
        batch = await self._store.get_batch(batch_id)
        if batch is None:
            return
        if batch.in_progress_at is not None:
            log_status(replace(batch, status=BatchStatus.IN_PROGRESS))
        elif batch.status in (BatchStatus.FAILED, BatchStatus.CANCELLED):
            log_status(batch)
            self._deliveries.wake()

    async def _hold(
        self, batch: Batch, phase: Callable[[Batch, str, int], Awaitable[object]]
    ) -> None:
        """Run a whole-batch phase while the lease renewal renews the batch's lease."""
        self._held.add(batch.id)
        try:
            await phase(batch, self.id, int(self._clock.now()))
        finally:
            self._held.discard(batch.id)

    async def _renew_leases(self) -> None:
        """Renew the leases of every line and batch this worker holds, every third of a lease,
        until the worker has stopped: requests in flight at a stop, and their commits, still
        hold leases."""
        while True:
            try:
                until = self._lease_until()
                await self._store.renew_request_leases(self.id, until)
                for dispatcher in self.dispatchers:
                    dispatcher.senders.leases_renewed_until = until
                for batch_id in list(self._held):
                    await self._store.renew_batch_lease(batch_id, self.id, until)
            except StoreError as exc:
                log.warning("lease_renewal_failed", extra={"worker": self.id, "error": str(exc)})
            await asyncio.sleep(self._settings.lease_seconds / 3)

    async def _housekeeping(self) -> None:
        try:
            for batch_id in await self._store.batches_with_lines_left():
                await drop_lines(self._store, self._blobs, batch_id)
        except (StoreError, OSError):
            log.exception("housekeeping_failed")
        next_collection = self._clock.now()
        while not self._stopping.is_set():
            try:
                await purge_expired(self._store, self._blobs, int(self._clock.now()))
                if self._clock.now() >= next_collection:
                    next_collection = self._clock.now() + GRACE
                    await collect_orphans(self._store, self._blobs, self._clock.now())
                    await self._store.idempotency.forget_before(
                        int(self._clock.now()) - IDEMPOTENCY_WINDOW
                    )
            except (StoreError, OSError):
                log.exception("housekeeping_failed")
            await self._pause(self._settings.lease_seconds / 3)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)
