"""The blob store's contract, on every implementation: blobs appear whole on commit or not at
all, and blobs grown by ``write_at`` read back as what was written, cut where each write began."""

from __future__ import annotations

import pytest

from batchd.blobstore import BlobStore
from batchd.errors import BlobNotFound

pytestmark = pytest.mark.anyio

BIG = 3 * (1 << 20) + 17  # over the local writer's buffer, so bytes reach disk before commit


async def put(blobs: BlobStore, key: str, *parts: bytes) -> None:
    writer = blobs.writer(key)
    for part in parts:
        await writer.write(part)
    await writer.commit()


async def read_all(blobs: BlobStore, key: str, chunk_size: int = 1 << 20) -> bytes:
    return b"".join([chunk async for chunk in blobs.read(key, chunk_size=chunk_size)])


async def listed(blobs: BlobStore) -> dict[str, int]:
    return {blob.key: blob.size async for blob in blobs.list()}


async def test_write_commit_read(blobs: BlobStore) -> None:
    """Committed bytes read back whole, in chunks of the asked size."""
    await put(blobs, "files/a.jsonl", b"hello ", b"world\n")
    assert await read_all(blobs, "files/a.jsonl") == b"hello world\n"
    chunks = [chunk async for chunk in blobs.read("files/a.jsonl", chunk_size=5)]
    assert chunks == [b"hello", b" worl", b"d\n"]


async def test_writer_counts_size(blobs: BlobStore) -> None:
    """The writer's size is the number of bytes written."""
    writer = blobs.writer("k")
    await writer.write(b"abc")
    await writer.write(b"de")
    assert writer.size == 5
    await writer.commit()


async def test_large_blob_round_trip(blobs: BlobStore) -> None:
    """A blob bigger than the write buffer round-trips byte for byte."""
    data = bytes(range(256)) * (BIG // 256 + 1)
    await put(blobs, "big", *(data[i : i + 65_536] for i in range(0, len(data), 65_536)))
    assert await read_all(blobs, "big") == data


async def test_empty_blob(blobs: BlobStore) -> None:
    """A blob committed without writes exists and is empty."""
    await put(blobs, "empty")
    assert await read_all(blobs, "empty") == b""
    assert await blobs.size("empty") == 0
    assert await blobs.read_range("empty", 0, 5) == b""


async def test_read_range(blobs: BlobStore) -> None:
    """A range reads exactly those bytes; a range past the end is cut short."""
    await put(blobs, "k", b"0123456789")
    assert await blobs.read_range("k", 3, 4) == b"3456"
    assert await blobs.read_range("k", 8, 10) == b"89"
    assert await blobs.read_range("k", 20, 5) == b""


async def test_delete(blobs: BlobStore) -> None:
    """A deleted blob is gone; deleting a missing blob is not an error."""
    await put(blobs, "k", b"x")
    await blobs.delete("k")
    with pytest.raises(BlobNotFound):
        await read_all(blobs, "k")
    await blobs.delete("k")


async def test_overwrite_replaces(blobs: BlobStore) -> None:
    """Committing to an existing key replaces the blob whole."""
    await put(blobs, "k", b"old contents")
    await put(blobs, "k", b"new")
    assert await read_all(blobs, "k") == b"new"


async def test_abort_leaves_nothing(blobs: BlobStore) -> None:
    """An aborted write leaves no blob."""
    writer = blobs.writer("files/x")
    await writer.write(b"a" * BIG)
    await writer.abort()
    assert await listed(blobs) == {}
    with pytest.raises(BlobNotFound):
        await read_all(blobs, "files/x")


async def test_abort_before_any_write(blobs: BlobStore) -> None:
    """Aborting an untouched writer is harmless."""
    await blobs.writer("k").abort()
    assert await listed(blobs) == {}


async def test_no_partial_blob_before_commit(blobs: BlobStore) -> None:
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
    assert await listed(blobs) == {"new": BIG, "old": BIG}


@pytest.mark.parametrize("key", ["missing", "nested/missing.jsonl"])
async def test_missing_blob(blobs: BlobStore, key: str) -> None:
    """Reading a missing blob raises BlobNotFound, as a stream, a range or a size."""
    with pytest.raises(BlobNotFound):
        await read_all(blobs, key)
    with pytest.raises(BlobNotFound):
        await blobs.read_range(key, 0, 1)
    with pytest.raises(BlobNotFound):
        await blobs.size(key)


@pytest.mark.parametrize("key", ["../escape", "a/../../b", "a/..", "..", "/etc/passwd"])
async def test_bad_keys_rejected(blobs: BlobStore, key: str) -> None:
    """Keys that climb out of the root or are absolute are refused for every operation."""
    with pytest.raises(ValueError, match="bad blob key"):
        blobs.writer(key)
    with pytest.raises(ValueError, match="bad blob key"):
        await read_all(blobs, key)
    with pytest.raises(ValueError, match="bad blob key"):
        await blobs.read_range(key, 0, 1)
    with pytest.raises(ValueError, match="bad blob key"):
        await blobs.delete(key)


async def test_dots_inside_names_are_fine(blobs: BlobStore) -> None:
    """Dots that do not form a ``..`` segment are ordinary characters."""
    await put(blobs, "a..b/c...jsonl", b"ok")
    assert await read_all(blobs, "a..b/c...jsonl") == b"ok"


async def test_check_leaves_nothing_behind(blobs: BlobStore) -> None:
    await blobs.check()
    assert await listed(blobs) == {}


async def test_write_at_grows_a_blob_and_cuts_off_what_lay_past_it(blobs: BlobStore) -> None:
    await blobs.write_at([("parts/1.jsonl", 0, b"one\n"), ("parts/2.jsonl", 0, b"uno\n")])
    await blobs.write_at([("parts/1.jsonl", 4, b"two\nhalf of thr")])
    await blobs.write_at([("parts/1.jsonl", 8, b"three\n")])  # over what a failed write left
    assert await read_all(blobs, "parts/1.jsonl") == b"one\ntwo\nthree\n"
    assert await read_all(blobs, "parts/1.jsonl", chunk_size=3) == b"one\ntwo\nthree\n"
    assert await read_all(blobs, "parts/2.jsonl") == b"uno\n"
    assert await blobs.size("parts/1.jsonl") == 14
    assert await blobs.read_range("parts/1.jsonl", 2, 8) == b"e\ntwo\nth"
    assert await blobs.read_range("parts/1.jsonl", 10, 10) == b"ree\n"
    assert await blobs.read_range("parts/1.jsonl", 14, 10) == b""


async def test_write_at_many_writes_to_one_blob_in_one_call(blobs: BlobStore) -> None:
    """Writes to one blob in one call land in order (a large line is written on its own)."""
    await blobs.write_at([("p", 0, b"a\n"), ("p", 2, b"b" * 100), ("p", 102, b"\nc\n")])
    assert await read_all(blobs, "p") == b"a\n" + b"b" * 100 + b"\nc\n"


async def test_write_at_past_the_end_is_refused(blobs: BlobStore) -> None:
    """Bytes before ``offset`` were written durably, or the caller's accounting is wrong: a gap
    is never filled with zeros."""
    await blobs.write_at([("parts/1.jsonl", 0, b"one\n")])
    with pytest.raises(OSError, match="fewer than"):
        await blobs.write_at([("parts/1.jsonl", 9, b"two\n")])
    assert await read_all(blobs, "parts/1.jsonl") == b"one\n"


async def test_write_at_from_the_start_replaces_the_blob(blobs: BlobStore) -> None:
    await blobs.write_at([("p", 0, b"first version\n")])
    await blobs.write_at([("p", 6, b"second\n")])
    await blobs.write_at([("p", 0, b"new\n")])
    assert await read_all(blobs, "p") == b"new\n"


async def test_a_grown_blob_is_listed_and_deleted_whole(blobs: BlobStore) -> None:
    await blobs.write_at([("batches/b/parts/1.jsonl", 0, b"one\n")])
    await blobs.write_at([("batches/b/parts/1.jsonl", 4, b"two\n")])
    await put(blobs, "batches/b/parts/10.jsonl", b"x")
    assert await listed(blobs) == {"batches/b/parts/1.jsonl": 8, "batches/b/parts/10.jsonl": 1}

    await blobs.delete("batches/b/parts/1.jsonl")

    assert await listed(blobs) == {"batches/b/parts/10.jsonl": 1}
    with pytest.raises(BlobNotFound):
        await blobs.size("batches/b/parts/1.jsonl")


async def test_size_is_the_blobs_bytes(blobs: BlobStore) -> None:
    await put(blobs, "files/a", b"12345")
    assert await blobs.size("files/a") == 5


async def test_list_names_every_committed_blob_with_its_size(blobs: BlobStore) -> None:
    """``list`` yields each committed blob, however deep, with its size: not writes in progress."""
    await put(blobs, "files/a", b"abc")
    await put(blobs, "batches/b/parts/1.jsonl", b"12345")
    writer = blobs.writer("files/unfinished")
    await writer.write(BIG * b"x")

    assert await listed(blobs) == {"files/a": 3, "batches/b/parts/1.jsonl": 5}
    await writer.abort()


async def test_list_of_an_empty_store_is_empty(blobs: BlobStore) -> None:
    """A store never written to lists nothing."""
    assert await listed(blobs) == {}
