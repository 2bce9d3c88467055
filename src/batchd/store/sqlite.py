"""SQLite, called directly from the event loop.

Store operations are short (a claim or a group commit of a few hundred rows takes a millisecond or
two), so running them on the loop costs less than handing each to a thread: measured, a thread
added ~60 µs of CPU per request in GIL hand-offs alone. Writes go through one connection (SQLite
serialises writers anyway), reads through another.

WAL mode lets reads run beside writes; a durable transaction commits with ``synchronous=FULL`` so it
reaches the disk before the API answers, while the worker's claims and results commit without a sync
(``durable=False``). When another process holds the write lock, the transaction waits for it
asynchronously, so the loop never blocks on a lock.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

import orjson

from batchd.errors import StoreError
from batchd.store.base import Connection, Database, Row

_PLACEHOLDER = re.compile(r"\$(\d+)")
LOCK_WAIT_SECONDS = 30.0
LOCK_POLL_SECONDS = (0.001, 0.05)  # first and longest pause between tries for the write lock
CACHE_KIB = -64 * 1024  # negative: KiB; the 2 MiB default thrashes on a million-line batch
BUSY_TIMEOUT_SECONDS = 0.05
"""How long one statement may block the loop waiting on a lock (rare in WAL mode)."""
CHECKPOINT_PAGES = 10_000
"""Copy the WAL back into the database once it holds this many pages (40 MiB), not SQLite's
default 1,000: every result and claim rewrites whole pages, the same pages again and again, and a
checkpoint runs inside a commit, on the event loop, with an fsync of the WAL and of the database.
Ten times fewer checkpoints copy each hot page once where they copied it several times."""
PRAGMAS = (
    "journal_mode=WAL",
    "synchronous=NORMAL",
    f"cache_size={CACHE_KIB}",
    f"wal_autocheckpoint={CHECKPOINT_PAGES}",
)


@contextmanager
def _translated() -> Iterator[None]:
    try:
        yield
    except sqlite3.Error as exc:
        transient = isinstance(exc, sqlite3.OperationalError)  # locked, full, I/O error
        raise StoreError(f"SQLite: {exc}", transient=transient) from exc
    except OverflowError as exc:  # an integer past 64 bits, refused by the driver
        raise StoreError(f"SQLite: {exc}", transient=False) from exc


@lru_cache(maxsize=512)
def _to_sqlite(sql: str) -> str:
    return _PLACEHOLDER.sub(r"?\1", sql)


class _SqliteConnection(Connection):
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, *args: Any) -> None:
        with _translated():
            self._conn.execute(_to_sqlite(sql), args)

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        with _translated():
            self._conn.executemany(_to_sqlite(sql), rows)

    async def insert_rows(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> None:
        marks = ", ".join("?" * len(columns))
        with _translated():
            self._conn.executemany(
                f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows
            )

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        with _translated():
            rows: list[Row] = self._conn.execute(_to_sqlite(sql), args).fetchall()
        return rows


class SqliteDatabase(Database):
    dialect = "sqlite"

    def __init__(self, path: Path) -> None:
        self._path = path
        self._writer: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._write_lock = asyncio.Lock()

    def any_of(self, param: str) -> str:
        return f"IN (SELECT value FROM json_each({param}))"

    def int_array(self, values: list[int]) -> Any:
        return orjson.dumps(values).decode()

    async def open(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = self._connect()
        self._reader = self._connect()

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self._path, isolation_level=None, timeout=BUSY_TIMEOUT_SECONDS)
            conn.row_factory = sqlite3.Row
            for pragma in PRAGMAS:
                conn.execute(f"PRAGMA {pragma}")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open SQLite database {self._path}: {exc}") from exc
        return conn

    @asynccontextmanager
    async def transaction(self, *, durable: bool = True) -> AsyncIterator[Connection]:
        assert self._writer is not None, "open() first"
        writer = self._writer
        async with self._write_lock:
            connection = _SqliteConnection(writer)
            if durable:
                # In WAL mode a FULL commit also syncs every frame the NORMAL ones left behind.
                await connection.execute("PRAGMA synchronous=FULL")
            try:
                await self._begin(writer)
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

    async def _begin(self, writer: sqlite3.Connection) -> None:
        """Take the write lock, waiting without blocking the loop while another process has it."""
        pause, waited = LOCK_POLL_SECONDS[0], 0.0
        while True:
            try:
                writer.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or waited >= LOCK_WAIT_SECONDS:
                    raise StoreError(f"SQLite: {exc}") from exc
            await asyncio.sleep(pause)
            waited += pause
            pause = min(pause * 2, LOCK_POLL_SECONDS[1])

    @asynccontextmanager
    async def reader(self) -> AsyncIterator[Connection]:
        assert self._reader is not None, "open() first"
        yield _SqliteConnection(self._reader)

    async def migrate(self) -> int:
        async with self.transaction() as conn:
            return await self.apply_migrations(conn)

    def statements(self, script: str) -> list[str]:
        """sqlite3 executes one statement at a time; our migrations hold no semicolons inside
        statements, so splitting on them is exact."""
        return [s.strip() for s in script.split(";") if s.strip()]

    async def close(self) -> None:
        for conn in (self._writer, self._reader):
            if conn is not None:
                conn.close()
        self._writer = self._reader = None
