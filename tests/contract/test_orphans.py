"""Blobs nothing refers to are collected once they have been left alone long enough; every blob
the store still refers to stays."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from batchd import ids
from batchd.blobstore import LocalBlobStore
from batchd.models import BatchStatus, StoredFile
from batchd.orphans import GRACE, collect_orphans
from batchd.store import SqlStore
from tests.contract.test_store import LEASE, NOW, make_batch, make_file, make_running_batch

pytestmark = pytest.mark.anyio

LONG_AGO = time.time() - 2 * GRACE


@pytest.fixture
def blobs(tmp_path: Path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "blobs")


async def put(blobs: LocalBlobStore, key: str, *, modified: float = LONG_AGO) -> None:
    writer = blobs.writer(key)
    await writer.write(b"bytes\n")
    await writer.commit()
    os.utime(blobs.root / key, (modified, modified))


async def keys(blobs: LocalBlobStore) -> set[str]:
    return {blob.key async for blob in blobs.list()}


async def test_an_uploaded_files_bytes_stay_while_its_row_does(
    store: SqlStore, blobs: LocalBlobStore
) -> None:
    """A file's bytes are kept; bytes whose file row never came (or went) are deleted."""
    kept = await make_file(store)
    orphan = f"files/{ids.file_id()}"
    await put(blobs, kept.blob_key)
    await put(blobs, orphan)

    assert await collect_orphans(store, blobs, time.time()) == 1

    assert await keys(blobs) == {kept.blob_key}


async def test_a_deleted_files_bytes_stay_while_a_batch_reads_them(
    store: SqlStore, blobs: LocalBlobStore
) -> None:
    """A file deleted while a batch runs keeps its bytes until that batch ends."""
    file_id = ids.file_id()
    await make_running_batch(store, input_file_id=file_id)
    await put(blobs, f"files/{file_id}")

    assert await collect_orphans(store, blobs, time.time()) == 0


async def test_young_blobs_are_never_collected(store: SqlStore, blobs: LocalBlobStore) -> None:
    """A blob written within the grace period may be about to be recorded: it stays."""
    await put(blobs, f"files/{ids.file_id()}", modified=time.time())

    assert await collect_orphans(store, blobs, time.time()) == 0


async def test_result_parts_stay_while_their_rows_do(
    store: SqlStore, blobs: LocalBlobStore
) -> None:
    """A result part with a row stays; one without is deleted."""
    batch = await make_running_batch(store)
    part = await store.add_result_part(batch.id, "output")
    await put(blobs, f"batches/{batch.id}/parts/{part}.jsonl")
    await put(blobs, f"batches/{batch.id}/parts/{part + 1}.jsonl")

    assert await collect_orphans(store, blobs, time.time()) == 1

    assert await keys(blobs) == {f"batches/{batch.id}/parts/{part}.jsonl"}


async def test_output_files_stay_while_their_batch_runs_or_their_file_exists(
    store: SqlStore, blobs: LocalBlobStore
) -> None:
    """A running batch's output being written stays, as does a finished batch's output file;
    the output of a finished batch that never recorded it, or of no batch at all, goes."""
    running = await make_running_batch(store)
    finished = await make_batch(store, status=BatchStatus.FINALIZING)
    assert await store.claim_batch_to_finalize("w", NOW, NOW + LEASE) is not None
    output = StoredFile(
        id=ids.file_id(),
        project="default",
        purpose="batch_output",
        filename="out.jsonl",
        bytes=6,
        created_at=NOW,
        expires_at=None,
        blob_key=f"batches/{finished.id}/output.jsonl",
    )
    assert await store.finish_batch(finished.id, "w", BatchStatus.COMPLETED, NOW, output, None)
    for key in (
        f"batches/{running.id}/output.jsonl",
        output.blob_key,
        f"batches/{finished.id}/error.jsonl",
        f"batches/{ids.batch_id()}/output.jsonl",
    ):
        await put(blobs, key)

    assert await collect_orphans(store, blobs, time.time()) == 2

    assert await keys(blobs) == {f"batches/{running.id}/output.jsonl", output.blob_key}


async def test_keys_of_unknown_shape_are_left_alone(store: SqlStore, blobs: LocalBlobStore) -> None:
    """Only blobs batchd knows how to own are ever collected."""
    await put(blobs, "elsewhere/thing")
    await put(blobs, "files/not-a-file-id")

    assert await collect_orphans(store, blobs, time.time()) == 0


async def test_unfinished_writes_are_discarded(store: SqlStore, blobs: LocalBlobStore) -> None:
    """The temporary bytes of an upload whose process died are removed after the grace."""
    writer = blobs.writer(f"files/{ids.file_id()}")
    await writer.write(bytes(2 << 20))  # past the writer's buffer: on disk
    (temp,) = (blobs.root / "files").iterdir()
    os.utime(temp, (LONG_AGO, LONG_AGO))

    assert await collect_orphans(store, blobs, time.time()) == 1

    assert not temp.exists()
    await writer.abort()
