"""The metadata store, chosen by URL: ``sqlite:///PATH`` or ``postgresql://…``."""

from __future__ import annotations

from pathlib import Path

from batchd.errors import ConfigurationError
from batchd.store.base import Database, Page
from batchd.store.sql import FinishedLine, SqlStore

__all__ = ["Database", "FinishedLine", "Page", "SqlStore", "open_store"]


async def open_store(url: str, *, migrate: bool = True) -> SqlStore:
    database = _database_for(url)
    await database.open()
    if migrate:
        await database.migrate()
    return SqlStore(database)


def _database_for(url: str) -> Database:
    if url.startswith("sqlite:///"):
        from batchd.store.sqlite import SqliteDatabase

        return SqliteDatabase(Path(url.removeprefix("sqlite:///")))
    if url.startswith(("postgresql://", "postgres://")):
        from batchd.store.postgres import PostgresDatabase

        return PostgresDatabase(url)
    raise ConfigurationError(
        f"unsupported database URL {url!r}: use sqlite:///PATH or postgresql://"
    )
