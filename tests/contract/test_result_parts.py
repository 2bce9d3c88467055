"""Result parts against a real store and every blob store: output lines are written once to each
worker's parts, and finalizing puts every line into the output or error file exactly once,
whatever was written to a part without being counted."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import orjson
import pytest

from batchd.blobstore import BlobStore
from batchd.models import Batch, BatchStatus, RequestResult, RequestState
from batchd.store import SqlStore
from batchd.worker import finalize as finalize_module
from batchd.worker import spool as spool_module
from batchd.worker.commits import GroupCommitter
from batchd.worker.finalize import Finalizer
from batchd.worker.spool import ResultSpool
from tests.contract.test_store import DAY, LEASE, NOW, fetch, make_running_batch, result

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True)
def every_line_to_a_part(monkeypatch: pytest.MonkeyPatch) -> None:
    """These batches are small: without this their lines would stay in the store."""
    monkeypatch.setattr(spool_module, "KEPT_IN_STORE", 0)


async def commit(
    store: SqlStore, spool: ResultSpool, owner: str, results: list[RequestResult]
) -> None:
    """What a worker's group commit does: write the lines to its parts, then record them."""
    await spool.place(results)
    await store.record_results(owner, results)


async def finalize(store: SqlStore, blobs: BlobStore, batch: Batch, now: int = NOW) -> Batch:
    claimed = await store.claim_batch_to_finalize("f", now, now + LEASE)
    assert claimed is not None
    assert claimed.id == batch.id
    await Finalizer(store, blobs).run(claimed, "f", now)
    return await fetch(store, batch.id)


async def lines_of(store: SqlStore, blobs: BlobStore, file_id: str | None) -> list[bytes]:
    if file_id is None:
        return []
    file = await store.get_file("default", file_id)
    assert file is not None
    return b"".join([chunk async for chunk in blobs.read(file.blob_key)]).splitlines()


async def parts_left(blobs: BlobStore) -> list[str]:
    return sorted([blob.key async for blob in blobs.list() if "/parts/" in blob.key])


async def read_blob(blobs: BlobStore, key: str) -> bytes:
    return b"".join([chunk async for chunk in blobs.read(key)])


async def test_every_line_lands_once_in_its_file(store: SqlStore, blobs: BlobStore) -> None:
    batch = await make_running_batch(store, lines=4)
    claims = await store.claim_requests(batch.id, "w", 4, NOW, NOW + LEASE)
    spool = ResultSpool(store, blobs)
    await commit(store, spool, "w", [result(claims[0]), result(claims[2], RequestState.FAILED)])
    await commit(store, spool, "w", [result(claims[1]), result(claims[3])])

    done = await finalize(store, blobs, batch)

    assert done.status is BatchStatus.COMPLETED
    assert await lines_of(store, blobs, done.output_file_id) == [
        b'{"line":1}',
        b'{"line":2}',
        b'{"line":4}',
    ]
    assert await lines_of(store, blobs, done.error_file_id) == [b'{"line":3}']
    assert await parts_left(blobs) == []
    assert await store.result_parts(batch.id) == []


async def test_large_lines_are_written_on_their_own_and_land_whole(
    store: SqlStore, blobs: BlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lines past LARGE_LINE are written apart from their group's small ones (no copy of the
    whole group), and every byte still lands where the store says, in order; past
    KEPT_LINE_BYTES a line goes to a part even among the first lines of a batch. (Files keep
    no order: parts come first.)"""
    monkeypatch.setattr(spool_module, "KEPT_IN_STORE", 256)
    monkeypatch.setattr(spool_module, "LARGE_LINE", 64)
    monkeypatch.setattr(spool_module, "KEPT_LINE_BYTES", 64)
    batch = await make_running_batch(store, lines=6)
    claims = await store.claim_requests(batch.id, "w", 6, NOW, NOW + LEASE)
    sizes = [10, 200, 10, 10, 300, 400]
    results = [
        RequestResult(c.batch_id, c.line, RequestState.SUCCEEDED, _padded(c.line, n), span=c.span)
        for c, n in zip(claims, sizes, strict=True)
    ]
    await commit(store, ResultSpool(store, blobs), "w", results)
    assert [r.part is not None for r in results] == [False, True, False, False, True, True]

    done = await finalize(store, blobs, batch)

    assert sorted(await lines_of(store, blobs, done.output_file_id)) == sorted(
        _padded(line, size) for line, size in zip(range(1, 7), sizes, strict=True)
    )


def _padded(line: int, size: int) -> bytes:
    return orjson.dumps({"line": line, "pad": "x" * size})


async def test_lines_of_a_lost_lease_are_not_copied(store: SqlStore, blobs: BlobStore) -> None:
    """A worker whose span was taken over still writes its late answers to its part; they are
    not counted, so that part is read line by line, not copied whole."""
    batch = await make_running_batch(store, lines=4)
    a, b = ResultSpool(store, blobs), ResultSpool(store, blobs)
    claims = await store.claim_requests(batch.id, "a", 4, NOW, NOW + LEASE)
    await commit(store, a, "a", [result(claims[0])])
    taken = await store.claim_requests(batch.id, "b", 4, NOW + LEASE + 1, NOW + 2 * LEASE)
    await commit(store, b, "b", [result(c) for c in taken])
    await commit(store, a, "a", [result(c) for c in claims[1:]])  # too late: not counted

    done = await finalize(store, blobs, batch, NOW + LEASE + 2)

    assert done.completed == 4
    assert sorted(await lines_of(store, blobs, done.output_file_id)) == [
        b'{"line":%d}' % line for line in range(1, 5)
    ]


async def test_lines_written_but_never_committed_are_not_copied(
    store: SqlStore, blobs: BlobStore
) -> None:
    """A worker that stopped between writing a group and committing it leaves the group's lines
    at the end of its part, past what was committed."""
    batch = await make_running_batch(store, lines=3)
    claims = await store.claim_requests(batch.id, "a", 3, NOW, NOW + LEASE)
    spool = ResultSpool(store, blobs)
    first = [result(claims[0])]
    await spool.place(first)
    await store.record_results("a", first)
    await spool.place([result(c) for c in claims[1:]])  # then it stopped
    taken = await store.claim_requests(batch.id, "b", 3, NOW + LEASE + 1, NOW + 2 * LEASE)
    await commit(store, ResultSpool(store, blobs), "b", [result(c) for c in taken])

    done = await finalize(store, blobs, batch, NOW + LEASE + 2)

    assert sorted(await lines_of(store, blobs, done.output_file_id)) == [
        b'{"line":1}',
        b'{"line":2}',
        b'{"line":3}',
    ]


async def test_results_from_before_parts_and_skipped_lines_are_kept(
    store: SqlStore, blobs: BlobStore
) -> None:
    """Results committed with their line in the store (before the upgrade that brought parts)
    and lines closed as expired go into the files beside the parts."""
    batch = await make_running_batch(store, lines=3)
    claims = await store.claim_requests(batch.id, "w", 3, NOW, NOW + LEASE)
    await store.record_results("w", [result(claims[0])])  # the line kept in the store
    await commit(store, ResultSpool(store, blobs), "w", [result(claims[1], RequestState.FAILED)])

    done = await finalize(store, blobs, batch, NOW + DAY + 1)  # the window has ended

    assert done.status is BatchStatus.EXPIRED
    assert await lines_of(store, blobs, done.output_file_id) == [b'{"line":1}']
    errors = await lines_of(store, blobs, done.error_file_id)
    assert errors[0] == b'{"line":2}'
    assert b'"code":"batch_expired"' in errors[1]
    assert len(errors) == 2


def tear_the_second_write(blobs: BlobStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """A store that writes half of the second write and then refuses it."""
    write_at = blobs.write_at
    calls = []

    async def torn(writes: Sequence[tuple[str, int, bytes]]) -> None:
        calls.append(writes)
        if len(calls) == 2:
            await write_at([(key, at, data[: len(data) // 2]) for key, at, data in writes])
            raise OSError("no space left on device")
        await write_at(writes)

    monkeypatch.setattr(blobs, "write_at", torn)


async def test_a_failed_write_moves_its_group_to_new_parts(
    store: SqlStore, blobs: BlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    tear_the_second_write(blobs, monkeypatch)
    batch = await make_running_batch(store, lines=3)
    claims = await store.claim_requests(batch.id, "w", 3, NOW, NOW + LEASE)
    spool = ResultSpool(store, blobs)
    await commit(store, spool, "w", [result(claims[0])])
    group = [result(c) for c in claims[1:]]
    with pytest.raises(OSError, match="no space"):
        await spool.place(group)
    await commit(store, spool, "w", group)  # as the group committer retries

    assert len(await store.result_parts(batch.id)) == 2
    done = await finalize(store, blobs, batch)

    assert sorted(await lines_of(store, blobs, done.output_file_id)) == [
        b'{"line":1}',
        b'{"line":2}',
        b'{"line":3}',
    ]


async def test_a_late_answer_for_a_finished_batch_does_not_block_commits(
    store: SqlStore, blobs: BlobStore
) -> None:
    """A worker whose span was taken over may answer after the batch was finished and its parts
    deleted: the write goes to a new part, the commit ignores the answer, and the worker's other
    results still commit."""
    batch = await make_running_batch(store, lines=2)
    other = await make_running_batch(store, lines=1)
    late = ResultSpool(store, blobs)
    claims = await store.claim_requests(batch.id, "a", 2, NOW, NOW + LEASE)
    await commit(store, late, "a", [result(claims[0])])
    taken = await store.claim_requests(batch.id, "b", 2, NOW + LEASE + 1, NOW + 2 * LEASE)
    await commit(store, ResultSpool(store, blobs), "b", [result(c) for c in taken])
    await finalize(store, blobs, batch, NOW + LEASE + 2)
    mine = await store.claim_requests(other.id, "a", 1, NOW + LEASE + 2, NOW + 2 * LEASE)

    committer = GroupCommitter(store, late, "a", on_commit=lambda: None)
    running = asyncio.create_task(committer.run())
    committer.add(result(claims[1]))
    committer.add(result(mine[0]))
    await asyncio.wait_for(committer.flush(), timeout=30)
    running.cancel()

    assert (await fetch(store, batch.id)).completed == 2
    assert (await fetch(store, other.id)).completed == 1


async def test_parts_forgotten_past_the_limit_are_not_the_groups_own(
    store: SqlStore, blobs: BlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker remembers a bounded number of parts; those of the group being placed are never
    the ones it forgets."""
    monkeypatch.setattr(spool_module, "MAX_OPEN_PARTS", 2)
    batches = [await make_running_batch(store, lines=2) for _ in range(3)]
    claims = [await store.claim_requests(b.id, "w", 2, NOW, NOW + LEASE) for b in batches]
    spool = ResultSpool(store, blobs)
    await commit(store, spool, "w", [result(claims[0][0])])
    await commit(store, spool, "w", [result(claims[1][0])])
    await commit(store, spool, "w", [result(claims[0][1]), result(claims[2][0])])
    await commit(store, spool, "w", [result(claims[1][1]), result(claims[2][1])])

    for batch in batches:
        done = await finalize(store, blobs, batch)
        assert await lines_of(store, blobs, done.output_file_id) == [b'{"line":1}', b'{"line":2}']


async def test_the_first_lines_of_a_batch_stay_in_the_store(
    store: SqlStore, blobs: BlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A small batch costs no part; a larger one keeps its first lines in the store and writes
    the rest to parts, and its files hold every line once either way."""
    monkeypatch.setattr(spool_module, "KEPT_IN_STORE", 2)
    batch = await make_running_batch(store, lines=5)
    claims = await store.claim_requests(batch.id, "w", 5, NOW, NOW + LEASE)
    spool = ResultSpool(store, blobs)
    await commit(store, spool, "w", [result(claims[0]), result(claims[1], RequestState.FAILED)])
    assert await store.result_parts(batch.id) == []
    await commit(store, spool, "w", [result(c) for c in claims[2:]])
    assert [part.lines for part in await store.result_parts(batch.id)] == [3]

    done = await finalize(store, blobs, batch)

    assert sorted(await lines_of(store, blobs, done.output_file_id)) == [
        b'{"line":%d}' % line for line in (1, 3, 4, 5)
    ]
    assert await lines_of(store, blobs, done.error_file_id) == [b'{"line":2}']


async def test_a_deleted_part_ends_the_batch_with_its_lines_as_result_lost(
    store: SqlStore, blobs: BlobStore
) -> None:
    """A part gone from disk does not hold the batch in finalizing forever: its lines go to the
    error file as result_lost and count as failed; the other lines are copied as always."""
    batch = await make_running_batch(store, lines=4)
    claims = await store.claim_requests(batch.id, "w", 4, NOW, NOW + LEASE)
    kept, gone = ResultSpool(store, blobs), ResultSpool(store, blobs)
    await commit(store, kept, "w", [result(claims[0]), result(claims[3], RequestState.FAILED)])
    await commit(store, gone, "w", [result(claims[1]), result(claims[2], RequestState.FAILED)])
    for key in await parts_left(blobs):
        data = await read_blob(blobs, key)
        if b'"line":2' in data or b'"line":3' in data:
            await blobs.delete(key)  # the second worker's parts

    done = await finalize(store, blobs, batch)

    assert done.status is BatchStatus.COMPLETED
    assert (done.completed, done.failed) == (1, 3)
    assert await lines_of(store, blobs, done.output_file_id) == [b'{"line":1}']
    errors = await lines_of(store, blobs, done.error_file_id)
    assert [orjson.loads(e).get("error", {}).get("code") for e in errors[:2]] == [
        "result_lost",
        "result_lost",
    ]
    assert [orjson.loads(e)["custom_id"] for e in errors[:2]] == ["req-2", "req-3"]
    assert errors[2] == b'{"line":4}'
    assert await parts_left(blobs) == []


async def test_a_part_cut_short_loses_only_the_lines_past_the_cut(
    store: SqlStore, blobs: BlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lines before the cut are copied, once; those it took are result_lost. (Reads of 16
    bytes, so that the cut falls inside a run of lines read together.)"""
    monkeypatch.setattr(finalize_module, "RUN", 16)
    batch = await make_running_batch(store, lines=3)
    claims = await store.claim_requests(batch.id, "w", 3, NOW, NOW + LEASE)
    await commit(store, ResultSpool(store, blobs), "w", [result(c) for c in claims])
    (key,) = await parts_left(blobs)
    cut = (await read_blob(blobs, key))[:19]  # line 1 (11 bytes), 8 of line 2 (11)
    await blobs.delete(key)
    await blobs.write_at([(key, 0, cut)])

    done = await finalize(store, blobs, batch)

    assert (done.status, done.completed, done.failed) == (BatchStatus.COMPLETED, 1, 2)
    assert await lines_of(store, blobs, done.output_file_id) == [b'{"line":1}']
    errors = await lines_of(store, blobs, done.error_file_id)
    assert [orjson.loads(e)["error"]["code"] for e in errors] == ["result_lost"] * 2
