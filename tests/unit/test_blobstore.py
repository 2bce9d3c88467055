"""The local blob store: blobs appear whole on commit or not at all."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from batchd.blobstore import LocalBlobStore, local
from batchd.errors import BlobNotFound

pytestmark = pytest.mark.anyio

BIG = 3 * (1 << 20) + 17  # over the writer's buffer, so bytes reach disk before commit


@pytest.fixture
def blobs(tmp_path: Path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "blobs")


async def put(blobs: LocalBlobStore, key: str, *parts: bytes) -> None:
    writer = blobs.writer(key)
    for part in parts:
        await writer.write(part)
    await writer.commit()


async def read_all(blobs: LocalBlobStore, key: str, chunk_size: int = 1 << 20) -> bytes:
    return b"".join([chunk async for chunk in blobs.read(key, chunk_size=chunk_size)])


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


async def test_write_commit_read(blobs: LocalBlobStore) -> None:
    """Committed bytes read back whole, in chunks of the asked size."""
    await put(blobs, "files/a.jsonl", b"hello ", b"world\n")
    assert await read_all(blobs, "files/a.jsonl") == b"hello world\n"
    chunks = [chunk async for chunk in blobs.read("files/a.jsonl", chunk_size=5)]
    assert chunks == [b"hello", b" worl", b"d\n"]


async def test_writer_counts_size(blobs: LocalBlobStore) -> None:
    """The writer's size is the number of bytes written."""
    writer = blobs.writer("k")
    await writer.write(b"abc")
    await writer.write(b"de")
    assert writer.size == 5
    await writer.commit()


async def test_large_blob_round_trip(blobs: LocalBlobStore) -> None:
    """A blob bigger than the write buffer round-trips byte for byte."""
    data = bytes(range(256)) * (BIG // 256 + 1)
    await put(blobs, "big", *(data[i : i + 65_536] for i in range(0, len(data), 65_536)))
    assert await read_all(blobs, "big") == data


async def test_empty_blob(blobs: LocalBlobStore) -> None:
    """A blob committed without writes exists and is empty."""
    await put(blobs, "empty")
    assert await read_all(blobs, "empty") == b""


async def test_read_range(blobs: LocalBlobStore) -> None:
    """A range reads exactly those bytes; a range past the end is cut short."""
    await put(blobs, "k", b"0123456789")
    assert await blobs.read_range("k", 3, 4) == b"3456"
    assert await blobs.read_range("k", 8, 10) == b"89"
    assert await blobs.read_range("k", 20, 5) == b""


async def test_delete(blobs: LocalBlobStore) -> None:
    """A deleted blob is gone; deleting a missing blob is not an error."""
    await put(blobs, "k", b"x")
    await blobs.delete("k")
    with pytest.raises(BlobNotFound):
        await read_all(blobs, "k")
    await blobs.delete("k")


async def test_overwrite_replaces(blobs: LocalBlobStore) -> None:
    """Committing to an existing key replaces the blob whole."""
    await put(blobs, "k", b"old contents")
    await put(blobs, "k", b"new")
    assert await read_all(blobs, "k") == b"new"


async def test_abort_leaves_nothing(blobs: LocalBlobStore) -> None:
    """An aborted write leaves no blob and no temporary file."""
    writer = blobs.writer("files/x")
    await writer.write(b"a" * BIG)
    await writer.abort()
    assert files_under(blobs.root) == []
    with pytest.raises(BlobNotFound):
        await read_all(blobs, "files/x")


async def test_abort_before_any_write(blobs: LocalBlobStore) -> None:
    """Aborting an untouched writer is harmless."""
    await blobs.writer("k").abort()
    assert files_under(blobs.root) == []


async def test_no_partial_blob_before_commit(blobs: LocalBlobStore) -> None:
    """Until commit, readers see no blob (or the old one), never the partial bytes."""
    await put(blobs, "old", b"previous")
    writer = blobs.writer("new")
    await writer.write(b"b" * BIG)
    replacing = blobs.writer("old")
    await replacing.write(b"c" * BIG)
    with pytest.raises(BlobNotFound):
        await read_all(blobs, "new")
    with pytest.raises(BlobNotFound):
        await blobs.read_range("new", 0, 10)
    assert await read_all(blobs, "old") == b"previous"
    await writer.commit()
    await replacing.commit()
    assert await read_all(blobs, "new") == b"b" * BIG
    assert await read_all(blobs, "old") == b"c" * BIG
    assert [p.name for p in files_under(blobs.root)] == ["new", "old"]


@pytest.mark.parametrize("key", ["missing", "nested/missing.jsonl"])
async def test_missing_blob(blobs: LocalBlobStore, key: str) -> None:
    """Reading a missing blob raises BlobNotFound, as a stream or a range."""
    with pytest.raises(BlobNotFound):
        await read_all(blobs, key)
    with pytest.raises(BlobNotFound):
        await blobs.read_range(key, 0, 1)


@pytest.mark.parametrize("key", ["../escape", "a/../../b", "a/..", "..", "/etc/passwd"])
async def test_bad_keys_rejected(blobs: LocalBlobStore, key: str) -> None:
    """Keys that climb out of the root or are absolute are refused for every operation."""
    with pytest.raises(ValueError, match="bad blob key"):
        blobs.writer(key)
    with pytest.raises(ValueError, match="bad blob key"):
        await read_all(blobs, key)
    with pytest.raises(ValueError, match="bad blob key"):
        await blobs.read_range(key, 0, 1)
    with pytest.raises(ValueError, match="bad blob key"):
        await blobs.delete(key)


async def test_dots_inside_names_are_fine(blobs: LocalBlobStore) -> None:
    """Dots that do not form a ``..`` segment are ordinary characters."""
    await put(blobs, "a..b/c...jsonl", b"ok")
    assert await read_all(blobs, "a..b/c...jsonl") == b"ok"


async def test_check(blobs: LocalBlobStore) -> None:
    """check creates the root and leaves no probe behind."""
    await blobs.check()
    assert blobs.root.is_dir()
    assert files_under(blobs.root) == []


async def test_write_at_grows_a_blob_and_cuts_off_what_lay_past_it(blobs: LocalBlobStore) -> None:
    await blobs.write_at([("parts/1.jsonl", 0, b"one\n"), ("parts/2.jsonl", 0, b"uno\n")])
    await blobs.write_at([("parts/1.jsonl", 4, b"two\nhalf of thr")])
    await blobs.write_at([("parts/1.jsonl", 8, b"three\n")])  # over what a failed write left
    assert await read_all(blobs, "parts/1.jsonl") == b"one\ntwo\nthree\n"
    assert await read_all(blobs, "parts/2.jsonl") == b"uno\n"


async def test_write_at_past_the_end_is_refused(blobs: LocalBlobStore) -> None:
    """Bytes before ``offset`` were written durably, or the caller's accounting is wrong: a gap
    is never filled with zeros."""
    await blobs.write_at([("parts/1.jsonl", 0, b"one\n")])
    with pytest.raises(OSError, match="fewer than"):
        await blobs.write_at([("parts/1.jsonl", 9, b"two\n")])
    assert await read_all(blobs, "parts/1.jsonl") == b"one\n"


async def test_new_folders_are_synced_into_their_parents(
    blobs: LocalBlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new blob in new folders survives a power cut only if each new folder's entry in its
    parent is synced too, not only the blob's entry in its own folder."""
    synced: list[Path] = []
    monkeypatch.setattr(local, "_sync_directory", synced.append)
    blobs.root.mkdir(parents=True)
    batch = blobs.root / "batches" / "b1"

    await put(blobs, "batches/b1/output.jsonl", b"x\n")
    assert set(synced) == {blobs.root, blobs.root / "batches", batch}

    synced.clear()
    await blobs.write_at([("batches/b1/parts/1.jsonl", 0, b"x\n")])
    assert set(synced) == {batch, batch / "parts"}


async def test_size_is_the_blobs_bytes_and_a_missing_one_is_not_found(
    blobs: LocalBlobStore,
) -> None:
    writer = blobs.writer("files/a")
    await writer.write(b"12345")
    await writer.commit()
    assert await blobs.size("files/a") == 5
    with pytest.raises(BlobNotFound):
        await blobs.size("files/none")


async def test_list_names_every_committed_blob_with_its_size(blobs: LocalBlobStore) -> None:
    """``list`` yields each committed blob, however deep, with its size: not writes in progress."""
    await put(blobs, "files/a", b"abc")
    await put(blobs, "batches/b/parts/1.jsonl", b"12345")
    writer = blobs.writer("files/unfinished")
    await writer.write(BIG * b"x")  # reaches disk under a hidden name

    listed = {blob.key: blob.size async for blob in blobs.list()}

    assert listed == {"files/a": 3, "batches/b/parts/1.jsonl": 5}
    await writer.abort()


async def test_list_of_an_empty_store_is_empty(blobs: LocalBlobStore) -> None:
    """A store never written to lists nothing (its folder does not exist yet)."""
    assert [blob async for blob in blobs.list()] == []


async def test_discard_unfinished_removes_only_writes_left_alone(blobs: LocalBlobStore) -> None:
    """A write whose process died (its bytes untouched since ``before``) is removed; a write
    still going and committed blobs stay."""
    await put(blobs, "files/kept", b"abc")
    dead = blobs.writer("files/dead")
    await dead.write(BIG * b"x")
    live = blobs.writer("files/live")
    await live.write(BIG * b"y")
    dead_temp = next(p for p in files_under(blobs.root) if p.name.startswith(".dead"))
    os.utime(dead_temp, (1_000, 1_000))

    assert await blobs.discard_unfinished(before=2_000) == 1

    assert not dead_temp.exists()
    await live.commit()
    assert {blob.key async for blob in blobs.list()} == {"files/kept", "files/live"}
    await dead.abort()  # only to close its handle: a dead process has none
