"""SQLite, on a thread of its own.

Every store operation runs whole on one dedicated thread with its own event loop, where the
driver's calls are plain synchronous ``sqlite3`` calls: a transaction of five statements costs one
hop between threads, not five trips through a busy event loop. Writes go through one connection
(SQLite serialises writers anyway), reads through another.

WAL mode lets reads run beside writes; a durable transaction commits with ``synchronous=FULL`` so it
reaches the disk before the API answers, while the worker's claims and results commit without a sync
(``durable=False``). Other processes on the same file wait on ``busy_timeout``.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

from batchd.errors import StoreError
from batchd.store.base import Connection, Database, Row

T = TypeVar("T")
_PLACEHOLDER = re.compile(r"\$(\d+)")
BUSY_TIMEOUT_SECONDS = 30.0


@lru_cache(maxsize=512)
def _to_sqlite(sql: str) -> str:
    return _PLACEHOLDER.sub(r"?\1", sql)


class _SqliteConnection(Connection):
    """Coroutines that never suspend: they run on the store's own thread."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, *args: Any) -> None:
        try:
            self._conn.execute(_to_sqlite(sql), args)
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite: {exc}") from exc

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        try:
            self._conn.executemany(_to_sqlite(sql), rows)
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite: {exc}") from exc

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        try:
            rows: list[Row] = self._conn.execute(_to_sqlite(sql), args).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite: {exc}") from exc
        return rows


class SqliteDatabase(Database):
    dialect = "sqlite"

    def __init__(self, path: Path) -> None:
        self._path = path
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="batchd-sqlite")
        self._writer: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._write_lock: asyncio.Lock | None = None

    async def run(self, work: Callable[[], Awaitable[T]]) -> T:
        """Run a store operation on the SQLite thread."""
        if threading.current_thread() is self._thread:
            return await work()  # already there: one operation calling another
        future = asyncio.run_coroutine_threadsafe(_call(work), self._loop)
        return await asyncio.wrap_future(future)

    async def open(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._thread.start()
        await self.run(self._connect_all)

    async def _connect_all(self) -> None:
        self._write_lock = asyncio.Lock()
        self._writer = self._connect()
        self._reader = self._connect()

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self._path, isolation_level=None, timeout=BUSY_TIMEOUT_SECONDS)
            conn.row_factory = sqlite3.Row
            for pragma in ("journal_mode=WAL", "synchronous=NORMAL"):
                conn.execute(f"PRAGMA {pragma}")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open SQLite database {self._path}: {exc}") from exc
        return conn

    @asynccontextmanager
    async def transaction(self, *, durable: bool = True) -> AsyncIterator[Connection]:
        assert self._write_lock is not None, "open() first"
        assert self._writer is not None
        writer = self._writer
        async with self._write_lock:
            connection = _SqliteConnection(writer)
            if durable:
                # In WAL mode a FULL commit also syncs every frame the NORMAL ones left behind.
                await connection.execute("PRAGMA synchronous=FULL")
            try:
                await connection.execute("BEGIN IMMEDIATE")
                try:
                    yield connection
                except BaseException:
                    writer.rollback()
                    raise
                await connection.execute("COMMIT")
            finally:
                if writer.in_transaction:
                    writer.rollback()
                if durable:
                    await connection.execute("PRAGMA synchronous=NORMAL")

    @asynccontextmanager
    async def reader(self) -> AsyncIterator[Connection]:
        assert self._reader is not None, "open() first"
        yield _SqliteConnection(self._reader)

    async def migrate(self) -> int:
        return await self.run(self._migrate)

    async def _migrate(self) -> int:
        async with self.transaction() as conn:
            return await self.apply_migrations(conn)

    def statements(self, script: str) -> list[str]:
        """sqlite3 executes one statement at a time; our migrations hold no semicolons inside
        statements, so splitting on them is exact."""
        return [s.strip() for s in script.split(";") if s.strip()]

    async def close(self) -> None:
        if not self._thread.is_alive():
            return
        await self.run(self._close_all)
        self._loop.call_soon_threadsafe(self._loop.stop)
        await asyncio.to_thread(self._thread.join)
        self._loop.close()

    async def _close_all(self) -> None:
        for conn in (self._writer, self._reader):
            if conn is not None:
                conn.close()
        self._writer = self._reader = None


async def _call(work: Callable[[], Awaitable[T]]) -> T:
    return await work()
