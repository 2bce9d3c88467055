"""What each project holds, counted for its quotas."""

from __future__ import annotations

from batchd.lifecycle import UNFINISHED
from batchd.store.base import Database, status_list

_UNFINISHED = status_list(UNFINISHED)  # the predicate of the index batches_unfinished_by_project


class UsageStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def unfinished_batches(self, project: str) -> tuple[int, int]:
        """How many of the project's batches are not yet finished, and the lines they hold (a
        batch still validating holds none yet)."""
        async with self.db.reader() as conn:
            rows = await conn.fetch(
                "SELECT count(*) AS n, coalesce(sum(total), 0) AS lines FROM batches "
                f"WHERE project = $1 AND status IN {_UNFINISHED}",
                project,
            )
        return int(rows[0]["n"]), int(rows[0]["lines"])

    async def stored_bytes(self, project: str) -> int:
        """The bytes of every file the project has (uploads and batch results)."""
        async with self.db.reader() as conn:
            rows = await conn.fetch(
                "SELECT coalesce(sum(bytes), 0) AS n FROM files WHERE project = $1", project
            )
        return int(rows[0]["n"])
