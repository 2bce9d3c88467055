"""API keys in the store: rows of hashes, looked up by hash, never by the key itself."""

from __future__ import annotations

from batchd.models import ManagedKey
from batchd.store.base import Database, Row

_COLUMNS = "id, project, name, prefix, created_at, revoked_at"


class KeyStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def insert(self, key: ManagedKey, key_hash: str) -> None:
        async with self.db.transaction() as conn:
            await conn.execute(
                f"INSERT INTO api_keys ({_COLUMNS}, hash) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                key.id,
                key.project,
                key.name,
                key.prefix,
                key.created_at,
                key.revoked_at,
                key_hash,
            )

    async def project_of(self, key_hash: str) -> str | None:
        """The project of the unrevoked key with this hash (one lookup in a unique index)."""
        async with self.db.reader() as conn:
            rows = await conn.fetch(
                "SELECT project FROM api_keys WHERE hash = $1 AND revoked_at IS NULL", key_hash
            )
        return str(rows[0]["project"]) if rows else None

    async def find(self, key_hash: str) -> ManagedKey | None:
        """The key with this hash, revoked or not."""
        async with self.db.reader() as conn:
            rows = await conn.fetch(f"SELECT {_COLUMNS} FROM api_keys WHERE hash = $1", key_hash)
        return _key(rows[0]) if rows else None

    async def list(self, project: str | None = None) -> list[ManagedKey]:
        """Every key (of ``project``, when given), oldest first, revoked ones included."""
        where, args = ("WHERE project = $1", [project]) if project is not None else ("", [])
        async with self.db.reader() as conn:
            rows = await conn.fetch(
                f"SELECT {_COLUMNS} FROM api_keys {where} ORDER BY created_at, id", *args
            )
        return [_key(r) for r in rows]

    async def revoke(self, key_id: str, now: int) -> ManagedKey | None:
        """Revoke the key (a revoked one keeps its first ``revoked_at``); the key after, or None
        when there is no such key."""
        async with self.db.transaction() as conn:
            rows = await conn.fetch(
                "UPDATE api_keys SET revoked_at = coalesce(revoked_at, $1) WHERE id = $2 "
                f"RETURNING {_COLUMNS}",
                now,
                key_id,
            )
        return _key(rows[0]) if rows else None

    async def count_active(self) -> int:
        async with self.db.reader() as conn:
            rows = await conn.fetch("SELECT count(*) AS n FROM api_keys WHERE revoked_at IS NULL")
        return int(rows[0]["n"])


def _key(row: Row) -> ManagedKey:
    return ManagedKey(
        id=row["id"],
        project=row["project"],
        name=row["name"],
        prefix=row["prefix"],
        created_at=row["created_at"],
        revoked_at=row["revoked_at"],
    )
