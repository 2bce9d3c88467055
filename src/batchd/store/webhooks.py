"""Webhooks: each project's endpoints, the outbox of events, and the deliveries owed.

    batch terminal ──same transaction──▶ webhook_events (one row per event, only while the
                                         project has an endpoint)
    fan_out ──one transaction──▶ a webhook_deliveries row per subscribed endpoint; event deleted
    claim_deliveries ──lease: due_at moves past the send──▶ delivered (row deleted)
                                                          │ or reschedule (due_at, owner cleared)
                                                          └ or give up (row deleted)

A worker killed mid-send leaves its deliveries' ``due_at`` at the end of their lease: they are
claimed again then, so every event is sent at least once.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from batchd import ids
from batchd.models import WebhookDelivery, WebhookEndpoint
from batchd.store.base import Connection, Database, Page, Row

_ENDPOINT_COLUMNS = (
    "id, project, name, url, event_types, secret, created_at, updated_at, old_secret, "
    "old_secret_until"
)
_FAN_OUT_BATCH = 100


async def record_event(conn: Connection, batch_id: str, event_type: str, now: int) -> None:
    """In ``conn``'s transaction (the one that makes the batch terminal): the event, if the
    batch's project has any webhook endpoint; nothing otherwise."""
    await conn.execute(
        "INSERT INTO webhook_events (id, project, type, batch_id, created_at) "
        "SELECT $1, b.project, $2, b.id, $3 FROM batches b WHERE b.id = $4 "
        "AND EXISTS (SELECT 1 FROM webhook_endpoints e WHERE e.project = b.project)",
        ids.event_id(),
        event_type,
        now,
        batch_id,
    )


class WebhookStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- endpoints -------------------------------------------------------------------------

    async def insert_endpoint(self, endpoint: WebhookEndpoint) -> None:
        async with self.db.transaction() as conn:
            await conn.execute(
                f"INSERT INTO webhook_endpoints ({_ENDPOINT_COLUMNS}) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                *_endpoint_values(endpoint),
            )

    async def get_endpoint(self, project: str, endpoint_id: str) -> WebhookEndpoint | None:
        async with self.db.reader() as conn:
            rows = await conn.fetch(
                f"SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE project = $1 AND id = $2",
                project,
                endpoint_id,
            )
        return _endpoint(rows[0]) if rows else None

    async def list_endpoints(
        self, project: str, *, limit: int, after: str | None
    ) -> Page[WebhookEndpoint]:
        """Newest first."""
        cursor = ""
        args: list[object] = [project]
        if after is not None:
            args.append(after)
            cursor = "AND seq < (SELECT seq FROM webhook_endpoints WHERE id = $2 AND project = $1)"
        async with self.db.reader() as conn:
            rows = await conn.fetch(
                f"SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE project = $1 {cursor} "
                f"ORDER BY seq DESC LIMIT {int(limit) + 1}",
                *args,
            )
        return Page([_endpoint(r) for r in rows[:limit]], has_more=len(rows) > limit)

    async def update_endpoint(self, endpoint: WebhookEndpoint) -> None:
        """Write every field of the endpoint but its id, project and creation time."""
        async with self.db.transaction() as conn:
            await conn.execute(
                "UPDATE webhook_endpoints SET name = $1, url = $2, event_types = $3, "
                "secret = $4, updated_at = $5, old_secret = $6, old_secret_until = $7 "
                "WHERE id = $8 AND project = $9",
                endpoint.name,
                endpoint.url,
                _json(endpoint.event_types),
                endpoint.secret,
                endpoint.updated_at,
                endpoint.old_secret,
                endpoint.old_secret_until,
                endpoint.id,
                endpoint.project,
            )

    async def delete_endpoint(self, project: str, endpoint_id: str) -> bool:
        """Delete the endpoint and every delivery still owed to it; whether it existed."""
        async with self.db.transaction() as conn:
            rows = await conn.fetch(
                "DELETE FROM webhook_endpoints WHERE project = $1 AND id = $2 RETURNING id",
                project,
                endpoint_id,
            )
            await conn.execute("DELETE FROM webhook_deliveries WHERE endpoint_id = $1", endpoint_id)
        return bool(rows)

    # -- the outbox ------------------------------------------------------------------------

    async def fan_out(self, now: float) -> int:
        """Turn up to a hundred events into deliveries, one per endpoint of the event's
        project subscribed to its type (none: the event is dropped); how many events."""
        async with self.db.reader() as conn:
            if not await conn.fetch("SELECT 1 FROM webhook_events LIMIT 1"):
                return 0
        async with self.db.transaction() as conn:
            events = await conn.fetch(
                "SELECT id, project, type, batch_id, created_at FROM webhook_events "
                f"ORDER BY seq LIMIT {_FAN_OUT_BATCH} {self.db.skip_locked}"
            )
            for event in events:
                await _fan_out_one(conn, event, now)
        return len(events)

    async def claim_deliveries(
        self, owner: str, limit: int, now: float, until: float
    ) -> list[WebhookDelivery]:
        """Lease up to ``limit`` deliveries that are due (their next try, or a lapsed lease),
        with their endpoints as they are now."""
        async with self.db.reader() as conn:
            if not await conn.fetch(
                "SELECT 1 FROM webhook_deliveries WHERE due_at <= $1 LIMIT 1", now
            ):
                return []
        async with self.db.transaction(durable=False) as conn:
            picked = await conn.fetch(
                "SELECT seq FROM webhook_deliveries WHERE due_at <= $1 "
                f"ORDER BY due_at LIMIT {int(limit)} {self.db.skip_locked}",
                now,
            )
            if not picked:
                return []
            seqs = self.db.int_array([r["seq"] for r in picked])
            await conn.execute(  # owed to an endpoint deleted while its event was fanned out
                f"DELETE FROM webhook_deliveries WHERE seq {self.db.any_of('$1')} AND NOT EXISTS "
                "(SELECT 1 FROM webhook_endpoints e WHERE e.id = webhook_deliveries.endpoint_id)",
                seqs,
            )
            rows = await conn.fetch(
                "UPDATE webhook_deliveries SET lease_owner = $1, due_at = $2, "
                f"attempts = attempts + 1 WHERE seq {self.db.any_of('$3')} "
                "RETURNING event_id, endpoint_id, type, batch_id, created_at, attempts",
                owner,
                until,
                seqs,
            )
            endpoints = await conn.fetch(
                f"SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints "
                f"WHERE id IN (SELECT endpoint_id FROM webhook_deliveries "
                f"WHERE seq {self.db.any_of('$1')})",
                seqs,
            )
        by_id = {row["id"]: _endpoint(row) for row in endpoints}
        return [_delivery(row, by_id[row["endpoint_id"]]) for row in rows]

    async def delivered(self, delivery: WebhookDelivery, owner: str) -> None:
        """The delivery is done (sent, or given up): forget it."""
        async with self.db.transaction() as conn:
            await conn.execute(
                "DELETE FROM webhook_deliveries WHERE event_id = $1 AND endpoint_id = $2 "
                "AND lease_owner = $3",
                delivery.event_id,
                delivery.endpoint.id,
                owner,
            )

    async def reschedule(self, delivery: WebhookDelivery, owner: str, at: float) -> None:
        """Try the delivery again at ``at`` (unless another worker holds it now)."""
        async with self.db.transaction(durable=False) as conn:
            await conn.execute(
                "UPDATE webhook_deliveries SET due_at = $1, lease_owner = NULL "
                "WHERE event_id = $2 AND endpoint_id = $3 AND lease_owner = $4",
                at,
                delivery.event_id,
                delivery.endpoint.id,
                owner,
            )

    async def owed(self) -> int:
        """Deliveries not yet made or given up, and events not yet fanned out."""
        async with self.db.reader() as conn:
            rows = await conn.fetch(
                "SELECT (SELECT count(*) FROM webhook_deliveries) "
                "+ (SELECT count(*) FROM webhook_events) AS n"
            )
        return int(rows[0]["n"])


async def _fan_out_one(conn: Connection, event: Row, now: float) -> None:
    endpoints = await conn.fetch(
        "SELECT id, event_types FROM webhook_endpoints WHERE project = $1", event["project"]
    )
    subscribed = [e["id"] for e in endpoints if event["type"] in orjson.loads(e["event_types"])]
    await conn.executemany(
        "INSERT INTO webhook_deliveries (event_id, endpoint_id, type, batch_id, created_at, "
        "due_at) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (event_id, endpoint_id) DO NOTHING",
        [
            (event["id"], endpoint_id, event["type"], event["batch_id"], event["created_at"], now)
            for endpoint_id in subscribed
        ],
    )
    await conn.execute("DELETE FROM webhook_events WHERE id = $1", event["id"])


def _json(values: Sequence[str]) -> str:
    return orjson.dumps(list(values)).decode()


def _endpoint_values(endpoint: WebhookEndpoint) -> tuple[object, ...]:
    return (
        endpoint.id,
        endpoint.project,
        endpoint.name,
        endpoint.url,
        _json(endpoint.event_types),
        endpoint.secret,
        endpoint.created_at,
        endpoint.updated_at,
        endpoint.old_secret,
        endpoint.old_secret_until,
    )


def _endpoint(row: Row) -> WebhookEndpoint:
    return WebhookEndpoint(
        id=row["id"],
        project=row["project"],
        name=row["name"],
        url=row["url"],
        event_types=tuple(orjson.loads(row["event_types"])),
        secret=row["secret"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        old_secret=row["old_secret"],
        old_secret_until=row["old_secret_until"],
    )


def _delivery(row: Row, endpoint: WebhookEndpoint) -> WebhookDelivery:
    return WebhookDelivery(
        event_id=row["event_id"],
        type=row["type"],
        batch_id=row["batch_id"],
        created_at=row["created_at"],
        attempts=row["attempts"],
        endpoint=endpoint,
    )
