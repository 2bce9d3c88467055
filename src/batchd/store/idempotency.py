"""Idempotency keys: which object a client's key made, and from what parameters."""

from __future__ import annotations

from batchd.models import Remembered
from batchd.store.base import Connection, Database, Row

_COLUMNS = "operation, key, fingerprint, object_id, created_at"


class IdempotencyStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def find(self, project: str, operation: str, key: str, since: int) -> Remembered | None:
        """What ``key`` made for ``operation`` in ``project`` at ``since`` or later."""
        async with self.db.reader() as conn:
            rows = await conn.fetch(
                f"SELECT {_COLUMNS} FROM idempotency_keys WHERE project = $1 AND operation = $2 "
                "AND key = $3 AND created_at >= $4",
                project,
                operation,
                key,
                since,
            )
        return _remembered(rows[0]) if rows else None

    async def forget_before(self, before: int) -> None:
        async with self.db.transaction() as conn:
            await conn.execute("DELETE FROM idempotency_keys WHERE created_at < $1", before)


async def remember(conn: Connection, project: str, made: Remembered, since: int) -> bool:
    """Record what ``made.key`` made, in ``conn``'s transaction, unless the key made something
    at ``since`` or later; whether it was recorded (an older record is replaced)."""
    rows = await conn.fetch(
        f"INSERT INTO idempotency_keys (project, {_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6) "
        "ON CONFLICT (project, operation, key) DO UPDATE SET fingerprint = excluded.fingerprint, "
        "object_id = excluded.object_id, created_at = excluded.created_at "
        "WHERE idempotency_keys.created_at < $7 RETURNING key",
        project,
        made.operation,
        made.key,
        made.fingerprint,
        made.object_id,
        made.created_at,
        since,
    )
    return bool(rows)


def _remembered(row: Row) -> Remembered:
    return Remembered(
        operation=row["operation"],
        key=row["key"],
        fingerprint=row["fingerprint"],
        object_id=row["object_id"],
        created_at=row["created_at"],
    )
