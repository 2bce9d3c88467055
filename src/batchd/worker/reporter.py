"""Telling people how each upstream is doing: probed once at start, then its state (``status()``
of its dispatcher) checked every second, a warning logged while it is in trouble (at most every
``WARN_EVERY`` seconds), and the state written to the store, where ``GET /v1/upstreams`` of any
API process reads it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from batchd.clock import Clock
from batchd.errors import StoreError, UpstreamError
from batchd.models import UpstreamStatus
from batchd.store import SqlStore
from batchd.worker.dispatch import Dispatcher
from batchd.worker.health import reason_of

log = logging.getLogger("batchd.worker")

CHECK_EVERY = 1.0
WARN_EVERY = 30.0
PROBE_TIMEOUT = 10.0
TROUBLE = frozenset({"failing", "paused", "probing"})


class UpstreamReporter:
    def __init__(
        self,
        store: SqlStore,
        worker: str,
        dispatchers: list[Dispatcher],
        clock: Clock,
        lease_seconds: float,
    ) -> None:
        self._store = store
        self._worker = worker
        self._dispatchers = dispatchers
        self._clock = clock
        self._rewrite_every = lease_seconds / 3
        self._written: list[UpstreamStatus] = []
        self._written_at = 0.0
        self._warned_at: dict[str, float] = {}
        self._probed = False

    async def run(self, stopping: asyncio.Event) -> None:
        if not self._probed:
            self._probed = True
            await asyncio.gather(*(self._probe(d) for d in self._dispatchers))
        while not stopping.is_set():
            statuses = [dispatcher.status() for dispatcher in self._dispatchers]
            for status in statuses:
                self._log(status)
            await self._write(statuses)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), CHECK_EVERY)

    async def forget(self) -> None:
        """This worker is stopping: its view of the upstreams goes with it."""
        with contextlib.suppress(StoreError):
            await self._store.forget_upstream_status(self._worker)

    async def _probe(self, dispatcher: Dispatcher) -> None:
        """Ask the upstream for its models: a warning now, not a silent batch later, if it does
        not answer."""
        upstream = dispatcher.upstream
        try:
            async with asyncio.timeout(PROBE_TIMEOUT):
                await upstream.probe()
        except (UpstreamError, TimeoutError) as exc:
            reason = reason_of(exc)
            dispatcher.health.failed(reason)
            log.warning(
                "upstream_unreachable_at_start",
                extra={"upstream": upstream.name, "reason": reason},
            )

    def _log(self, status: UpstreamStatus) -> None:
        name, now = status.upstream, self._clock.now()
        if status.state not in TROUBLE:
            if self._warned_at.pop(name, None) is not None and status.state == "ok":
                log.info("upstream_recovered", extra={"upstream": name})
            return
        if now - self._warned_at.get(name, 0.0) < WARN_EVERY:
            return
        self._warned_at[name] = now
        log.warning(
            "upstream_in_trouble",
            extra={
                "upstream": name,
                "state": status.state,
                "reason": status.reason,
                "for_seconds": round(now - status.since) if status.since else 0,
                "lines_waiting": status.lines_waiting,
                "batches": status.batches,
            },
        )

    async def _write(self, statuses: list[UpstreamStatus]) -> None:
        now = self._clock.now()
        if _states(statuses) == _states(self._written) and (
            now - self._written_at < self._rewrite_every
        ):
            return
        try:
            await self._store.report_upstream_status(self._worker, statuses, now)
        except StoreError as exc:
            log.debug("upstream_status_not_written", extra={"error": str(exc)})
            return
        self._written, self._written_at = statuses, now


def _states(statuses: list[UpstreamStatus]) -> list[tuple[str, str | None]]:
    return [(status.state, status.reason) for status in statuses]
