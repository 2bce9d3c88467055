"""The webhook outbox, for both engines: an event is written with the terminal status that
causes it, fanned out to the subscribed endpoints, and each delivery is leased to one worker at
a time until it is delivered or given up."""

from __future__ import annotations

from dataclasses import replace

import pytest

from batchd import ids
from batchd.models import BatchStatus, LineError, WebhookEndpoint
from batchd.store import SqlStore
from tests.contract.test_store import LEASE, NOW, make_batch, make_running_batch

pytestmark = pytest.mark.anyio

ALL = ("batch.completed", "batch.failed", "batch.expired", "batch.cancelled")


async def make_endpoint(store: SqlStore, **overrides: object) -> WebhookEndpoint:
    values: dict[str, object] = {
        "id": ids.webhook_endpoint_id(),
        "project": "default",
        "name": "hook",
        "url": "http://127.0.0.1:9/hook",
        "event_types": ALL,
        "secret": "whsec_c2VjcmV0",
        "created_at": NOW,
        "updated_at": NOW,
    }
    endpoint = WebhookEndpoint(**{**values, **overrides})  # type: ignore[arg-type]
    await store.webhooks.insert_endpoint(endpoint)
    return endpoint


async def complete(store: SqlStore, project: str = "default") -> str:
    batch = await make_running_batch(store, project=project)
    claimed = await store.claim_batch_to_finalize("w", NOW + 2 * 86_400, NOW + 2 * 86_400 + LEASE)
    assert claimed is not None and claimed.id == batch.id
    assert await store.finish_batch(batch.id, "w", BatchStatus.EXPIRED, NOW, None, None)
    return batch.id


async def test_an_ended_batch_is_delivered_to_each_subscribed_endpoint(store: SqlStore) -> None:
    """finish_batch writes the event; fan_out makes one delivery per subscribed endpoint of the
    project; a claim hands them out with the endpoints."""
    first = await make_endpoint(store)
    await make_endpoint(store, event_types=("batch.completed",))  # not subscribed to expired
    await make_endpoint(store, project="other")
    batch_id = await complete(store)

    assert await store.webhooks.fan_out(NOW) == 1
    claimed = await store.webhooks.claim_deliveries("w1", 10, NOW, NOW + LEASE)

    assert [(d.type, d.batch_id, d.endpoint.id) for d in claimed] == [
        ("batch.expired", batch_id, first.id)
    ]
    assert claimed[0].event_id.startswith("evt_") and claimed[0].attempts == 1
    assert await store.webhooks.fan_out(NOW) == 0


async def test_no_event_without_an_endpoint(store: SqlStore) -> None:
    """A project with no endpoint leaves nothing in the outbox."""
    await make_endpoint(store, project="other")
    await complete(store)

    assert await store.webhooks.owed() == 0


async def test_a_failed_validation_is_an_event(store: SqlStore) -> None:
    """fail_validation writes ``batch.failed`` in its transaction."""
    await make_endpoint(store)
    batch = await make_batch(store)
    assert await store.claim_batch_to_validate("v", NOW, NOW + LEASE) is not None
    await store.fail_validation(batch.id, "v", [LineError("invalid", "bad")], NOW)

    await store.webhooks.fan_out(NOW)
    claimed = await store.webhooks.claim_deliveries("w", 10, NOW, NOW + LEASE)
    assert [(d.type, d.batch_id) for d in claimed] == [("batch.failed", batch.id)]


async def test_a_cancel_during_validation_is_a_cancelled_event(store: SqlStore) -> None:
    """A batch cancelled while it validated ends ``cancelled``, and says so."""
    await make_endpoint(store)
    batch = await make_batch(store)
    assert await store.claim_batch_to_validate("v", NOW, NOW + LEASE) is not None
    await store.request_cancel(batch.id, "default", NOW)
    await store.fail_validation(batch.id, "v", [LineError("invalid", "bad")], NOW)

    await store.webhooks.fan_out(NOW)
    claimed = await store.webhooks.claim_deliveries("w", 10, NOW, NOW + LEASE)
    assert [d.type for d in claimed] == ["batch.cancelled"]


async def test_a_lease_hands_a_delivery_to_one_worker_until_it_lapses(store: SqlStore) -> None:
    """A claimed delivery is not claimed again while leased; once the lease ends it is, with
    one more attempt counted."""
    await make_endpoint(store)
    await complete(store)
    await store.webhooks.fan_out(NOW)
    assert len(await store.webhooks.claim_deliveries("w1", 10, NOW, NOW + LEASE)) == 1

    assert await store.webhooks.claim_deliveries("w2", 10, NOW + 1, NOW + LEASE) == []
    again = await store.webhooks.claim_deliveries("w2", 10, NOW + LEASE + 1, NOW + 2 * LEASE)
    assert [d.attempts for d in again] == [2]


async def test_reschedule_and_delivered(store: SqlStore) -> None:
    """A rescheduled delivery is due at its time; a delivered one is gone; a worker whose lease
    was taken over changes nothing."""
    await make_endpoint(store)
    await complete(store)
    await store.webhooks.fan_out(NOW)
    (delivery,) = await store.webhooks.claim_deliveries("w1", 10, NOW, NOW + LEASE)

    await store.webhooks.reschedule(delivery, "w1", NOW + 5)
    assert await store.webhooks.claim_deliveries("w1", 10, NOW + 4, NOW + LEASE) == []
    (again,) = await store.webhooks.claim_deliveries("w2", 10, NOW + 5, NOW + LEASE)
    await store.webhooks.delivered(delivery, "w1")  # w1 no longer holds it
    assert await store.webhooks.owed() == 1

    await store.webhooks.delivered(again, "w2")
    assert await store.webhooks.owed() == 0


async def test_deleting_an_endpoint_drops_its_deliveries(store: SqlStore) -> None:
    """Nothing more is sent to a deleted endpoint."""
    endpoint = await make_endpoint(store)
    await complete(store)
    await store.webhooks.fan_out(NOW)

    assert await store.webhooks.delete_endpoint("default", endpoint.id)
    assert await store.webhooks.claim_deliveries("w", 10, NOW, NOW + LEASE) == []
    assert await store.webhooks.owed() == 0


async def test_endpoints_are_per_project(store: SqlStore) -> None:
    """Get, list, update and delete see only the project's own endpoints, newest first."""
    first = await make_endpoint(store)
    second = await make_endpoint(store)
    other = await make_endpoint(store, project="other")

    page = await store.webhooks.list_endpoints("default", limit=1, after=None)
    assert [e.id for e in page.items] == [second.id] and page.has_more
    page = await store.webhooks.list_endpoints("default", limit=5, after=second.id)
    assert [e.id for e in page.items] == [first.id] and not page.has_more
    assert await store.webhooks.get_endpoint("default", other.id) is None
    assert not await store.webhooks.delete_endpoint("default", other.id)

    renamed = replace(first, name="renamed", secret="whsec_bmV3", updated_at=NOW + 1)
    await store.webhooks.update_endpoint(renamed)
    assert await store.webhooks.get_endpoint("default", first.id) == renamed
