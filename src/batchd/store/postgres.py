"""PostgreSQL through an asyncpg pool. Claims lock rows with ``FOR UPDATE SKIP LOCKED`` so that
any number of workers can share one database."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from batchd.errors import StoreError
from batchd.store.base import Connection, Database, Row

_MIGRATION_LOCK = 0x62617463  # any constant: one migrator at a time across processes


@contextmanager
def _translated() -> Iterator[None]:
    try:
        yield
    except asyncpg.PostgresError as exc:
        transient = not str(exc.sqlstate or "").startswith(_LASTING_CLASSES)
        raise StoreError(f"PostgreSQL: {exc}", transient=transient) from exc
    except (asyncpg.InterfaceError, OSError) as exc:
        # A lost connection may pass; a value the driver cannot encode (a ValueError) will not.
        raise StoreError(f"PostgreSQL: {exc}", transient=not isinstance(exc, ValueError)) from exc
    except OverflowError as exc:  # an integer past 64 bits, refused by the driver
        raise StoreError(f"PostgreSQL: {exc}", transient=False) from exc


_LASTING_CLASSES = ("22", "23", "42")
"""SQLSTATE classes of errors that trying again would only repeat: data exceptions (a value out of
range), broken constraints, and mistakes in the statement. Any other (a lost connection, a
deadlock victim, a full disk, a server shutting down) may pass."""


class _PostgresConnection(Connection):
    """Driver errors (a deadlock victim, a lost connection) become StoreError, which callers
    treat as "roll back and try again"."""

    def __init__(self, conn: asyncpg.Connection | PoolConnectionProxy) -> None:
        self._conn = conn

    async def execute(self, sql: str, *args: Any) -> None:
        with _translated():
            await self._conn.execute(sql, *args)

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        with _translated():
            await self._conn.executemany(sql, rows)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        with _translated():
            return list(await self._conn.fetch(sql, *args))

    async def insert_rows(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> None:
        # COPY rather than an INSERT per row (3.5 µs each in the server for request rows).
        with _translated():
            await self._conn.copy_records_to_table(table, records=rows, columns=list(columns))


SESSION_SETTINGS = {"enable_bitmapscan": "off"}
"""Every query batchd makes reads a few rows by key, in key order. Right after a batch's lines
are inserted the planner's statistics do not know them, and it read "the next 512 lines" as a
bitmap scan of every remaining line of the batch plus a sort: 4 ms a claim at 20,000 lines,
growing with the batch (quadratic in all). Without bitmap scans it walks the primary key in
order and stops at the limit: 0.1-0.2 ms."""


class PostgresDatabase(Database):
    dialect = "postgres"
    skip_locked = "FOR UPDATE SKIP LOCKED"
    for_update = "FOR UPDATE"
    # A claim's rows by physical address: a TID scan of the picked rows whatever the statistics.
    # Keyed by line, a batch inserted since the last ANALYZE looked like one row, and the planner
    # re-ran the locking sub-select once per row of the batch, claiming the whole batch at once.
    # The address is stable here because the sub-select holds the rows locked.
    row_key = "ctid"

    def among(self, subquery: str) -> str:
        return f"= ANY(ARRAY({subquery}))"

    def __init__(self, dsn: str, *, min_size: int = 2, max_size: int = 10) -> None:
        self._dsn = dsn
        self._sizes = (min_size, max_size)
        self._pool: asyncpg.Pool | None = None

    async def open(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(
                self._dsn,
                min_size=self._sizes[0],
                max_size=self._sizes[1],
                server_settings=SESSION_SETTINGS,
            )
        except (OSError, asyncpg.PostgresError) as exc:
            raise StoreError(f"cannot connect to PostgreSQL: {exc}") from exc

    @asynccontextmanager
    async def transaction(self, *, durable: bool = True) -> AsyncIterator[Connection]:
        assert self._pool is not None, "open() first"
        async with self._pool.acquire() as conn, conn.transaction():
            if not durable:
                await conn.execute("SET LOCAL synchronous_commit = off")
            yield _PostgresConnection(conn)

    @asynccontextmanager
    async def reader(self) -> AsyncIterator[Connection]:
        assert self._pool is not None, "open() first"
        async with self._pool.acquire() as conn:
            yield _PostgresConnection(conn)

    async def migrate(self) -> int:
        async with self.transaction() as conn:
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
            return await self.apply_migrations(conn)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
