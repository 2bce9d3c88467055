"""The ``deliveries`` task: fan the outbox's events out to their endpoints, then send each
delivery that is due, signed, under a lease, and record how it went.

Each send is a task of its own, at most ``MAX_IN_FLIGHT`` at once, each bounded by the webhook
timeout: a receiver that hangs holds only its own deliveries, never the batches' work nor the
other receivers'. A delivery's lease runs past its timeout, so a worker killed mid-send only
delays that delivery until the lease ends; another worker (or this one, restarted) sends it then.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import httpx

from batchd.clock import Clock, whole_seconds
from batchd.errors import StoreError
from batchd.metrics import Metrics
from batchd.models import WebhookDelivery
from batchd.store import SqlStore
from batchd.webhooks import DeliveryFailed, DeliveryPolicy, delivery_body, post_event

log = logging.getLogger("batchd.webhooks")

MAX_IN_FLIGHT = 16
LEASE_MARGIN = 30.0
"""Seconds a delivery's lease runs past its timeout."""


class Deliveries:
    def __init__(
        self,
        store: SqlStore,
        owner: str,
        clock: Clock,
        policy: DeliveryPolicy,
        *,
        timeout: float,
        poll_interval: float,
        metrics: Metrics,
    ) -> None:
        self._store = store
        self._owner = owner
        self._clock = clock
        self._policy = policy
        self._timeout = timeout
        self._poll = poll_interval
        self._metrics = metrics
        self._wake = asyncio.Event()
        self._sending: set[asyncio.Task[None]] = set()

    def wake(self) -> None:
        """A batch ended in this process: look at the outbox now, not at the next poll."""
        self._wake.set()

    async def run(self, stopping: asyncio.Event) -> None:
        async with httpx.AsyncClient(timeout=self._timeout, follow_redirects=False) as client:
            try:
                while not stopping.is_set():
                    if not await self._step(client):
                        await self._pause()
            finally:
                for task in list(self._sending):
                    task.cancel()  # their leases run out; they are sent again then
                await asyncio.gather(*self._sending, return_exceptions=True)

    async def drain(self, client: httpx.AsyncClient) -> None:
        """Fan out and send everything due now, wait for the sends, and return (for tests)."""
        while await self._step(client):
            await asyncio.gather(*self._sending, return_exceptions=True)

    async def _step(self, client: httpx.AsyncClient) -> bool:
        """Fan out and start the sends that are due; whether there was anything to do."""
        self._wake.clear()
        room = MAX_IN_FLIGHT - len(self._sending)
        lease = self._timeout + LEASE_MARGIN
        try:
            now = self._clock.now()
            fanned = await self._store.webhooks.fan_out(now)
            claimed = (
                await self._store.webhooks.claim_deliveries(self._owner, room, now, now + lease)
                if room > 0
                else []
            )
        except StoreError as exc:
            log.warning("webhook_claim_failed", extra={"error": str(exc)})
            return False
        for delivery in claimed:
            task = asyncio.create_task(self._deliver(client, delivery))
            self._sending.add(task)
            task.add_done_callback(self._sent)
        return bool(fanned or claimed)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._sending.discard(task)
        self._wake.set()  # a slot is free
        if not task.cancelled() and task.exception() is not None:
            # A bug: the delivery's lease runs out and it is tried again.
            log.error("webhook_send_crashed", exc_info=task.exception())

    async def _pause(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=self._poll)

    async def _deliver(self, client: httpx.AsyncClient, delivery: WebhookDelivery) -> None:
        fields = _fields(delivery)
        if delivery.type not in delivery.endpoint.event_types:  # unsubscribed since
            try:
                await self._store.webhooks.delivered(delivery, self._owner)
            except StoreError:
                log.exception("webhook_record_failed", extra=fields)  # the lease runs out
            return
        try:
            async with asyncio.timeout(self._timeout):
                status: int | str = await post_event(
                    client,
                    delivery.endpoint,
                    delivery.event_id,
                    delivery_body(delivery),
                    whole_seconds(self._clock),
                )
        except (DeliveryFailed, TimeoutError) as exc:
            status = "timeout" if isinstance(exc, TimeoutError) else "unreachable"
            fields["error"] = str(exc) or type(exc).__name__
        try:
            await self._record(delivery, status, fields)
        except StoreError:
            log.exception("webhook_record_failed", extra=fields)  # the lease runs out: sent again

    async def _record(
        self, delivery: WebhookDelivery, status: int | str, fields: dict[str, object]
    ) -> None:
        fields["status"] = status
        if isinstance(status, int) and 200 <= status < 300:
            await self._store.webhooks.delivered(delivery, self._owner)
            self._metrics.webhook_deliveries.labels("delivered").inc()
            log.info("webhook_delivered", extra=fields)
            return
        now = self._clock.now()
        at = self._policy.next_try(delivery.attempts, delivery.created_at, now)
        if at is None:
            await self._store.webhooks.delivered(delivery, self._owner)
            self._metrics.webhook_deliveries.labels("gave_up").inc()
            log.error("webhook_gave_up", extra=fields)
            return
        await self._store.webhooks.reschedule(delivery, self._owner, at)
        self._metrics.webhook_deliveries.labels("failed").inc()
        log.warning("webhook_failed", extra={**fields, "retry_in": round(at - now, 3)})


def _fields(delivery: WebhookDelivery) -> dict[str, object]:
    return {
        "event_id": delivery.event_id,
        "endpoint_id": delivery.endpoint.id,
        "batch_id": delivery.batch_id,
        "type": delivery.type,
        "attempts": delivery.attempts,
    }
