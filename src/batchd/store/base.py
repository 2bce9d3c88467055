"""The seam between the domain and a SQL database.

``Database`` is what each engine implements (SQLite, PostgreSQL): connections, transactions and
migrations. The queries themselves are written once, in ``sql.py``, in the SQL both engines speak,
with ``$1``-style parameters.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from importlib import resources
from typing import Any, Generic, Protocol, TypeVar

from batchd.models import BatchStatus


class Row(Protocol):
    """A result row: sqlite3.Row and asyncpg.Record both read columns by name."""

    def __getitem__(self, key: str, /) -> Any: ...


T = TypeVar("T")


class Connection(Protocol):
    async def execute(self, sql: str, *args: Any) -> None: ...

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...

    async def insert_rows(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> None:
        """Many new rows at once: ``COPY`` on PostgreSQL, an ``INSERT`` per row on SQLite."""
        ...

    async def fetch(self, sql: str, *args: Any) -> list[Row]: ...


class Database(ABC):
    """One engine's connections, and the row-locking clauses where the engine needs them
    (SQLite needs none: a write transaction holds the whole database)."""

    dialect: str
    skip_locked: str = ""
    for_update: str = ""

    row_key: str = "line"
    """The column a claim uses to name the rows its sub-select picked (within one batch)."""

    def among(self, subquery: str) -> str:
        """``IN`` the rows ``subquery`` selects, run once, however stale the planner's figures."""
        return f"IN ({subquery})"

    def any_of(self, param: str) -> str:
        """``IN`` the array of integers passed as ``param`` (made by ``int_array``)."""
        return f"= ANY({param})"

    def int_array(self, values: list[int]) -> Any:
        """A list of integers as one parameter: one statement text whatever the length."""
        return values

    @abstractmethod
    async def open(self) -> None:
        """Connect."""

    @abstractmethod
    def transaction(self, *, durable: bool = True) -> AbstractAsyncContextManager[Connection]:
        """A write transaction, committed on exit, rolled back on an exception.

        ``durable=False`` lets the engine skip the sync to disk at commit, for writes that are
        safe to lose on a power cut (not on a process crash) because they are redone: claims,
        results, and the worker's steps between a batch's statuses (leases, ``in_progress``,
        ``finalizing``, closing lines). Answers the API gives, and the terminal statuses with
        the file ids they hand out, are always durable."""

    @abstractmethod
    def reader(self) -> AbstractAsyncContextManager[Connection]:
        """A connection for reads that sees every committed write."""

    @abstractmethod
    async def migrate(self) -> int:
        """Apply the migrations not yet applied; the schema version after."""

    @abstractmethod
    async def close(self) -> None: ...

    async def apply_migrations(self, conn: Connection) -> int:
        """Apply, inside the caller's transaction, every migration not recorded as applied (not
        only those past the newest: a migration merged from another line of work may be older
        than one already applied); the newest version after."""
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY)"
        )
        rows = await conn.fetch("SELECT version FROM schema_migrations")
        applied = {int(row["version"]) for row in rows}
        for version, script in self.migrations():
            if version not in applied:
                for statement in self.statements(script):
                    await conn.execute(statement)
                await conn.execute("INSERT INTO schema_migrations VALUES ($1)", version)
                applied.add(version)
        return max(applied, default=0)

    def statements(self, script: str) -> list[str]:
        """A migration script as the statements to execute (by default, whole)."""
        return [script]

    def migrations(self) -> list[tuple[int, str]]:
        """``(version, sql)`` for every migration of this dialect, in order."""
        folder = resources.files("batchd.store") / "migrations" / self.dialect
        found = []
        for entry in folder.iterdir():
            if entry.name.endswith(".sql"):
                found.append((int(entry.name.split("_", 1)[0]), entry.read_text()))
        return sorted(found)


def status_list(statuses: frozenset[BatchStatus]) -> str:
    """A SQL list of statuses, from the lifecycle's own sets (never from input)."""
    return "(" + ", ".join(f"'{s.value}'" for s in sorted(statuses)) + ")"


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    has_more: bool
