"""What the local blob store does on disk, beyond the contract (tests/contract/test_blobstore.py):
temporary files, folder syncs, writes a dead process left."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from batchd.blobstore import LocalBlobStore, local
from tests.contract.test_blobstore import BIG, put

pytestmark = pytest.mark.anyio


@pytest.fixture
def blobs(tmp_path: Path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "blobs")


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


async def test_abort_leaves_no_temporary_file(blobs: LocalBlobStore) -> None:
    writer = blobs.writer("files/x")
    await writer.write(b"a" * BIG)
    await writer.abort()
    assert files_under(blobs.root) == []


async def test_commit_leaves_only_the_blob(blobs: LocalBlobStore) -> None:
    await put(blobs, "new", b"b" * BIG)
    assert [p.name for p in files_under(blobs.root)] == ["new"]


async def test_check_creates_the_root(blobs: LocalBlobStore) -> None:
    await blobs.check()
    assert blobs.root.is_dir()
    assert files_under(blobs.root) == []


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

    not_ours = blobs.root / "files" / ".nfs0001"
    not_ours.write_bytes(b"x")
    os.utime(not_ours, (1_000, 1_000))

    assert await blobs.discard_unfinished(before=2_000) == 1
    assert not_ours.exists()  # hidden, old, but not a name batchd writes under

    assert not dead_temp.exists()
    await live.commit()
    assert {blob.key async for blob in blobs.list()} == {"files/kept", "files/live"}
    await dead.abort()  # only to close its handle: a dead process has none
