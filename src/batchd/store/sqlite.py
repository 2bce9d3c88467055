"""SQLite: one write connection (writes are serialised, as SQLite does anyway) and one reader.

WAL mode lets the reader run beside the writer; ``synchronous=FULL`` makes each commit durable
before the API answers. Other processes on the same file wait on ``busy_timeout``.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

import aiosqlite

from batchd.errors import StoreError
from batchd.store.base import Connection, Database, Row

_PLACEHOLDER = re.compile(r"\$(\d+)")


@lru_cache(maxsize=512)
def _to_sqlite(sql: str) -> str:
    return _PLACEHOLDER.sub(r"?\1", sql)


class _SqliteConnection(Connection):
    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, *args: Any) -> None:
        await self._conn.execute(_to_sqlite(sql), args)

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        await self._conn.executemany(_to_sqlite(sql), rows)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        async with self._conn.execute(_to_sqlite(sql), args) as cursor:
            rows: list[Row] = list(await cursor.fetchall())
            return rows


class SqliteDatabase(Database):
    dialect = "sqlite"

    def __init__(self, path: Path) -> None:
        self._path = path
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._write_lock = asyncio.Lock()

    async def open(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = await self._connect()
        self._reader = await self._connect()

    async def _connect(self) -> aiosqlite.Connection:
        conn = await aiosqlite.connect(self._path, isolation_level=None, timeout=30.0)
        conn.row_factory = sqlite3.Row
        for pragma in ("journal_mode=WAL", "synchronous=FULL", "busy_timeout=30000"):
            await conn.execute(f"PRAGMA {pragma}")
        return conn

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        assert self._writer is not None, "open() first"
        async with self._write_lock:
            try:
                await self._writer.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StoreError(f"could not begin a transaction: {exc}") from exc
            try:
                yield _SqliteConnection(self._writer)
            except BaseException:
                await self._writer.execute("ROLLBACK")
                raise
            try:
                await self._writer.execute("COMMIT")
            except sqlite3.Error as exc:
                await self._writer.execute("ROLLBACK")
                raise StoreError(f"commit failed: {exc}") from exc

    @asynccontextmanager
    async def reader(self) -> AsyncIterator[Connection]:
        assert self._reader is not None, "open() first"
        yield _SqliteConnection(self._reader)

    async def migrate(self) -> int:
        async with self.transaction() as conn:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY)"
            )
            rows = await conn.fetch("SELECT max(version) AS version FROM schema_migrations")
            current = rows[0]["version"] or 0
            for version, sql in self.migrations():
                if version > current:
                    for statement in _statements(sql):
                        await conn.execute(statement)
                    await conn.execute("INSERT INTO schema_migrations VALUES ($1)", version)
                    current = version
            return int(current)

    async def close(self) -> None:
        for conn in (self._writer, self._reader):
            if conn is not None:
                await conn.close()
        self._writer = self._reader = None


def _statements(script: str) -> list[str]:
    """Our migrations hold no semicolons inside statements, so splitting on them is exact."""
    return [s.strip() for s in script.split(";") if s.strip()]
