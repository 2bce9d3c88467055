"""Every query batchd makes, written once for SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

import orjson

from batchd.lifecycle import CANCELLABLE, DISPATCHABLE, TIMESTAMP_FIELD
from batchd.models import (
    TERMINAL,
    Batch,
    BatchStatus,
    ClaimedRequest,
    IndexedLine,
    LineError,
    Remembered,
    RequestResult,
    RequestState,
    ResultPart,
    StoredFile,
    UpstreamStatus,
    Usage,
)
from batchd.store.base import Connection, Database, Page, Row
from batchd.store.base import status_list as _statuses
from batchd.store.idempotency import IdempotencyStore, remember
from batchd.store.keys import KeyStore
from batchd.store.usage import UsageStore
from batchd.store.webhooks import WebhookStore, record_event

_FILE_COLUMNS = "id, project, purpose, filename, bytes, created_at, expires_at, blob_key"
_LINE_COLUMNS = "line, custom_id, byte_offset, byte_length"  # what a claim hands out
_RESULT_COLUMNS = "line, state, result, part, part_offset, part_length"
_PAGE_OF_RESULTS = 1000
_DROP_CHUNK = 5000
_LINE_STATES = {state.value: state for state in RequestState}
_BATCH_AND_LINE = attrgetter("batch_id", "line")


@dataclass(slots=True)
class FinishedLine:
    """A line's outcome: its output or error line in ``result``, or at ``part_offset`` in the
    result part ``part`` (``part_length`` bytes with its newline); neither for a line skipped
    (expired, cancelled) or still pending."""

    line: int
    custom_id: str
    state: RequestState
    result: bytes | None
    part: int | None = None
    part_offset: int = 0
    part_length: int = 0


class SqlStore:
    """The metadata store. Holds no state of its own: any number of processes may share it."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.idempotency = IdempotencyStore(db)
        self.keys = KeyStore(db)
        self.usage = UsageStore(db)
        self.webhooks = WebhookStore(db)

    async def close(self) -> None:
        await self.db.close()

    # -- files -----------------------------------------------------------------------------

    async def insert_file(self, file: StoredFile) -> None:
        async with self.db.transaction() as conn:
            await _insert_file(conn, file)

    async def get_file(self, project: str, file_id: str) -> StoredFile | None:
        async with self.db.reader() as conn:
            rows = await conn.fetch(
                f"SELECT {_FILE_COLUMNS} FROM files WHERE project = $1 AND id = $2",
                project,
                file_id,
            )
        return _file(rows[0]) if rows else None

    async def list_files(
        self, project: str, *, purpose: str | None, limit: int, ascending: bool, after: str | None
    ) -> Page[StoredFile]:
        where, args = ["project = $1"], [project]
        if purpose is not None:
            args.append(purpose)
            where.append(f"purpose = ${len(args)}")
        if after is not None:
            args.append(after)
            op = ">" if ascending else "<"
            where.append(
                f"seq {op} (SELECT seq FROM files WHERE id = ${len(args)} AND project = $1)"
            )
        order = "ASC" if ascending else "DESC"
        sql = (
            f"SELECT {_FILE_COLUMNS} FROM files WHERE {' AND '.join(where)} "
            f"ORDER BY seq {order} LIMIT {int(limit) + 1}"
        )
        async with self.db.reader() as conn:
            rows = await conn.fetch(sql, *args)
        return Page([_file(r) for r in rows[:limit]], has_more=len(rows) > limit)

    async def delete_file(self, project: str, file_id: str) -> StoredFile | None:
        async with self.db.transaction() as conn:
            rows = await conn.fetch(
                f"DELETE FROM files WHERE project = $1 AND id = $2 RETURNING {_FILE_COLUMNS}",
                project,
                file_id,
            )
        return _file(rows[0]) if rows else None

    async def expired_files(self, now: int, limit: int) -> list[StoredFile]:
        """Files past their ``expires_at`` that no unfinished batch still reads."""
        async with self.db.reader() as conn:
            rows = await conn.fetch(
                f"SELECT {_FILE_COLUMNS} FROM files WHERE expires_at IS NOT NULL "
                "AND expires_at <= $1 AND NOT EXISTS (SELECT 1 FROM batches b "
                f"WHERE b.input_file_id = files.id AND b.status NOT IN {_statuses(TERMINAL)}) "
                f"ORDER BY expires_at LIMIT {int(limit)}",
                now,
            )
        return [_file(r) for r in rows]

    async def file_exists(self, file_id: str) -> bool:
        """Whether any project has a file of this id."""
        async with self.db.reader() as conn:
            rows = await conn.fetch("SELECT 1 FROM files WHERE id = $1", file_id)
        return bool(rows)

    async def blob_in_use(self, file_id: str) -> bool:
        """Whether an unfinished batch still reads this file."""
        async with self.db.reader() as conn:
            rows = await conn.fetch(
                "SELECT 1 FROM batches WHERE input_file_id = $1 "
                f"AND status NOT IN {_statuses(TERMINAL)} LIMIT 1",
                file_id,
            )
        return bool(rows)

    # -- batches ---------------------------------------------------------------------------

    async def insert_batch(
        self, batch: Batch, made: Remembered | None = None, *, since: int = 0
    ) -> bool:
        """Insert the batch; with ``made``, only if its idempotency key made nothing at ``since``
        or later, and the key is recorded with it. Whether it was inserted."""
        async with self.db.transaction() as conn:
            if made is not None and not await remember(conn, batch.project, made, since):
                return False
            await conn.execute(
                "INSERT INTO batches (id, project, endpoint, input_file_id, completion_window, "
                "status, created_at, expires_at, metadata, output_expires_after) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                batch.id,
                batch.project,
                batch.endpoint,
                batch.input_file_id,
                batch.completion_window,
                batch.status.value,
                batch.created_at,
                batch.expires_at,
                _json_or_none(batch.metadata),
                batch.output_expires_after,
            )
        return True

    async def get_batch(self, batch_id: str, project: str | None = None) -> Batch | None:
        """The batch, or None when it does not exist or belongs to another project."""
        async with self.db.reader() as conn:
            rows = await conn.fetch("SELECT * FROM batches WHERE id = $1", batch_id)
        if not rows or (project is not None and rows[0]["project"] != project):
            return None
        return _batch(rows[0])

    async def list_batches(self, project: str, *, limit: int, after: str | None) -> Page[Batch]:
        args: list[Any] = [project]
        cursor = ""
        if after is not None:
            args.append(after)
            cursor = "AND seq < (SELECT seq FROM batches WHERE id = $2 AND project = $1)"
        sql = (
            f"SELECT * FROM batches WHERE project = $1 {cursor} "
            f"ORDER BY seq DESC LIMIT {int(limit) + 1}"
        )
        async with self.db.reader() as conn:
            rows = await conn.fetch(sql, *args)
        return Page([_batch(r) for r in rows[:limit]], has_more=len(rows) > limit)

    async def request_cancel(self, batch_id: str, project: str, now: int) -> Batch | None:
        """Move a validating or running batch to ``cancelling``; the batch as it stands after."""
        async with self.db.transaction() as conn:
            await conn.execute(
                "UPDATE batches SET status = 'cancelling', cancelling_at = $1 "
                f"WHERE id = $2 AND project = $3 AND status IN {_statuses(CANCELLABLE)}",
                now,
                batch_id,
                project,
            )
        return await self.get_batch(batch_id, project)

    # -- the worker: whole-batch phases, each under a lease on the batch row -----------------

    async def claim_batch_to_validate(self, owner: str, now: float, until: float) -> Batch | None:
        return await self._claim_batch(
            "status = 'validating' AND (lease_until IS NULL OR lease_until < $1)",
            owner,
            now,
            until,
        )

    async def claim_batch_to_finalize(self, owner: str, now: float, until: float) -> Batch | None:
        """A batch with nothing left to run: all lines done, cancelled, or past its window."""
        return await self._claim_batch(
            "(lease_until IS NULL OR lease_until < $1) AND ("
            " status = 'finalizing'"
            " OR (status = 'in_progress' AND (completed + failed >= total OR expires_at <= $1))"
            " OR (status = 'cancelling'"
            "     AND NOT EXISTS (SELECT 1 FROM spans s"
            "      WHERE s.batch_id = batches.id AND s.lease_until >= $1)"
            "     AND NOT EXISTS (SELECT 1 FROM retries t"
            "      WHERE t.batch_id = batches.id AND t.lease_until >= $1)))",
            owner,
            now,
            until,
        )

    async def _claim_batch(
        self, condition: str, owner: str, now: float, until: float
    ) -> Batch | None:
        # Looked for first without the write lock: the finalizer asks after every group commit,
        # and nearly always there is nothing to claim.
        async with self.db.reader() as conn:
            if not await conn.fetch(f"SELECT 1 FROM batches WHERE {condition} LIMIT 1", now):
                return None
        async with self.db.transaction(durable=False) as conn:
            rows = await conn.fetch(
                f"SELECT id FROM batches WHERE {condition} ORDER BY seq LIMIT 1 "
                f"{self.db.skip_locked}",
                now,
            )
            if not rows:
                return None
            claimed = await conn.fetch(
                "UPDATE batches SET lease_owner = $1, lease_until = $2 WHERE id = $3 RETURNING *",
                owner,
                until,
                rows[0]["id"],
            )
        return _batch(claimed[0])

    async def renew_batch_lease(self, batch_id: str, owner: str, until: float) -> None:
        async with self.db.transaction(durable=False) as conn:
            await conn.execute(
                "UPDATE batches SET lease_until = $1 WHERE id = $2 AND lease_owner = $3",
                until,
                batch_id,
                owner,
            )

    async def clear_requests(self, batch_id: str) -> None:
        async with self.db.transaction(durable=False) as conn:
            await _forget_lines(conn, batch_id)

    async def add_requests(self, batch_id: str, lines: Sequence[IndexedLine]) -> None:
        async with self.db.transaction(durable=False) as conn:
            await conn.insert_rows(
                "requests",
                ("batch_id", "line", "custom_id", "byte_offset", "byte_length"),
                [(batch_id, *line) for line in lines],
            )

    async def start_batch(
        self, batch_id: str, owner: str, total: int, model: str, now: int
    ) -> None:
        """Validation passed: set the total and start running (unless cancelled meanwhile)."""
        async with self.db.transaction(durable=False) as conn:
            await conn.execute(
                "UPDATE batches SET total = $1, model = $2, "
                "in_progress_at = CASE WHEN status = 'validating' THEN $3 ELSE in_progress_at END, "
                "status = CASE WHEN status = 'validating' THEN 'in_progress' ELSE status END, "
                "lease_owner = NULL, lease_until = NULL WHERE id = $4 AND lease_owner = $5",
                total,
                model,
                now,
                batch_id,
                owner,
            )

    async def fail_validation(
        self,
        batch_id: str,
        owner: str,
        errors: Sequence[LineError],
        now: int,
        total: int | None = None,
    ) -> None:
        """The input is bad: ``failed`` with the reasons kept and how many were found in all
        (``total``, by default as many as kept); ``cancelled`` if cancelled meanwhile."""
        async with self.db.transaction() as conn:
            await _forget_lines(conn, batch_id)
            ended = await conn.fetch(
                "UPDATE batches SET errors = $1, "
                "failed_at = CASE WHEN status = 'validating' THEN $2 ELSE failed_at END, "
                "cancelled_at = CASE WHEN status = 'cancelling' THEN $2 ELSE cancelled_at END, "
                "status = CASE WHEN status = 'cancelling' THEN 'cancelled' ELSE 'failed' END, "
                "lease_owner = NULL, lease_until = NULL WHERE id = $3 AND lease_owner = $4 "
                "RETURNING status",
                orjson.dumps(
                    {"data": [e.__dict__ for e in errors], "total": total or len(errors)}
                ).decode(),
                now,
                batch_id,
                owner,
            )
            if ended:
                await record_event(conn, batch_id, f"batch.{ended[0]['status']}", now)

    # -- the worker: requests ----------------------------------------------------------------

    async def dispatchable_batches(self, now: int) -> list[Batch]:
        """Running batches with lines still pending, oldest first."""
        async with self.db.reader() as conn:
            rows = await conn.fetch(
                f"SELECT * FROM batches WHERE status IN {_statuses(DISPATCHABLE)} "
                "AND expires_at > $1 "
                "AND completed + failed < total ORDER BY seq",
                now,
            )
        return [_batch(r) for r in rows]

    async def claim_requests(
        self, batch_id: str, owner: str, limit: int, now: float, until: float
    ) -> list[ClaimedRequest]:
        """Lease up to about ``limit`` lines, in line order within each kind: lines due to be
        tried again first; else a span whose worker stopped renewing its lease; else a new span of
        lines never claimed."""
        async with self.db.transaction(durable=False) as conn:
            claims = await self._claim_retries(conn, batch_id, owner, limit, now, until)
            if not claims:
                claims = await self._claim_lapsed_span(conn, batch_id, owner, now, until)
            if not claims:
                claims = await self._claim_new_span(conn, batch_id, owner, limit, until)
        return claims

    async def _claim_retries(
        self, conn: Connection, batch_id: str, owner: str, limit: int, now: float, until: float
    ) -> list[ClaimedRequest]:
        key = self.db.row_key
        leased = await conn.fetch(
            "UPDATE retries SET lease_owner = $1, lease_until = $2, attempts = attempts + 1 "
            f"WHERE batch_id = $3 AND {key} "
            + self.db.among(
                f"SELECT {key} FROM retries WHERE batch_id = $3"
                " AND (lease_owner IS NULL OR (lease_until < $4 AND lease_owner <> $1))"
                " AND (not_before IS NULL OR not_before <= $4)"
                f" ORDER BY line LIMIT {int(limit)} {self.db.skip_locked}"
            )
            + " RETURNING line, attempts",
            owner,
            until,
            batch_id,
            now,
        )
        if not leased:
            return []
        attempts = {r["line"]: r["attempts"] for r in leased}
        rows = await conn.fetch(
            f"SELECT {_LINE_COLUMNS} FROM requests "
            f"WHERE batch_id = $1 AND line {self.db.any_of('$2')} ORDER BY line",
            batch_id,
            self.db.int_array(sorted(attempts)),
        )
        return [_claimed(batch_id, r, attempts[r["line"]], None) for r in rows]

    async def _claim_lapsed_span(
        self, conn: Connection, batch_id: str, owner: str, now: float, until: float
    ) -> list[ClaimedRequest]:
        """Take over a span of another worker that stopped renewing it: its lines that are
        neither finished nor moved to retries. Never one of the claimant's own: its lease lapsed
        only because renewals failed (the store away), and the worker may still hold answers of
        its lines, waiting to be committed; taking it over would send them again."""
        spans = await conn.fetch(
            "UPDATE spans SET lease_owner = $1, lease_until = $2 WHERE batch_id = $3 "
            "AND first_line = (SELECT first_line FROM spans WHERE batch_id = $3 "
            "AND lease_until < $4 AND lease_owner <> $1 "
            f"ORDER BY first_line LIMIT 1 {self.db.skip_locked}) "
            "RETURNING first_line, last_line",
            owner,
            until,
            batch_id,
            now,
        )
        if not spans:
            return []
        first, last = spans[0]["first_line"], spans[0]["last_line"]
        rows = await conn.fetch(
            f"SELECT {_LINE_COLUMNS} FROM requests q "
            "WHERE q.batch_id = $1 AND q.line BETWEEN $2 AND $3 "
            "AND NOT EXISTS (SELECT 1 FROM results s WHERE s.batch_id = $1 AND s.line = q.line) "
            "AND NOT EXISTS (SELECT 1 FROM retries t WHERE t.batch_id = $1 AND t.line = q.line) "
            "ORDER BY line",
            batch_id,
            first,
            last,
        )
        await conn.execute(
            "UPDATE spans SET open = $1 WHERE batch_id = $2 AND first_line = $3",
            len(rows),
            batch_id,
            first,
        )
        if not rows:
            await conn.execute(
                "DELETE FROM spans WHERE batch_id = $1 AND first_line = $2", batch_id, first
            )
        return [_claimed(batch_id, r, 1, first) for r in rows]

    async def _claim_new_span(
        self, conn: Connection, batch_id: str, owner: str, limit: int, until: float
    ) -> list[ClaimedRequest]:
        """The next ``limit`` lines past the batch's cursor, as one span under one lease."""
        cursor = await conn.fetch(
            f"SELECT next_line FROM batches WHERE id = $1 {self.db.for_update}", batch_id
        )
        if not cursor:
            return []
        rows = await conn.fetch(
            f"SELECT {_LINE_COLUMNS} FROM requests "
            f"WHERE batch_id = $1 AND line > $2 ORDER BY line LIMIT {int(limit)}",
            batch_id,
            cursor[0]["next_line"],
        )
        if not rows:
            return []
        first, last = rows[0]["line"], rows[-1]["line"]
        await conn.execute("UPDATE batches SET next_line = $1 WHERE id = $2", last, batch_id)
        await conn.execute(
            "INSERT INTO spans (batch_id, first_line, last_line, open, lease_owner, lease_until) "
            "VALUES ($1, $2, $3, $4, $5, $6)",
            batch_id,
            first,
            last,
            len(rows),
            owner,
            until,
        )
        return [_claimed(batch_id, r, 1, first) for r in rows]

    async def renew_request_leases(self, owner: str, until: float) -> None:
        """Renew every span and retry ``owner`` holds; rows are locked in key order, as commits
        lock them, so the two cannot deadlock."""
        async with self.db.transaction(durable=False) as conn:
            await conn.execute(
                "UPDATE spans SET lease_until = $1 WHERE (batch_id, first_line) IN ("
                " SELECT batch_id, first_line FROM spans WHERE lease_owner = $2"
                f" ORDER BY batch_id, first_line {self.db.for_update})",
                until,
                owner,
            )
            await conn.execute(
                "UPDATE retries SET lease_until = $1 WHERE (batch_id, line) IN ("
                " SELECT batch_id, line FROM retries WHERE lease_owner = $2"
                f" ORDER BY batch_id, line {self.db.for_update})",
                until,
                owner,
            )

    async def record_results(
        self, owner: str, results: Sequence[RequestResult], *, again: bool = False
    ) -> None:
        """Commit finished requests and their batch counters in one transaction; lines to try
        again move to ``retries``.

        A result counts only while its worker still holds the lease of the line's span (or of
        its retry), so a line that was taken over (or closed as expired or cancelled) meanwhile
        is never counted twice. ``again``: the results were committed before with an error
        reported, which may have come after the commit itself (a full disk failing the sync):
        lines recorded already are skipped.
        """
        by_batch: dict[str, list[RequestResult]] = {}
        for result in sorted(results, key=_BATCH_AND_LINE):
            by_batch.setdefault(result.batch_id, []).append(result)
        async with self.db.transaction(durable=False) as conn:
            # Rows are locked in key order everywhere, so writers cannot deadlock.
            for batch_id, batch_results in by_batch.items():
                if again:
                    batch_results = await self._not_recorded(conn, batch_id, batch_results)
                await self._record_batch_results(conn, owner, batch_id, batch_results)

    async def _not_recorded(
        self, conn: Connection, batch_id: str, results: list[RequestResult]
    ) -> list[RequestResult]:
        """The results whose line is neither finished nor waiting for a retry. (A retried line
        is recorded once its retry's lease is gone, which ``_held`` sees.)"""
        lines = self.db.int_array([r.line for r in results if r.span is not None])
        rows = await conn.fetch(
            f"SELECT line FROM results WHERE batch_id = $1 AND line {self.db.any_of('$2')} "
            f"UNION ALL SELECT line FROM retries WHERE batch_id = $1 "
            f"AND line {self.db.any_of('$2')}",
            batch_id,
            lines,
        )
        recorded = {row["line"] for row in rows}
        return [r for r in results if r.span is None or r.line not in recorded]

    async def _record_batch_results(
        self, conn: Connection, owner: str, batch_id: str, results: list[RequestResult]
    ) -> None:
        spans = await self._held(
            conn,
            "spans",
            "first_line",
            batch_id,
            owner,
            {r.span for r in results if r.span is not None},
        )
        retried = await self._held(
            conn, "retries", "line", batch_id, owner, {r.line for r in results if r.span is None}
        )
        leaving: dict[int, int] = {}  # span → its lines that leave it (finished or to retry)
        finals: list[RequestResult] = []
        waits: list[RequestResult] = []
        for r in results:
            if r.span is None:
                if r.line not in retried:
                    continue
            elif r.span in spans:
                leaving[r.span] = leaving.get(r.span, 0) + 1
            else:
                continue
            (waits if r.state is RequestState.PENDING else finals).append(r)
        if waits:
            await conn.executemany(
                "INSERT INTO retries (batch_id, line, attempts, not_before) "
                "VALUES ($1, $2, $3, $4) ON CONFLICT (batch_id, line) DO UPDATE SET "
                "attempts = excluded.attempts, not_before = excluded.not_before, "
                "lease_owner = NULL, lease_until = NULL",
                [(batch_id, r.line, r.attempts, r.retry_at) for r in waits],
            )
        await self._count_in_parts(conn, results, finals)
        if finals:
            await self._insert_results(conn, batch_id, finals)
            done_retries = [r.line for r in finals if r.span is None]
            if done_retries:
                await conn.execute(
                    f"DELETE FROM retries WHERE batch_id = $1 AND line {self.db.any_of('$2')}",
                    batch_id,
                    self.db.int_array(done_retries),
                )
            await self._count(conn, batch_id, finals)
        if leaving:
            await conn.executemany(
                "UPDATE spans SET open = open - $1 WHERE batch_id = $2 AND first_line = $3",
                [(n, batch_id, span) for span, n in leaving.items()],
            )
            await conn.execute(
                "DELETE FROM spans WHERE batch_id = $1 "
                f"AND first_line {self.db.any_of('$2')} AND open <= 0",
                batch_id,
                self.db.int_array(sorted(leaving)),
            )

    async def _held(
        self,
        conn: Connection,
        table: str,
        key: str,
        batch_id: str,
        owner: str,
        wanted: set[int],
    ) -> set[int]:
        """Which of ``wanted`` (span or retry keys) ``owner`` still holds; locks them until commit.
        One statement text whatever the number, so it is prepared once."""
        if not wanted:
            return set()
        rows = await conn.fetch(
            f"SELECT {key} FROM {table} WHERE batch_id = $1 AND lease_owner = $2 "
            f"AND {key} {self.db.any_of('$3')} ORDER BY {key} {self.db.for_update}",
            batch_id,
            owner,
            self.db.int_array(sorted(wanted)),
        )
        return {r[key] for r in rows}

    async def _insert_results(
        self, conn: Connection, batch_id: str, finals: list[RequestResult]
    ) -> None:
        await conn.insert_rows(
            "results",
            ("batch_id", "line", "state", "result", "part", "part_offset", "part_length"),
            [
                (batch_id, r.line, r.state, None, r.part, r.part_offset, r.part_length)
                if r.part is not None
                else (batch_id, r.line, r.state, r.output_line, None, None, None)
                for r in finals
            ],
        )

    async def _count_in_parts(
        self, conn: Connection, results: list[RequestResult], finals: list[RequestResult]
    ) -> None:
        """Move each part's ``written`` mark to the end of this group's lines in it, and count
        the lines that were accepted (``finals``): a part stays whole only if all were."""
        written: dict[int, int] = {}
        for r in results:
            if r.part is not None:
                end = r.part_offset + r.part_length
                written[r.part] = max(written.get(r.part, 0), end)
        if not written:
            return
        counted: dict[int, tuple[int, int]] = {}
        for r in finals:
            if r.part is not None:
                size, lines = counted.get(r.part, (0, 0))
                counted[r.part] = (size + r.part_length, lines + 1)
        await conn.executemany(
            "UPDATE result_parts SET written = $1, committed = committed + $2, "
            "lines = lines + $3 WHERE id = $4",
            [(end, *counted.get(part, (0, 0)), part) for part, end in sorted(written.items())],
        )

    async def _count(self, conn: Connection, batch_id: str, finals: list[RequestResult]) -> None:
        succeeded = [r.state for r in finals].count(RequestState.SUCCEEDED)
        usage = Usage.sum([r.usage for r in finals if r.usage is not None])
        await conn.execute(
            "UPDATE batches SET completed = completed + $1, failed = failed + $2, "
            "input_tokens = input_tokens + $3, cached_tokens = cached_tokens + $4, "
            "output_tokens = output_tokens + $5, reasoning_tokens = reasoning_tokens + $6, "
            "total_tokens = total_tokens + $7 WHERE id = $8",
            succeeded,
            len(finals) - succeeded,
            usage.input_tokens,
            usage.cached_tokens,
            usage.output_tokens,
            usage.reasoning_tokens,
            usage.total_tokens,
            batch_id,
        )

    # -- the worker: finalizing ----------------------------------------------------------------

    async def enter_finalizing(self, batch_id: str, owner: str, now: int) -> None:
        async with self.db.transaction(durable=False) as conn:
            await conn.execute(
                "UPDATE batches SET status = 'finalizing', finalizing_at = $1 "
                "WHERE id = $2 AND lease_owner = $3 AND status = 'in_progress'",
                now,
                batch_id,
                owner,
            )

    async def skip_unfinished(self, batch_id: str, owner: str, state: RequestState) -> None:
        """Close every line without a result as ``state`` (expired or cancelled)."""
        unfinished = (
            "FROM requests q WHERE q.batch_id = $1 AND NOT EXISTS "
            "(SELECT 1 FROM results s WHERE s.batch_id = $1 AND s.line = q.line)"
        )
        async with self.db.transaction(durable=False) as conn:
            if not await self._holds_batch(conn, batch_id, owner):
                return
            rows = await conn.fetch(f"SELECT count(*) AS n {unfinished}", batch_id)
            await conn.execute(
                f"INSERT INTO results (batch_id, line, state) SELECT $1, q.line, $2 {unfinished}",
                batch_id,
                state.value,
            )
            await _delete_rows(conn, batch_id, "spans", "retries")
            await conn.execute(
                "UPDATE batches SET failed = failed + $1, next_line = "
                "(SELECT coalesce(max(line), 0) FROM requests WHERE batch_id = $2) WHERE id = $2",
                rows[0]["n"],
                batch_id,
            )

    async def _holds_batch(self, conn: Connection, batch_id: str, owner: str) -> bool:
        """Whether ``owner`` still holds the batch's lease; locks the row until commit."""
        rows = await conn.fetch(
            f"SELECT 1 FROM batches WHERE id = $1 AND lease_owner = $2 {self.db.for_update}",
            batch_id,
            owner,
        )
        return bool(rows)

    async def has_results_in(self, batch_id: str, state: RequestState) -> bool:
        async with self.db.reader() as conn:
            rows = await conn.fetch(
                "SELECT 1 FROM results WHERE batch_id = $1 AND state = $2 LIMIT 1",
                batch_id,
                state.value,
            )
        return bool(rows)

    async def finished_lines(self, batch_id: str) -> AsyncIterator[FinishedLine]:
        """Every line of the batch in line order, a page at a time (``pending`` when it has no
        result yet)."""
        async for line in _paged(self._finished_page, batch_id):
            yield line

    async def _finished_page(self, batch_id: str, after: int) -> list[FinishedLine]:
        # Two range scans merged here rather than a join: PostgreSQL's planner chose to hash the
        # batch's whole results table for every page of a join, which made finalizing quadratic.
        async with self.db.reader() as conn:
            lines = await conn.fetch(
                "SELECT line, custom_id FROM requests WHERE batch_id = $1 AND line > $2 "
                f"ORDER BY line LIMIT {_PAGE_OF_RESULTS}",
                batch_id,
                after,
            )
            if not lines:
                return []
            results = await conn.fetch(
                f"SELECT {_RESULT_COLUMNS} FROM results "
                "WHERE batch_id = $1 AND line BETWEEN $2 AND $3",
                batch_id,
                lines[0]["line"],
                lines[-1]["line"],
            )
        found = {r["line"]: r for r in results}
        return [_finished(row["line"], row["custom_id"], found.get(row["line"])) for row in lines]

    async def unparted_lines(self, batch_id: str) -> AsyncIterator[FinishedLine]:
        """The batch's results that are not in a result part (skipped lines, each worker's first
        lines of the batch, lines committed before parts existed), in line order, a page at a
        time."""
        async for line in _paged(self._unparted_page, batch_id):
            yield line

    async def _unparted_page(self, batch_id: str, after: int) -> list[FinishedLine]:
        async with self.db.reader() as conn:
            results = await conn.fetch(
                f"SELECT {_RESULT_COLUMNS} FROM results "
                "WHERE batch_id = $1 AND line > $2 AND part IS NULL "
                f"ORDER BY line LIMIT {_PAGE_OF_RESULTS}",
                batch_id,
                after,
            )
            if not results:
                return []
            lines = await conn.fetch(
                "SELECT line, custom_id FROM requests "
                f"WHERE batch_id = $1 AND line {self.db.any_of('$2')}",
                batch_id,
                self.db.int_array([r["line"] for r in results]),
            )
        custom_ids = {row["line"]: row["custom_id"] for row in lines}
        return [_finished(r["line"], custom_ids.get(r["line"], ""), r) for r in results]

    # -- result parts ------------------------------------------------------------------------

    async def add_result_part(self, batch_id: str, kind: str) -> int:
        """A new, empty result part of the batch; its id."""
        async with self.db.transaction(durable=False) as conn:
            rows = await conn.fetch(
                "INSERT INTO result_parts (batch_id, kind) VALUES ($1, $2) RETURNING id",
                batch_id,
                kind,
            )
        part: int = rows[0]["id"]
        return part

    async def result_parts(self, batch_id: str) -> list[ResultPart]:
        async with self.db.reader() as conn:
            rows = await conn.fetch(
                "SELECT id, kind, written, committed, lines FROM result_parts "
                "WHERE batch_id = $1 ORDER BY id",
                batch_id,
            )
        return [
            ResultPart(r["id"], r["kind"], r["written"], r["committed"], r["lines"]) for r in rows
        ]

    async def finish_batch(
        self,
        batch_id: str,
        owner: str,
        status: BatchStatus,
        now: int,
        output: StoredFile | None,
        error: StoredFile | None,
        *,
        lost_successes: int = 0,
    ) -> bool:
        """Record the result files and the terminal status in one transaction; whether this
        owner still held the batch and did. ``lost_successes`` lines counted as completed went
        to the error file instead, their results lost: they are counted as failed."""
        stamp = TIMESTAMP_FIELD[status]
        async with self.db.transaction() as conn:
            if not await self._holds_batch(conn, batch_id, owner):
                return False
            for file in (output, error):
                if file is not None:
                    await _insert_file(conn, file)
            await conn.execute(
                f"UPDATE batches SET status = $1, {stamp} = $2, output_file_id = $3, "
                "error_file_id = $4, lease_owner = NULL, lease_until = NULL, "
                "completed = completed - $6, failed = failed + $6 WHERE id = $5",
                status.value,
                now,
                output.id if output else None,
                error.id if error else None,
                batch_id,
                lost_successes,
            )
            await record_event(conn, batch_id, f"batch.{status.value}", now)
        return True

    async def drop_lines(self, batch_id: str) -> None:
        """Delete a finished batch's lines and results (its output and error files hold them now),
        a range of lines per transaction so that a million-line batch never holds the writer for
        long. Request rows go last: while any result is left, so is a request row to find it by."""
        async with self.db.reader() as conn:
            rows = await conn.fetch(
                "SELECT max(line) AS last FROM requests WHERE batch_id = $1", batch_id
            )
        last = rows[0]["last"] or 0
        for table in ("results", "requests"):
            for after in range(0, last, _DROP_CHUNK):
                async with self.db.transaction(durable=False) as conn:
                    await conn.execute(
                        f"DELETE FROM {table} WHERE batch_id = $1 AND line > $2 AND line <= $3",
                        batch_id,
                        after,
                        after + _DROP_CHUNK,
                    )
        async with self.db.transaction(durable=False) as conn:
            await _delete_rows(conn, batch_id, "spans", "retries", "result_parts")

    async def batches_with_lines_left(self) -> list[str]:
        """Finished batches that still have lines: a worker stopped before dropping them."""
        async with self.db.reader() as conn:
            rows = await conn.fetch(
                f"SELECT id FROM batches b WHERE status IN {_statuses(TERMINAL)} "
                "AND (EXISTS (SELECT 1 FROM requests r WHERE r.batch_id = b.id) "
                " OR EXISTS (SELECT 1 FROM result_parts p WHERE p.batch_id = b.id)) ORDER BY seq"
            )
        return [r["id"] for r in rows]

    # -- observability -----------------------------------------------------------------------

    async def batch_and_line_counts(self) -> tuple[dict[BatchStatus, int], int]:
        """Batches by status, and the lines of running batches still pending (to send or to
        retry).

        Counting pending rows would read every one (180 ms on the loop for 500,000 on SQLite);
        instead, a running batch's unfinished lines are its total less its counters, and the
        running rows (a few per slot) are taken off."""
        async with self.db.reader() as conn:
            batches = await conn.fetch("SELECT status, count(*) AS n FROM batches GROUP BY status")
            pending = await conn.fetch(
                "SELECT (SELECT coalesce(sum(total - completed - failed), 0) FROM batches"
                "  WHERE status IN ('in_progress', 'cancelling'))"
                " - (SELECT coalesce(sum(open), 0) FROM spans)"
                " - (SELECT count(*) FROM retries WHERE lease_owner IS NOT NULL) AS n"
            )
        return {BatchStatus(r["status"]): int(r["n"]) for r in batches}, int(pending[0]["n"])

    # -- operations: upstream states, write checks -------------------------------------------

    async def report_upstream_status(
        self, worker: str, statuses: Sequence[UpstreamStatus], now: float
    ) -> None:
        async with self.db.transaction(durable=False) as conn:
            await conn.execute("DELETE FROM upstream_status WHERE worker = $1", worker)
            await conn.executemany(
                "INSERT INTO upstream_status (worker, upstream, state, reason, since, "
                "lines_waiting, batches, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                [
                    (
                        worker,
                        s.upstream,
                        s.state,
                        s.reason,
                        s.since,
                        s.lines_waiting,
                        s.batches,
                        now,
                    )
                    for s in statuses
                ],
            )

    async def forget_upstream_status(self, worker: str) -> None:
        async with self.db.transaction(durable=False) as conn:
            await conn.execute("DELETE FROM upstream_status WHERE worker = $1", worker)

    async def upstream_status(self, fresh_since: float) -> list[UpstreamStatus]:
        """Every worker's view of each upstream, rewritten since ``fresh_since``."""
        async with self.db.reader() as conn:
            rows = await conn.fetch(
                "SELECT upstream, state, reason, since, lines_waiting, batches "
                "FROM upstream_status WHERE updated_at >= $1 ORDER BY upstream, worker",
                fresh_since,
            )
        return [
            UpstreamStatus(
                r["upstream"], r["state"], r["reason"], r["since"], r["lines_waiting"], r["batches"]
            )
            for r in rows
        ]

    async def check_writes(self, process: str, now: float) -> None:
        """Raise unless the store takes a durable write (readiness)."""
        async with self.db.transaction() as conn:
            await conn.execute(
                "INSERT INTO write_checks (process, at) VALUES ($1, $2) "
                "ON CONFLICT (process) DO UPDATE SET at = excluded.at",
                process,
                now,
            )


async def _forget_lines(conn: Connection, batch_id: str) -> None:
    """Delete a batch's lines and everything recorded about them, and rewind its cursor."""
    await _delete_rows(conn, batch_id, "requests", "results", "spans", "retries")
    await conn.execute("UPDATE batches SET next_line = 0 WHERE id = $1", batch_id)


async def _delete_rows(conn: Connection, batch_id: str, *tables: str) -> None:
    for table in tables:
        await conn.execute(f"DELETE FROM {table} WHERE batch_id = $1", batch_id)


def _claimed(batch_id: str, row: Row, attempts: int, span: int | None) -> ClaimedRequest:
    return ClaimedRequest(
        batch_id,
        row["line"],
        row["custom_id"],
        row["byte_offset"],
        row["byte_length"],
        attempts,
        span,
    )


def _json_or_none(value: object) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _bytes(value: Any) -> bytes | None:
    return None if value is None else bytes(value)


async def _insert_file(conn: Connection, file: StoredFile) -> None:
    await conn.execute(
        f"INSERT INTO files ({_FILE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        *_file_values(file),
    )


def _file_values(file: StoredFile) -> tuple[Any, ...]:
    return (
        file.id,
        file.project,
        file.purpose,
        file.filename,
        file.bytes,
        file.created_at,
        file.expires_at,
        file.blob_key,
    )


def _file(row: Row) -> StoredFile:
    return StoredFile(
        id=row["id"],
        project=row["project"],
        purpose=row["purpose"],
        filename=row["filename"],
        bytes=row["bytes"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        blob_key=row["blob_key"],
    )


def _errors(stored: str | None) -> tuple[list[LineError] | None, int]:
    """A failed batch's reasons and their total: stored as ``{"data", "total"}``, or, before
    totals were kept, as the list alone."""
    if not stored:
        return None, 0
    loaded = orjson.loads(stored)
    listed = loaded["data"] if isinstance(loaded, dict) else loaded
    errors = [LineError(**e) for e in listed]
    return errors, loaded["total"] if isinstance(loaded, dict) else len(errors)


def _batch(row: Row) -> Batch:
    errors, errors_total = _errors(row["errors"])
    return Batch(
        id=row["id"],
        project=row["project"],
        endpoint=row["endpoint"],
        input_file_id=row["input_file_id"],
        completion_window=row["completion_window"],
        status=BatchStatus(row["status"]),
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        metadata=orjson.loads(row["metadata"]) if row["metadata"] else None,
        output_expires_after=row["output_expires_after"],
        model=row["model"],
        errors=errors,
        errors_total=errors_total,
        output_file_id=row["output_file_id"],
        error_file_id=row["error_file_id"],
        in_progress_at=row["in_progress_at"],
        finalizing_at=row["finalizing_at"],
        completed_at=row["completed_at"],
        failed_at=row["failed_at"],
        expired_at=row["expired_at"],
        cancelling_at=row["cancelling_at"],
        cancelled_at=row["cancelled_at"],
        total=row["total"],
        completed=row["completed"],
        failed=row["failed"],
        usage=Usage(
            input_tokens=row["input_tokens"],
            cached_tokens=row["cached_tokens"],
            output_tokens=row["output_tokens"],
            reasoning_tokens=row["reasoning_tokens"],
            total_tokens=row["total_tokens"],
        ),
    )


async def _paged(
    page: Callable[[str, int], Awaitable[list[FinishedLine]]], batch_id: str
) -> AsyncIterator[FinishedLine]:
    """Every line ``page`` finds, asking for the page after the last line of the one before."""
    last = 0
    while True:
        lines = await page(batch_id, last)
        for line in lines:
            yield line
        if len(lines) < _PAGE_OF_RESULTS:
            return
        last = lines[-1].line


def _finished(line: int, custom_id: str, result: Row | None) -> FinishedLine:
    if result is None:
        return FinishedLine(line, custom_id, RequestState.PENDING, None)
    return FinishedLine(
        line,
        custom_id,
        _LINE_STATES[result["state"]],
        _bytes(result["result"]),
        result["part"],
        result["part_offset"] or 0,
        result["part_length"] or 0,
    )
