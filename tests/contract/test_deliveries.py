"""The deliveries task against a real store of each engine, its receiver an httpx mock: a 2xx
ends a delivery, anything else reschedules it with backoff, and a day after the event it gives
up."""

from __future__ import annotations

import httpx
import pytest

from batchd.metrics import Metrics
from batchd.store import SqlStore
from batchd.webhooks import RETRY_WINDOW, DeliveryPolicy
from batchd.worker.deliveries import Deliveries
from tests.contract.test_store import NOW
from tests.contract.test_webhooks import complete, make_endpoint

pytestmark = pytest.mark.anyio


class Clock:
    def __init__(self) -> None:
        self.at = float(NOW)

    def now(self) -> float:
        return self.at


def receiver(statuses: list[int], seen: list[httpx.Request]) -> httpx.AsyncClient:
    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(statuses.pop(0) if statuses else 200)

    return httpx.AsyncClient(transport=httpx.MockTransport(answer))


def deliveries(store: SqlStore, clock: Clock, metrics: Metrics) -> Deliveries:
    return Deliveries(
        store,
        "w",
        clock,
        DeliveryPolicy(base_delay=5, max_delay=60),
        timeout=5,
        poll_interval=0.1,
        metrics=metrics,
    )


def counted(metrics: Metrics, outcome: str) -> float | None:
    return metrics.registry.get_sample_value(
        "batchd_webhook_deliveries_total", {"outcome": outcome}
    )


async def test_a_failed_try_is_tried_again_after_its_backoff(store: SqlStore) -> None:
    """A 500 reschedules the delivery 2.5 to 5 s later; then a 200 ends it."""
    endpoint = await make_endpoint(store)
    batch_id = await complete(store)
    clock, metrics, seen = Clock(), Metrics(), []
    task = deliveries(store, clock, metrics)

    async with receiver([500], seen) as client:
        await task.drain(client)
        assert len(seen) == 1 and await store.webhooks.owed() == 1
        clock.at += 2.4
        await task.drain(client)
        assert len(seen) == 1
        clock.at += 2.6
        await task.drain(client)

    assert len(seen) == 2 and await store.webhooks.owed() == 0
    assert str(seen[0].url) == endpoint.url
    assert seen[0].headers["webhook-id"] == seen[1].headers["webhook-id"]
    assert batch_id.encode() in seen[1].content
    assert counted(metrics, "failed") == 1 and counted(metrics, "delivered") == 1


async def test_a_day_after_the_event_it_gives_up(store: SqlStore) -> None:
    """A try that fails a day after the event is the last: the delivery is dropped."""
    await make_endpoint(store)
    await complete(store)
    clock, metrics, seen = Clock(), Metrics(), []
    clock.at = NOW + RETRY_WINDOW
    task = deliveries(store, clock, metrics)

    async with receiver([503], seen) as client:
        await task.drain(client)

    assert len(seen) == 1 and await store.webhooks.owed() == 0
    assert counted(metrics, "gave_up") == 1


async def test_an_unreachable_receiver_is_a_failed_try(store: SqlStore) -> None:
    """No connection is a failed try, rescheduled like a 5xx."""
    await make_endpoint(store)
    await complete(store)

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    metrics = Metrics()
    async with httpx.AsyncClient(transport=httpx.MockTransport(refuse)) as client:
        await deliveries(store, Clock(), metrics).drain(client)

    assert await store.webhooks.owed() == 1 and counted(metrics, "failed") == 1
