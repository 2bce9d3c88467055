"""One behavioural suite for the metadata store, run against SQLite and PostgreSQL alike."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from batchd import ids
from batchd.blobstore import LocalBlobStore
from batchd.errors import StoreError
from batchd.files import purge_expired
from batchd.models import (
    OUTPUT_PURPOSE,
    Batch,
    BatchStatus,
    ClaimedRequest,
    IndexedLine,
    LineError,
    ManagedKey,
    RequestResult,
    RequestState,
    StoredFile,
    UpstreamStatus,
    Usage,
)
from batchd.store import SqlStore, open_store

pytestmark = pytest.mark.anyio

NOW = 1_700_000_000
DAY = 86_400
LEASE = 30
MODEL = "gpt-test"
LINE_BYTES = 40  # every fake input line is this long, plus its newline


# -- factories -------------------------------------------------------------------------------


async def make_file(store: SqlStore, **overrides: Any) -> StoredFile:
    file_id = overrides.pop("id", None) or ids.file_id()
    values: dict[str, Any] = {
        "id": file_id,
        "project": "default",
        "purpose": "batch",
        "filename": "input.jsonl",
        "bytes": 123,
        "created_at": NOW,
        "expires_at": NOW + 30 * DAY,
        "blob_key": f"files/{file_id}",
    }
    file = StoredFile(**{**values, **overrides})
    await store.insert_file(file)
    return file


async def make_batch(store: SqlStore, **overrides: Any) -> Batch:
    values: dict[str, Any] = {
        "id": ids.batch_id(),
        "project": "default",
        "endpoint": "/v1/chat/completions",
        "input_file_id": ids.file_id(),
        "completion_window": "24h",
        "status": BatchStatus.VALIDATING,
        "created_at": NOW,
        "expires_at": NOW + DAY,
    }
    batch = Batch(**{**values, **overrides})
    await store.insert_batch(batch)
    return batch


def indexed_lines(count: int, first: int = 1) -> list[IndexedLine]:
    return [
        IndexedLine(n, f"req-{n}", (n - 1) * (LINE_BYTES + 1), LINE_BYTES)
        for n in range(first, first + count)
    ]


async def make_running_batch(store: SqlStore, lines: int = 3, **overrides: Any) -> Batch:
    """A batch that passed validation with ``lines`` pending requests."""
    batch = await make_batch(store, **overrides)
    claimed = await store.claim_batch_to_validate("validator", NOW, NOW + LEASE)
    assert claimed is not None
    assert claimed.id == batch.id
    await store.add_requests(batch.id, indexed_lines(lines))
    await store.start_batch(batch.id, "validator", lines, MODEL, NOW)
    return await fetch(store, batch.id)


async def fetch(store: SqlStore, batch_id: str) -> Batch:
    batch = await store.get_batch(batch_id)
    assert batch is not None
    return batch


def result(
    claim: ClaimedRequest,
    state: RequestState = RequestState.SUCCEEDED,
    usage: Usage | None = None,
) -> RequestResult:
    """The outcome of a claimed line, with an output line naming it."""
    line = b'{"line":%d}' % claim.line
    return RequestResult(claim.batch_id, claim.line, state, line, usage, claim.span)


def retry(claim: ClaimedRequest, at: float) -> RequestResult:
    """The claimed line is to be tried again at ``at``."""
    return RequestResult(
        claim.batch_id,
        claim.line,
        RequestState.PENDING,
        span=claim.span,
        retry_at=at,
        attempts=claim.attempts,
    )


async def query(store: SqlStore, sql: str, *args: Any) -> list[Any]:
    """A raw read through the store's own connection."""
    async with store.db.reader() as conn:
        return await conn.fetch(sql, *args)


async def lease_of(store: SqlStore, batch_id: str) -> tuple[Any, Any]:
    rows = await query(
        store, "SELECT lease_owner, lease_until FROM batches WHERE id = $1", batch_id
    )
    return rows[0]["lease_owner"], rows[0]["lease_until"]


async def request_count(store: SqlStore, batch_id: str) -> int:
    rows = await query(store, "SELECT count(*) AS n FROM requests WHERE batch_id = $1", batch_id)
    return int(rows[0]["n"])


async def walk_files(store: SqlStore, *, ascending: bool, limit: int) -> list[list[str]]:
    pages, after = [], None
    while True:
        page = await store.list_files(
            "default", purpose=None, limit=limit, ascending=ascending, after=after
        )
        pages.append([f.id for f in page.items])
        if not page.has_more:
            return pages
        after = page.items[-1].id


# -- files -----------------------------------------------------------------------------------


async def test_insert_then_get_file(store: SqlStore) -> None:
    """A stored file reads back field for field."""
    file = await make_file(store, expires_at=None, filename="a b.jsonl")
    assert await store.get_file("default", file.id) == file


async def test_get_file_of_another_project(store: SqlStore) -> None:
    """A file is invisible to other projects."""
    file = await make_file(store, project="alpha")
    assert await store.get_file("beta", file.id) is None
    assert await store.get_file("alpha", "file-missing") is None


async def test_list_files_newest_first_and_ascending(store: SqlStore) -> None:
    """Files list newest first by default and oldest first when ascending, per project."""
    made = [await make_file(store, created_at=NOW + i) for i in range(3)]
    await make_file(store, project="other")
    desc = await store.list_files("default", purpose=None, limit=10, ascending=False, after=None)
    asc = await store.list_files("default", purpose=None, limit=10, ascending=True, after=None)
    assert [f.id for f in desc.items] == [f.id for f in reversed(made)]
    assert [f.id for f in asc.items] == [f.id for f in made]
    assert not desc.has_more
    assert not asc.has_more


async def test_a_cursor_from_another_project_is_past_everything(store: SqlStore) -> None:
    """``after=`` another project's file or batch: an empty page, as for an unknown id, so
    that nobody learns the id exists or where it sorts."""
    await make_file(store, created_at=NOW)
    theirs = await make_file(store, project="other", created_at=NOW + 1)
    for ascending in (False, True):
        page = await store.list_files(
            "default", purpose=None, limit=10, ascending=ascending, after=theirs.id
        )
        assert page.items == []
    await make_batch(store)
    their_batch = await make_batch(store, project="other")
    assert (await store.list_batches("default", limit=10, after=their_batch.id)).items == []


async def test_list_files_by_purpose(store: SqlStore) -> None:
    """The purpose filter keeps only files of that purpose."""
    batch_file = await make_file(store, purpose="batch")
    await make_file(store, purpose="batch_output")
    page = await store.list_files("default", purpose="batch", limit=10, ascending=False, after=None)
    assert [f.id for f in page.items] == [batch_file.id]


@pytest.mark.parametrize("ascending", [False, True])
async def test_list_files_pages_with_exact_has_more(store: SqlStore, ascending: bool) -> None:
    """Walking pages with ``after`` visits every file once; has_more is false only at the end."""
    made = [(await make_file(store, created_at=NOW + i)).id for i in range(5)]
    pages = await walk_files(store, ascending=ascending, limit=2)
    expected = made if ascending else made[::-1]
    assert pages == [expected[0:2], expected[2:4], expected[4:5]]


async def test_list_files_exact_fit_has_no_more(store: SqlStore) -> None:
    """A page that holds exactly the remaining files reports has_more false."""
    for i in range(4):
        await make_file(store, created_at=NOW + i)
    assert [len(p) for p in await walk_files(store, ascending=False, limit=2)] == [2, 2]


async def test_delete_file(store: SqlStore) -> None:
    """Delete returns the file once; it is gone afterwards."""
    file = await make_file(store)
    assert await store.delete_file("default", file.id) == file
    assert await store.get_file("default", file.id) is None
    assert await store.delete_file("default", file.id) is None


async def test_delete_file_of_another_project(store: SqlStore) -> None:
    """Deleting from another project removes nothing."""
    file = await make_file(store, project="alpha")
    assert await store.delete_file("beta", file.id) is None
    assert await store.get_file("alpha", file.id) == file


@pytest.mark.parametrize(
    ("status", "in_use"),
    [
        (BatchStatus.VALIDATING, True),
        (BatchStatus.IN_PROGRESS, True),
        (BatchStatus.CANCELLING, True),
        (BatchStatus.FINALIZING, True),
        (BatchStatus.COMPLETED, False),
        (BatchStatus.FAILED, False),
        (BatchStatus.EXPIRED, False),
        (BatchStatus.CANCELLED, False),
    ],
)
async def test_blob_in_use(store: SqlStore, status: BatchStatus, in_use: bool) -> None:
    """A file is in use exactly while a non-terminal batch reads it."""
    file = await make_file(store)
    assert not await store.blob_in_use(file.id)
    await make_batch(store, input_file_id=file.id, status=status)
    assert await store.blob_in_use(file.id) is in_use


# -- batches ---------------------------------------------------------------------------------


async def test_insert_then_get_batch(store: SqlStore) -> None:
    """A new batch reads back with metadata, output_expires_after and zero counts."""
    batch = await make_batch(
        store, metadata={"team": "search", "ünï": "çødé"}, output_expires_after=7200
    )
    stored = await fetch(store, batch.id)
    assert stored == batch
    assert stored.metadata == {"team": "search", "ünï": "çødé"}
    assert stored.output_expires_after == 7200
    assert (stored.total, stored.completed, stored.failed) == (0, 0, 0)
    assert stored.usage == Usage()
    assert stored.errors is None


async def test_batch_without_metadata(store: SqlStore) -> None:
    """Absent metadata and output_expires_after read back as None."""
    batch = await make_batch(store)
    stored = await fetch(store, batch.id)
    assert stored.metadata is None
    assert stored.output_expires_after is None


async def test_get_batch_of_another_project(store: SqlStore) -> None:
    """A batch is invisible to other projects, and an unknown id is None."""
    batch = await make_batch(store, project="alpha")
    assert await store.get_batch(batch.id, "beta") is None
    assert await store.get_batch(batch.id, "alpha") is not None
    assert await store.get_batch("batch_missing") is None


async def test_list_batches_pages_newest_first(store: SqlStore) -> None:
    """Batches list newest first, paged by ``after`` with an exact has_more."""
    made = [(await make_batch(store, created_at=NOW + i)).id for i in range(5)]
    await make_batch(store, project="other")
    pages, after = [], None
    while True:
        page = await store.list_batches("default", limit=2, after=after)
        pages.append([b.id for b in page.items])
        if not page.has_more:
            break
        after = page.items[-1].id
    newest = made[::-1]
    assert pages == [newest[0:2], newest[2:4], newest[4:5]]


async def test_list_batches_exact_fit(store: SqlStore) -> None:
    """A limit equal to the number of batches gives one page without has_more."""
    for _ in range(3):
        await make_batch(store)
    page = await store.list_batches("default", limit=3, after=None)
    assert len(page.items) == 3
    assert not page.has_more


@pytest.mark.parametrize("status", [BatchStatus.VALIDATING, BatchStatus.IN_PROGRESS])
async def test_request_cancel_moves_to_cancelling(store: SqlStore, status: BatchStatus) -> None:
    """Cancelling a validating or running batch makes it cancelling, stamped."""
    batch = await make_batch(store, status=status)
    cancelled = await store.request_cancel(batch.id, "default", NOW + 5)
    assert cancelled is not None
    assert cancelled.status is BatchStatus.CANCELLING
    assert cancelled.cancelling_at == NOW + 5


@pytest.mark.parametrize(
    "status",
    [BatchStatus.COMPLETED, BatchStatus.FAILED, BatchStatus.FINALIZING, BatchStatus.CANCELLED],
)
async def test_request_cancel_leaves_others_unchanged(store: SqlStore, status: BatchStatus) -> None:
    """Cancelling a batch past the point of cancelling returns it unchanged."""
    batch = await make_batch(store, status=status)
    after = await store.request_cancel(batch.id, "default", NOW + 5)
    assert after == batch


async def test_request_cancel_of_another_project(store: SqlStore) -> None:
    """Another project cannot cancel a batch."""
    batch = await make_batch(store, project="alpha")
    assert await store.request_cancel(batch.id, "beta", NOW) is None
    assert (await fetch(store, batch.id)).status is BatchStatus.VALIDATING


# -- validation phase ------------------------------------------------------------------------


async def test_claim_to_validate_takes_oldest_once(store: SqlStore) -> None:
    """The oldest validating batch is leased to one owner until the lease runs out."""
    first = await make_batch(store)
    await make_batch(store)
    claimed = await store.claim_batch_to_validate("a", NOW, NOW + LEASE)
    assert claimed is not None
    assert claimed.id == first.id
    second = await store.claim_batch_to_validate("b", NOW + 1, NOW + 1 + LEASE)
    assert second is not None
    assert second.id != first.id
    assert await store.claim_batch_to_validate("c", NOW + 2, NOW + 2 + LEASE) is None
    again = await store.claim_batch_to_validate("c", NOW + LEASE + 1, NOW + 2 * LEASE)
    assert again is not None
    assert again.id == first.id
    assert await lease_of(store, first.id) == ("c", NOW + 2 * LEASE)


async def test_claim_to_validate_ignores_other_statuses(store: SqlStore) -> None:
    """Only validating batches are claimed for validation."""
    for status in BatchStatus:
        if status is not BatchStatus.VALIDATING:
            await make_batch(store, status=status)
    assert await store.claim_batch_to_validate("a", NOW, NOW + LEASE) is None


async def test_renew_batch_lease_keeps_claim(store: SqlStore) -> None:
    """A renewed lease keeps the batch from others; a stranger cannot renew it."""
    batch = await make_batch(store)
    await store.claim_batch_to_validate("a", NOW, NOW + LEASE)
    await store.renew_batch_lease(batch.id, "a", NOW + 3 * LEASE)
    await store.renew_batch_lease(batch.id, "b", NOW + 10 * LEASE)
    assert await store.claim_batch_to_validate("b", NOW + 2 * LEASE, NOW + 3 * LEASE) is None
    assert await lease_of(store, batch.id) == ("a", NOW + 3 * LEASE)


async def test_start_batch(store: SqlStore) -> None:
    """Starting sets total, model and in_progress_at, and releases the lease."""
    batch = await make_batch(store)
    await store.claim_batch_to_validate("v", NOW, NOW + LEASE)
    await store.add_requests(batch.id, indexed_lines(3))
    await store.start_batch(batch.id, "v", 3, MODEL, NOW + 2)
    started = await fetch(store, batch.id)
    assert started.status is BatchStatus.IN_PROGRESS
    assert (started.total, started.model, started.in_progress_at) == (3, MODEL, NOW + 2)
    assert (started.completed, started.failed) == (0, 0)
    assert await lease_of(store, batch.id) == (None, None)
    assert await request_count(store, batch.id) == 3


async def test_start_batch_needs_the_lease(store: SqlStore) -> None:
    """A worker that does not hold the lease cannot start the batch."""
    batch = await make_batch(store)
    await store.claim_batch_to_validate("v", NOW, NOW + LEASE)
    await store.start_batch(batch.id, "stranger", 3, MODEL, NOW)
    assert (await fetch(store, batch.id)).status is BatchStatus.VALIDATING


async def test_start_batch_cancelled_meanwhile(store: SqlStore) -> None:
    """A batch cancelled during validation stays cancelling when validation passes."""
    batch = await make_batch(store)
    await store.claim_batch_to_validate("v", NOW, NOW + LEASE)
    await store.request_cancel(batch.id, "default", NOW + 1)
    await store.add_requests(batch.id, indexed_lines(2))
    await store.start_batch(batch.id, "v", 2, MODEL, NOW + 2)
    after = await fetch(store, batch.id)
    assert after.status is BatchStatus.CANCELLING
    assert after.in_progress_at is None
    assert after.total == 2


async def test_clear_requests(store: SqlStore) -> None:
    """Clearing removes a half-indexed batch's request rows."""
    batch = await make_batch(store)
    await store.add_requests(batch.id, indexed_lines(4))
    await store.clear_requests(batch.id)
    assert await request_count(store, batch.id) == 0


async def test_fail_validation(store: SqlStore) -> None:
    """Failing stores every error, stamps failed_at and drops the request rows."""
    batch = await make_batch(store)
    await store.claim_batch_to_validate("v", NOW, NOW + LEASE)
    await store.add_requests(batch.id, indexed_lines(2))
    errors = [
        LineError("invalid_json_line", "This line is not parseable as valid JSON.", None, 3),
        LineError("missing_required_parameter", "Missing 'url'.", "url", 7),
        LineError("invalid_request", "The input file contains no requests.", "input_file_id"),
    ]
    await store.fail_validation(batch.id, "v", errors, NOW + 3)
    failed = await fetch(store, batch.id)
    assert failed.status is BatchStatus.FAILED
    assert failed.failed_at == NOW + 3
    assert failed.errors == errors
    assert failed.errors_total == 3
    assert (failed.total, failed.completed, failed.failed) == (0, 0, 0)
    assert await request_count(store, batch.id) == 0
    assert await lease_of(store, batch.id) == (None, None)


async def test_fail_validation_keeps_how_many_errors_there_were(store: SqlStore) -> None:
    """The first errors are kept with the total found; a row from before totals were kept (the
    list alone) reads as its length."""
    batch = await make_batch(store)
    await store.claim_batch_to_validate("v", NOW, NOW + LEASE)
    await store.fail_validation(batch.id, "v", [LineError("x", "y", None, 1)], NOW, total=2000)
    assert (await fetch(store, batch.id)).errors_total == 2000

    async with store.db.transaction() as conn:
        await conn.execute(
            "UPDATE batches SET errors = $1 WHERE id = $2",
            '[{"code": "x", "message": "y", "param": null, "line": 1}]',
            batch.id,
        )
    old = await fetch(store, batch.id)
    assert (old.errors, old.errors_total) == ([LineError("x", "y", None, 1)], 1)


async def test_fail_validation_of_cancelling_batch(store: SqlStore) -> None:
    """A batch cancelled during validation ends cancelled, not failed."""
    batch = await make_batch(store)
    await store.claim_batch_to_validate("v", NOW, NOW + LEASE)
    await store.request_cancel(batch.id, "default", NOW + 1)
    await store.fail_validation(batch.id, "v", [LineError("x", "y", None, 1)], NOW + 2)
    after = await fetch(store, batch.id)
    assert after.status is BatchStatus.CANCELLED
    assert after.cancelled_at == NOW + 2
    assert after.failed_at is None


# -- requests --------------------------------------------------------------------------------


async def test_claim_requests_in_line_order(store: SqlStore) -> None:
    """Claims hand out pending lines in order with their byte ranges, one attempt each."""
    batch = await make_running_batch(store, lines=5)
    claims = await store.claim_requests(batch.id, "w", 3, NOW, NOW + LEASE)
    assert [(c.line, c.custom_id, c.offset, c.length, c.attempts) for c in claims] == [
        (1, "req-1", 0, LINE_BYTES, 1),
        (2, "req-2", LINE_BYTES + 1, LINE_BYTES, 1),
        (3, "req-3", 2 * (LINE_BYTES + 1), LINE_BYTES, 1),
    ]
    assert all(c.batch_id == batch.id for c in claims)


async def test_claim_requests_never_shares_a_line(store: SqlStore) -> None:
    """Two owners never hold the same line; claims stop when nothing is pending."""
    batch = await make_running_batch(store, lines=5)
    first = await store.claim_requests(batch.id, "a", 3, NOW, NOW + LEASE)
    second = await store.claim_requests(batch.id, "b", 3, NOW, NOW + LEASE)
    assert [c.line for c in first] == [1, 2, 3]
    assert [c.line for c in second] == [4, 5]
    assert await store.claim_requests(batch.id, "c", 3, NOW, NOW + LEASE) == []


@pytest.mark.postgres
async def test_a_claim_takes_its_limit_when_the_planner_has_not_seen_the_batch(
    postgres_url: str,
) -> None:
    """Lines inserted since the table was last analyzed look like one row to PostgreSQL's
    planner; a claim of lines to retry must still lock and take only ``limit`` of them (a claim
    by ``IN (SELECT … LIMIT n FOR UPDATE SKIP LOCKED)`` once took them all)."""
    store = await open_store(postgres_url)
    try:
        async with store.db.transaction() as conn:
            await conn.execute("ALTER TABLE retries SET (autovacuum_enabled = false)")
            await conn.execute(
                "INSERT INTO retries (batch_id, line, attempts)"
                " SELECT 'other', g, 1 FROM generate_series(1, 20000) AS g"
            )
        async with store.db.transaction() as conn:
            await conn.execute("ANALYZE retries")
        batch = await make_running_batch(store, lines=3000)
        claims = await store.claim_requests(batch.id, "w", 3000, NOW, NOW + LEASE)
        await store.record_results("w", [c.given_back() for c in claims])

        again = await store.claim_requests(batch.id, "w", 100, NOW, NOW + LEASE)

        assert [c.line for c in again] == list(range(1, 101))
    finally:
        await store.close()


@pytest.mark.postgres
async def test_the_next_lines_of_a_new_batch_are_read_by_walking_its_key(
    postgres_url: str,
) -> None:
    """Right after a batch is inserted the planner's statistics do not know it; reading its next
    lines must still walk the key and stop at the limit, not read the whole batch and sort it
    (which made every claim cost more the larger the batch)."""
    store = await open_store(postgres_url)
    try:
        await make_running_batch(store, lines=3000)
        batch = await make_running_batch(store, lines=3000)
        async with store.db.reader() as conn:
            rows = await conn.fetch(
                "EXPLAIN (FORMAT JSON) SELECT line FROM requests "
                "WHERE batch_id = $1 AND line > $2 ORDER BY line LIMIT 512",
                batch.id,
                0,
            )
        plan = json.loads(rows[0]["QUERY PLAN"])[0]["Plan"]
        assert plan["Node Type"] == "Limit"
        assert plan["Plans"][0]["Node Type"] in ("Index Scan", "Index Only Scan")
    finally:
        await store.close()


async def test_claims_hand_out_spans_of_fresh_lines(store: SqlStore) -> None:
    """Each claim of fresh lines is a span named by its first line, one attempt per line."""
    batch = await make_running_batch(store, lines=5)
    first = await store.claim_requests(batch.id, "a", 2, NOW, NOW + LEASE)
    second = await store.claim_requests(batch.id, "b", 5, NOW, NOW + LEASE)
    assert [(c.line, c.span, c.attempts) for c in first] == [(1, 1, 1), (2, 1, 1)]
    assert [(c.line, c.span, c.attempts) for c in second] == [(3, 3, 1), (4, 3, 1), (5, 3, 1)]


async def test_lines_given_back_are_claimed_again(store: SqlStore) -> None:
    """Lines given back can be claimed again by anyone, their unsent attempt not counted."""
    batch = await make_running_batch(store, lines=3)
    claims = await store.claim_requests(batch.id, "a", 3, NOW, NOW + LEASE)
    await store.record_results("a", [c.given_back() for c in claims[1:]])
    again = await store.claim_requests(batch.id, "b", 3, NOW, NOW + LEASE)
    assert [(c.line, c.attempts, c.span) for c in again] == [(2, 1, None), (3, 1, None)]
    await store.record_results("b", [c.given_back() for c in again])
    assert [c.line for c in await store.claim_requests(batch.id, "c", 3, NOW, NOW + LEASE)] == [
        2,
        3,
    ]


async def test_lines_of_another_owner_cannot_be_given_back(store: SqlStore) -> None:
    """An owner cannot give back lines it does not hold."""
    batch = await make_running_batch(store, lines=2)
    claims = await store.claim_requests(batch.id, "a", 2, NOW, NOW + LEASE)
    await store.record_results("b", [c.given_back() for c in claims])
    assert await store.claim_requests(batch.id, "b", 2, NOW, NOW + LEASE) == []


async def test_a_lapsed_span_is_taken_over_without_its_finished_lines(store: SqlStore) -> None:
    """Once a span's lease has passed, another worker takes over its lines that have neither a
    result nor a retry of their own."""
    batch = await make_running_batch(store, lines=4)
    claims = await store.claim_requests(batch.id, "a", 4, NOW, NOW + LEASE)
    await store.record_results("a", [result(claims[0]), retry(claims[1], NOW + 2 * LEASE)])
    assert await store.claim_requests(batch.id, "b", 4, NOW + LEASE - 1, NOW + 2 * LEASE) == []
    again = await store.claim_requests(batch.id, "b", 4, NOW + LEASE + 1, NOW + 2 * LEASE)
    assert [(c.line, c.span) for c in again] == [(3, 1), (4, 1)]
    await store.record_results("b", [result(c) for c in again])
    waiting = await store.claim_requests(batch.id, "c", 4, NOW + 2 * LEASE, NOW + 3 * LEASE)
    assert [(c.line, c.attempts, c.span) for c in waiting] == [(2, 2, None)]


async def test_a_worker_never_takes_back_its_own_lapsed_lines(store: SqlStore) -> None:
    """Its lease lapsed only because renewals failed (the store away): it may still hold answers
    of those lines. Another worker takes them over; it does not, and renewing makes them its own
    again."""
    batch = await make_running_batch(store, lines=3)
    claims = await store.claim_requests(batch.id, "a", 2, NOW, NOW + LEASE)
    await store.record_results("a", [retry(claims[0], NOW)])
    later = NOW + 2 * LEASE
    assert [c.line for c in await store.claim_requests(batch.id, "a", 3, later, later + 1)] == [1]
    assert [c.line for c in await store.claim_requests(batch.id, "a", 3, later, later + 1)] == [3]
    assert await store.claim_requests(batch.id, "a", 3, later, later + 1) == []
    taken = await store.claim_requests(batch.id, "b", 3, later, later + 1)
    assert [c.line for c in taken] == [2]


async def test_recording_again_after_an_unclear_failure_counts_nothing_twice(
    store: SqlStore,
) -> None:
    """A group committed, then retried because an error was reported after the commit: lines
    already recorded are skipped, not refused (which wedged the committer) nor counted again."""
    batch = await make_running_batch(store, lines=4)
    claims = await store.claim_requests(batch.id, "w", 4, NOW, NOW + LEASE)
    group = [
        result(claims[0], usage=Usage(10, 0, 5, 0, 15)),
        retry(claims[1], NOW + 5),
        result(claims[2], RequestState.FAILED),
    ]
    await store.record_results("w", group)
    with pytest.raises(StoreError):
        await store.record_results("w", group)
    await store.record_results("w", [*group, result(claims[3])], again=True)
    after = await fetch(store, batch.id)
    assert (after.completed, after.failed, after.usage.total_tokens) == (2, 1, 15)
    again = await store.claim_requests(batch.id, "w", 4, NOW + 5, NOW + LEASE)
    assert [(c.line, c.attempts) for c in again] == [(2, 2)]


async def test_upstream_states_are_kept_per_worker_and_forgotten(store: SqlStore) -> None:
    """Each worker's view replaces its last; stale views are left out; a stopping worker's go."""
    ok = UpstreamStatus("u", "ok", None, None, 0, 1)
    failing = UpstreamStatus("u", "failing", "connection refused", NOW, 8, 1)
    await store.report_upstream_status("w1", [ok], NOW)
    await store.report_upstream_status("w1", [failing], NOW + 1)
    await store.report_upstream_status("w2", [ok], NOW - 100)
    assert await store.upstream_status(NOW - 10) == [failing]
    assert len(await store.upstream_status(NOW - 1000)) == 2
    await store.forget_upstream_status("w1")
    assert await store.upstream_status(NOW - 10) == []


async def test_a_write_check_writes(store: SqlStore) -> None:
    await store.check_writes("host-1", NOW)
    await store.check_writes("host-1", NOW + 1)


async def test_renew_request_leases(store: SqlStore) -> None:
    """A renewed span is not taken over when its first lease would have passed."""
    batch = await make_running_batch(store, lines=2)
    await store.claim_requests(batch.id, "a", 1, NOW, NOW + LEASE)
    await store.claim_requests(batch.id, "b", 1, NOW, NOW + LEASE)
    await store.renew_request_leases("a", NOW + 3 * LEASE)
    again = await store.claim_requests(batch.id, "c", 2, NOW + 2 * LEASE, NOW + 4 * LEASE)
    assert [c.line for c in again] == [2]


async def test_retries_wait_until_due_and_count_their_attempts(store: SqlStore) -> None:
    """A line to retry is claimed alone once due, with its attempts so far plus one; a final
    result for it counts once."""
    batch = await make_running_batch(store, lines=2)
    claims = await store.claim_requests(batch.id, "a", 2, NOW, NOW + LEASE)
    await store.record_results("a", [retry(claims[0], NOW + 5), result(claims[1])])
    assert await store.claim_requests(batch.id, "a", 2, NOW + 4, NOW + LEASE) == []
    second = await store.claim_requests(batch.id, "a", 2, NOW + 5, NOW + LEASE)
    assert [(c.line, c.attempts, c.span) for c in second] == [(1, 2, None)]
    await store.record_results("a", [retry(second[0], NOW + 6)])
    third = await store.claim_requests(batch.id, "b", 2, NOW + 6, NOW + LEASE)
    assert [(c.line, c.attempts) for c in third] == [(1, 3)]
    await store.record_results("a", [result(third[0])])  # not a's any more
    await store.record_results("b", [result(third[0], RequestState.FAILED)])
    await store.record_results("b", [result(third[0], RequestState.FAILED)])
    after = await fetch(store, batch.id)
    assert (after.completed, after.failed) == (1, 1)
    assert await store.claim_requests(batch.id, "b", 2, NOW + DAY, NOW + DAY) == []


# -- results ---------------------------------------------------------------------------------


async def test_record_results_counts_and_sums_usage(store: SqlStore) -> None:
    """Results add to completed/failed and their usage is summed onto the batch."""
    batch = await make_running_batch(store, lines=3)
    claims = await store.claim_requests(batch.id, "w", 3, NOW, NOW + LEASE)
    await store.record_results(
        "w",
        [
            result(claims[0], usage=Usage(10, 2, 5, 1, 15)),
            result(claims[1], usage=Usage(7, 0, 3, 0, 10)),
            result(claims[2], RequestState.FAILED),
        ],
    )
    after = await fetch(store, batch.id)
    assert (after.completed, after.failed) == (2, 1)
    assert after.usage == Usage(17, 2, 8, 1, 25)


async def test_record_results_of_a_large_group_mixed_with_retries(store: SqlStore) -> None:
    """A group of over a thousand results, some to retry and some from lines not held, is
    committed whole: each line ends in its own state with its own output."""
    batch = await make_running_batch(store, lines=1500)
    held = await store.claim_requests(batch.id, "w", 1400, NOW, NOW + LEASE)
    stray = [ClaimedRequest(batch.id, n, f"req-{n}", 0, 1, 1, 1401) for n in range(1401, 1501)]
    outcomes = [
        retry(c, NOW + 5)
        if c.line == 7
        else result(
            c,
            RequestState.FAILED if c.line % 10 == 0 else RequestState.SUCCEEDED,
            Usage(1, 0, 1, 0, 2),
        )
        for c in held + stray
    ]
    await store.record_results("w", outcomes)
    after = await fetch(store, batch.id)
    counted = [n for n in range(1, 1401) if n != 7]
    assert after.failed == sum(1 for n in counted if n % 10 == 0)
    assert after.completed == len(counted) - after.failed
    assert after.usage == Usage(len(counted), 0, len(counted), 0, 2 * len(counted))
    lines = {row.line: row async for row in store.finished_lines(batch.id)}
    assert lines[1].state is RequestState.SUCCEEDED and lines[1].result == b'{"line":1}'
    assert lines[10].state is RequestState.FAILED and lines[10].result == b'{"line":10}'
    assert lines[7].state is RequestState.PENDING and lines[7].result is None
    assert lines[1401].state is RequestState.PENDING and lines[1401].result is None


async def test_record_results_across_batches(store: SqlStore) -> None:
    """One commit may carry results of several batches; each gets its own counts."""
    one = await make_running_batch(store, lines=1)
    two = await make_running_batch(store, lines=2)
    ones = await store.claim_requests(one.id, "w", 5, NOW, NOW + LEASE)
    twos = await store.claim_requests(two.id, "w", 5, NOW, NOW + LEASE)
    await store.record_results(
        "w", [result(ones[0]), result(twos[0]), result(twos[1], RequestState.FAILED)]
    )
    assert ((await fetch(store, one.id)).completed, (await fetch(store, one.id)).failed) == (1, 0)
    assert ((await fetch(store, two.id)).completed, (await fetch(store, two.id)).failed) == (1, 1)


async def test_record_results_from_lost_lease_is_ignored(store: SqlStore) -> None:
    """A result from a worker whose span was taken over is not counted, nor is a second
    result for a finished line."""
    batch = await make_running_batch(store, lines=1)
    claims = await store.claim_requests(batch.id, "a", 1, NOW, NOW + LEASE)
    taken = await store.claim_requests(batch.id, "b", 1, NOW + LEASE + 1, NOW + 3 * LEASE)
    assert [c.line for c in taken] == [1]
    await store.record_results("a", [result(claims[0], usage=Usage(1, 0, 1, 0, 2))])
    assert (await fetch(store, batch.id)).completed == 0
    await store.record_results("b", [result(taken[0], usage=Usage(1, 0, 1, 0, 2))])
    await store.record_results("b", [result(taken[0], usage=Usage(1, 0, 1, 0, 2))])
    after = await fetch(store, batch.id)
    assert (after.completed, after.failed) == (1, 0)
    assert after.usage.total_tokens == 2


async def test_record_results_after_skip_is_ignored(store: SqlStore) -> None:
    """A late result for a line already closed as expired is not counted."""
    batch = await make_running_batch(store, lines=2)
    claims = await store.claim_requests(batch.id, "w", 2, NOW, NOW + LEASE)
    claimed = await store.claim_batch_to_finalize("f", NOW + DAY, NOW + DAY + LEASE)
    assert claimed is not None
    await store.skip_unfinished(batch.id, "f", RequestState.EXPIRED)
    await store.record_results("w", [result(c) for c in claims])
    after = await fetch(store, batch.id)
    assert (after.completed, after.failed) == (0, 2)
    lines = [row async for row in store.finished_lines(batch.id)]
    assert [(r.state, r.result) for r in lines] == [(RequestState.EXPIRED, None)] * 2


# -- dispatch --------------------------------------------------------------------------------


async def test_dispatchable_batches(store: SqlStore) -> None:
    """Only running batches inside their window with unfinished lines are dispatchable."""
    ready = await make_running_batch(store, lines=1)
    done = await make_running_batch(store, lines=1)
    await make_running_batch(store, lines=1, expires_at=NOW + 10)
    cancelling = await make_running_batch(store, lines=1)
    await store.request_cancel(cancelling.id, "default", NOW)
    await make_batch(store)  # still validating
    claims = await store.claim_requests(done.id, "w", 1, NOW, NOW + LEASE)
    await store.record_results("w", [result(claims[0])])
    dispatchable = await store.dispatchable_batches(NOW + 10)
    assert [b.id for b in dispatchable] == [ready.id]


async def test_dispatchable_batches_oldest_first(store: SqlStore) -> None:
    """Dispatchable batches come oldest first."""
    made = [(await make_running_batch(store, lines=1)).id for _ in range(3)]
    assert [b.id for b in await store.dispatchable_batches(NOW)] == made


# -- finalize phase --------------------------------------------------------------------------


async def test_claim_to_finalize_when_all_lines_done(store: SqlStore) -> None:
    """A running batch is claimed for finalizing only once every line has a result."""
    batch = await make_running_batch(store, lines=2)
    claims = await store.claim_requests(batch.id, "w", 2, NOW, NOW + LEASE)
    assert await store.claim_batch_to_finalize("f", NOW, NOW + LEASE) is None
    await store.record_results("w", [result(claims[0])])
    assert await store.claim_batch_to_finalize("f", NOW, NOW + LEASE) is None
    await store.record_results("w", [result(c) for c in claims[1:]])
    claimed = await store.claim_batch_to_finalize("f", NOW, NOW + LEASE)
    assert claimed is not None
    assert claimed.id == batch.id
    assert await store.claim_batch_to_finalize("g", NOW + 1, NOW + LEASE) is None


async def test_claim_to_finalize_past_window(store: SqlStore) -> None:
    """A running batch is claimed for finalizing once its window has ended."""
    batch = await make_running_batch(store, lines=2)
    assert await store.claim_batch_to_finalize("f", NOW + DAY - 1, NOW + DAY) is None
    claimed = await store.claim_batch_to_finalize("f", NOW + DAY, NOW + DAY + LEASE)
    assert claimed is not None
    assert claimed.id == batch.id


async def test_claim_to_finalize_cancelling_waits_for_running(store: SqlStore) -> None:
    """A cancelling batch is claimed only when none of its lines is held by a live lease."""
    batch = await make_running_batch(store, lines=3)
    claims = await store.claim_requests(batch.id, "w", 1, NOW, NOW + LEASE)
    await store.request_cancel(batch.id, "default", NOW)
    assert await store.claim_batch_to_finalize("f", NOW, NOW + LEASE) is None
    await store.record_results("w", [result(claims[0])])
    claimed = await store.claim_batch_to_finalize("f", NOW, NOW + LEASE)
    assert claimed is not None
    assert claimed.status is BatchStatus.CANCELLING


async def test_claim_to_finalize_ignores_validating_and_terminal(store: SqlStore) -> None:
    """Validating and finished batches are never claimed for finalizing."""
    for status in BatchStatus:
        if status not in (BatchStatus.IN_PROGRESS, BatchStatus.CANCELLING, BatchStatus.FINALIZING):
            await make_batch(store, status=status, expires_at=NOW - 1)
    assert await store.claim_batch_to_finalize("f", NOW, NOW + LEASE) is None


async def test_enter_finalizing_then_reclaim(store: SqlStore) -> None:
    """A finalizing batch whose finalizer vanished is claimed again when the lease passes."""
    batch = await make_running_batch(store, lines=1)
    claims = await store.claim_requests(batch.id, "w", 1, NOW, NOW + LEASE)
    await store.record_results("w", [result(claims[0])])
    await store.claim_batch_to_finalize("f", NOW, NOW + LEASE)
    await store.enter_finalizing(batch.id, "f", NOW + 1)
    finalizing = await fetch(store, batch.id)
    assert finalizing.status is BatchStatus.FINALIZING
    assert finalizing.finalizing_at == NOW + 1
    assert await store.claim_batch_to_finalize("g", NOW + 2, NOW + LEASE) is None
    again = await store.claim_batch_to_finalize("g", NOW + LEASE + 1, NOW + 2 * LEASE)
    assert again is not None
    assert again.status is BatchStatus.FINALIZING


async def test_enter_finalizing_needs_lease_and_running(store: SqlStore) -> None:
    """Only the lease holder moves a running batch to finalizing."""
    batch = await make_running_batch(store, lines=1)
    await store.claim_batch_to_finalize("f", NOW + DAY, NOW + DAY + LEASE)
    await store.enter_finalizing(batch.id, "stranger", NOW)
    assert (await fetch(store, batch.id)).status is BatchStatus.IN_PROGRESS
    await store.request_cancel(batch.id, "default", NOW)
    await store.enter_finalizing(batch.id, "f", NOW)
    assert (await fetch(store, batch.id)).status is BatchStatus.CANCELLING


async def test_skip_unfinished(store: SqlStore) -> None:
    """Skipping closes held, waiting and unclaimed lines as the given state, counts them
    failed, and drops every lease on them."""
    batch = await make_running_batch(store, lines=5)
    claims = await store.claim_requests(batch.id, "w", 3, NOW, NOW + LEASE)
    await store.record_results("w", [result(claims[0]), retry(claims[1], NOW + 5)])
    await store.claim_batch_to_finalize("f", NOW + DAY, NOW + DAY + LEASE)
    await store.skip_unfinished(batch.id, "f", RequestState.CANCELLED)
    after = await fetch(store, batch.id)
    assert (after.total, after.completed, after.failed) == (5, 1, 4)
    states = [row.state async for row in store.finished_lines(batch.id)]
    assert states == [RequestState.SUCCEEDED] + [RequestState.CANCELLED] * 4
    assert await store.has_results_in(batch.id, RequestState.CANCELLED)
    assert not await store.has_results_in(batch.id, RequestState.EXPIRED)
    assert await store.claim_requests(batch.id, "g", 5, NOW + DAY, NOW + 2 * DAY) == []
    await store.skip_unfinished(batch.id, "f", RequestState.CANCELLED)
    assert (await fetch(store, batch.id)).failed == 4


async def test_skip_unfinished_needs_the_lease(store: SqlStore) -> None:
    """A worker without the batch lease closes no lines."""
    batch = await make_running_batch(store, lines=2)
    await store.claim_batch_to_finalize("f", NOW + DAY, NOW + DAY + LEASE)
    await store.skip_unfinished(batch.id, "stale", RequestState.EXPIRED)
    assert not await store.has_results_in(batch.id, RequestState.EXPIRED)
    assert (await fetch(store, batch.id)).failed == 0


async def test_finished_lines_in_line_order_across_pages(store: SqlStore) -> None:
    """Every line comes back once, in line order, past the 1000-row page size."""
    count = 1203
    batch = await make_running_batch(store, lines=count)
    claims = await store.claim_requests(batch.id, "w", 3, NOW, NOW + LEASE)
    await store.record_results("w", [result(claims[0]), result(claims[1], RequestState.FAILED)])
    lines = [row async for row in store.finished_lines(batch.id)]
    assert [r.line for r in lines] == list(range(1, count + 1))
    assert [r.custom_id for r in lines[:2]] == ["req-1", "req-2"]
    assert [(r.state, r.result) for r in lines[:4]] == [
        (RequestState.SUCCEEDED, b'{"line":1}'),
        (RequestState.FAILED, b'{"line":2}'),
        (RequestState.PENDING, None),  # claimed, no result yet
        (RequestState.PENDING, None),
    ]


async def test_finished_lines_of_exactly_one_page(store: SqlStore) -> None:
    """A batch of exactly one page of lines yields each line once."""
    batch = await make_running_batch(store, lines=1000)
    lines = [row.line async for row in store.finished_lines(batch.id)]
    assert lines == list(range(1, 1001))


def output_file(batch: Batch, kind: str) -> StoredFile:
    return StoredFile(
        id=ids.file_id(),
        project=batch.project,
        purpose=OUTPUT_PURPOSE,
        filename=f"{batch.id}_{kind}.jsonl",
        bytes=42,
        created_at=NOW + 9,
        expires_at=NOW + 9 + 30 * DAY,
        blob_key=f"batches/{batch.id}/{kind}.jsonl",
    )


async def test_finish_batch(store: SqlStore) -> None:
    """Finishing records both files, the status, its timestamp and clears the lease."""
    batch = await make_running_batch(store, lines=2, project="p")
    claims = await store.claim_requests(batch.id, "w", 2, NOW, NOW + LEASE)
    await store.record_results("w", [result(claims[0]), result(claims[1], RequestState.FAILED)])
    await store.claim_batch_to_finalize("f", NOW, NOW + LEASE)
    await store.enter_finalizing(batch.id, "f", NOW + 8)
    output, error = output_file(batch, "output"), output_file(batch, "error")
    await store.finish_batch(batch.id, "f", BatchStatus.COMPLETED, NOW + 9, output, error)
    done = await fetch(store, batch.id)
    assert done.status is BatchStatus.COMPLETED
    assert (done.finalizing_at, done.completed_at) == (NOW + 8, NOW + 9)
    assert (done.output_file_id, done.error_file_id) == (output.id, error.id)
    assert await store.get_file("p", output.id) == output
    assert await store.get_file("p", error.id) == error
    assert await lease_of(store, batch.id) == (None, None)
    assert not await store.blob_in_use(batch.input_file_id)


@pytest.mark.parametrize(
    ("status", "stamp"),
    [(BatchStatus.EXPIRED, "expired_at"), (BatchStatus.CANCELLED, "cancelled_at")],
)
async def test_finish_batch_without_files(store: SqlStore, status: BatchStatus, stamp: str) -> None:
    """A batch may finish expired or cancelled with no result files at all."""
    batch = await make_running_batch(store, lines=1)
    await store.claim_batch_to_finalize("f", NOW + DAY, NOW + DAY + LEASE)
    await store.finish_batch(batch.id, "f", status, NOW + DAY, None, None)
    done = await fetch(store, batch.id)
    assert done.status is status
    assert getattr(done, stamp) == NOW + DAY
    assert (done.output_file_id, done.error_file_id) == (None, None)


async def test_finish_batch_needs_the_lease(store: SqlStore) -> None:
    """A worker without the batch lease records neither files nor status."""
    batch = await make_running_batch(store, lines=1)
    await store.claim_batch_to_finalize("f", NOW + DAY, NOW + DAY + LEASE)
    output = output_file(batch, "output")
    await store.finish_batch(batch.id, "stale", BatchStatus.EXPIRED, NOW + DAY, output, None)
    assert (await fetch(store, batch.id)).status is BatchStatus.IN_PROGRESS
    assert await store.get_file(batch.project, output.id) is None


async def test_a_finished_batch_drops_its_lines_and_only_its_own(store: SqlStore) -> None:
    """Once a batch is finished its lines and results go, in chunks, leaving other batches'."""
    batch = await make_running_batch(store, lines=12_000)
    other = await make_running_batch(store, lines=3)
    claims = await store.claim_requests(batch.id, "w", 6000, NOW, NOW + LEASE)
    await store.record_results("w", [result(c) for c in claims])
    claimed = await store.claim_batch_to_finalize("f", NOW + DAY, NOW + DAY + LEASE)
    assert claimed is not None and claimed.id == batch.id
    await store.skip_unfinished(batch.id, "f", RequestState.EXPIRED)
    assert await store.finish_batch(batch.id, "f", BatchStatus.EXPIRED, NOW + DAY, None, None)
    assert await store.batches_with_lines_left() == [batch.id]

    await store.drop_lines(batch.id)

    assert await store.batches_with_lines_left() == []
    assert [row async for row in store.finished_lines(batch.id)] == []
    assert await request_count(store, other.id) == 3
    assert (await fetch(store, batch.id)).failed == 6000  # the counters stay


async def test_finish_batch_without_the_lease_says_so(store: SqlStore) -> None:
    """A worker that lost the batch's lease learns that it did not finish it (and so must not
    drop its lines)."""
    batch = await make_running_batch(store, lines=1)
    await store.claim_batch_to_finalize("f", NOW + DAY, NOW + DAY + LEASE)
    assert not await store.finish_batch(batch.id, "g", BatchStatus.EXPIRED, NOW, None, None)
    assert await store.batches_with_lines_left() == []  # it is not finished


# -- API keys --------------------------------------------------------------------------------


def make_key(project: str = "default", **overrides: Any) -> ManagedKey:
    values: dict[str, Any] = {
        "id": ids.key_id(),
        "project": project,
        "name": None,
        "prefix": "sk-batchd-abcdef",
        "created_at": NOW,
    }
    return ManagedKey(**{**values, **overrides})


async def test_a_key_is_found_by_its_hash_only_until_revoked(store: SqlStore) -> None:
    """The project of an unrevoked key's hash; nothing once it is revoked, or for another hash."""
    key = make_key("team-a", name="ci")
    await store.keys.insert(key, "hash-1")
    assert await store.keys.project_of("hash-1") == "team-a"
    assert await store.keys.project_of("hash-2") is None
    assert await store.keys.find("hash-1") == key

    revoked = await store.keys.revoke(key.id, NOW + 5)

    assert revoked == make_key("team-a", id=key.id, name="ci", revoked_at=NOW + 5)
    assert await store.keys.project_of("hash-1") is None
    assert await store.keys.find("hash-1") == revoked


async def test_revoking_again_keeps_the_first_time(store: SqlStore) -> None:
    key = make_key()
    await store.keys.insert(key, "hash-1")
    await store.keys.revoke(key.id, NOW + 5)
    again = await store.keys.revoke(key.id, NOW + 9)
    assert again is not None and again.revoked_at == NOW + 5
    assert await store.keys.revoke("key_missing", NOW) is None


async def test_keys_are_listed_oldest_first_by_project(store: SqlStore) -> None:
    """Revoked keys are listed too; the hash never is."""
    older = make_key("team-a", created_at=NOW - 10)
    newer = make_key("team-a")
    other = make_key("team-b", created_at=NOW - 5)
    for number, key in enumerate((newer, older, other)):
        await store.keys.insert(key, f"hash-{number}")
    await store.keys.revoke(older.id, NOW)
    assert [k.id for k in await store.keys.list()] == [older.id, other.id, newer.id]
    assert [k.id for k in await store.keys.list("team-a")] == [older.id, newer.id]
    assert await store.keys.list("team-c") == []


async def test_only_unrevoked_keys_are_counted(store: SqlStore) -> None:
    assert await store.keys.count_active() == 0
    first, second = make_key(), make_key()
    await store.keys.insert(first, "hash-1")
    await store.keys.insert(second, "hash-2")
    await store.keys.revoke(first.id, NOW)
    assert await store.keys.count_active() == 1


async def test_two_keys_cannot_share_a_hash(store: SqlStore) -> None:
    await store.keys.insert(make_key(), "hash-1")
    with pytest.raises(StoreError):
        await store.keys.insert(make_key("team-b"), "hash-1")
    assert await store.keys.project_of("hash-1") == "default"


# -- usage, for quotas -----------------------------------------------------------------------


async def test_unfinished_batches_and_their_lines_are_counted_per_project(
    store: SqlStore,
) -> None:
    """Validating batches count with no lines yet; finished ones and other projects not at all."""
    await make_running_batch(store, lines=3, project="team-a")
    await make_running_batch(store, lines=4, project="team-a")
    await make_running_batch(store, lines=5, project="team-b")
    await make_batch(store, project="team-a")  # validating
    await make_batch(store, project="team-a", status=BatchStatus.COMPLETED)
    assert await store.usage.unfinished_batches("team-a") == (3, 7)
    assert await store.usage.unfinished_batches("team-b") == (1, 5)
    assert await store.usage.unfinished_batches("team-c") == (0, 0)


async def test_stored_bytes_are_summed_per_project(store: SqlStore) -> None:
    await make_file(store, project="team-a", bytes=100)
    await make_file(store, project="team-a", bytes=23, purpose=OUTPUT_PURPOSE)
    await make_file(store, project="team-b", bytes=1000)
    assert await store.usage.stored_bytes("team-a") == 123
    assert await store.usage.stored_bytes("team-c") == 0


# -- migrations ------------------------------------------------------------------------------


async def test_migrate_is_idempotent(store: SqlStore) -> None:
    """Migrating an up-to-date database changes nothing and reports the same version."""
    first = await store.db.migrate()
    second = await store.db.migrate()
    assert first == second == max(v for v, _ in store.db.migrations())
    file = await make_file(store)
    assert await store.db.migrate() == first
    assert await store.get_file("default", file.id) == file


async def test_a_migration_older_than_the_newest_applied_is_still_applied(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database that has 9 but not 8 (two lines of work merged in another order) gets 8."""
    store = await open_store(database_url, migrate=False)
    try:
        every = store.db.migrations()
        monkeypatch.setattr(store.db, "migrations", lambda: [m for m in every if m[0] != 8])
        await store.db.migrate()
        monkeypatch.setattr(store.db, "migrations", lambda: every)

        assert await store.db.migrate() == max(v for v, _ in every)
        assert await store.keys.list() == []  # migration 8's table is there
    finally:
        await store.close()


async def test_an_upgrade_keeps_a_running_batch(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Migration 5 moves results out of the request rows: a batch running across the upgrade
    keeps its finished lines, and every other line runs again with its attempts so far."""
    store = await open_store(database_url, migrate=False)
    try:
        every = store.db.migrations()
        monkeypatch.setattr(store.db, "migrations", lambda: [m for m in every if m[0] <= 4])
        await store.db.migrate()
        batch = await make_batch(store, status=BatchStatus.IN_PROGRESS)
        async with store.db.transaction() as conn:
            await conn.execute(
                "UPDATE batches SET total = 3, completed = 1, model = $2 WHERE id = $1",
                batch.id,
                MODEL,
            )
            await conn.executemany(
                "INSERT INTO requests (batch_id, line, custom_id, byte_offset, byte_length, "
                "state, attempts, result) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                [
                    (batch.id, 1, "req-1", 0, 40, "succeeded", 1, b'{"line":1}'),
                    (batch.id, 2, "req-2", 41, 40, "running", 2, None),
                    (batch.id, 3, "req-3", 82, 40, "pending", 0, None),
                ],
            )
        monkeypatch.undo()
        assert await store.db.migrate() == max(v for v, _ in every)

        lines = [(r.line, r.state, r.result) async for r in store.finished_lines(batch.id)]
        assert lines == [
            (1, RequestState.SUCCEEDED, b'{"line":1}'),
            (2, RequestState.PENDING, None),
            (3, RequestState.PENDING, None),
        ]
        claims = await store.claim_requests(batch.id, "w", 5, NOW, NOW + LEASE)
        assert [(c.line, c.attempts, c.span) for c in claims] == [(2, 3, None), (3, 1, None)]
        assert await store.claim_requests(batch.id, "w", 5, NOW, NOW + LEASE) == []
    finally:
        await store.close()


# -- file expiry -----------------------------------------------------------------------------


async def test_expired_files_skips_live_and_in_use_files(store: SqlStore) -> None:
    """Expired files are listed oldest first, except those an unfinished batch still reads."""
    old = await make_file(store, expires_at=NOW - 10)
    older = await make_file(store, expires_at=NOW - 20)
    await make_file(store, expires_at=NOW + 10)
    await make_file(store, expires_at=None)
    read = await make_file(store, expires_at=NOW - 30)
    await make_batch(store, input_file_id=read.id, status=BatchStatus.IN_PROGRESS)
    assert [f.id for f in await store.expired_files(NOW, 10)] == [older.id, old.id]


async def test_purge_expired_deletes_rows_and_bytes(store: SqlStore, tmp_path: Path) -> None:
    """Purging removes each expired file's row and blob, and leaves the rest alone."""
    blobs = LocalBlobStore(tmp_path / "blobs")
    files = []
    for expires_at in (NOW - 1, NOW - 2, NOW + 100):
        file = await make_file(store, expires_at=expires_at)
        writer = blobs.writer(file.blob_key)
        await writer.write(b"{}\n")
        await writer.commit()
        files.append(file)
    assert await purge_expired(store, blobs, NOW) == 2
    assert [await store.get_file("default", f.id) is None for f in files] == [True, True, False]
    assert [(tmp_path / "blobs" / f.blob_key).exists() for f in files] == [False, False, True]


async def test_driver_errors_surface_as_store_errors(store: SqlStore) -> None:
    """A failing statement raises StoreError (which the worker retries), not a driver error."""
    with pytest.raises(StoreError):
        async with store.db.transaction() as conn:
            await conn.execute("INSERT INTO no_such_table VALUES ($1)", 1)
    with pytest.raises(StoreError):
        async with store.db.reader() as conn:
            await conn.fetch("SELECT no_such_column FROM files")
    assert await store.get_file("default", "file-x") is None  # the store still works after
