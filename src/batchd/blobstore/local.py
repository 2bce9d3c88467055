"""Blobs as files in a local folder. File I/O runs in threads, never on the event loop, but for
the writes to result parts: copies into the page cache, cheaper than the trip to a thread (their
sync to disk still goes to one)."""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import secrets
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from batchd.blobstore.base import BlobInfo, BlobStore, BlobWriter, check_key
from batchd.errors import BlobNotFound

_WRITE_BUFFER = 1 << 20
_LIST_PAGE = 1000
CHECK_BYTES = bytes(64 * 1024)
"""What a readiness check writes and syncs: real bytes, as a result part's write would."""


class LocalBlobWriter(BlobWriter):
    """Writes to a temporary file beside the target; ``commit`` syncs and renames it."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.part")
        self._file: BinaryIO | None = None
        self._new_folders: list[Path] = []
        self._pending: list[bytes] = []
        self._pending_size = 0
        self.size = 0

    async def write(self, data: bytes) -> None:
        self._pending.append(data)
        self._pending_size += len(data)
        self.size += len(data)
        if self._pending_size >= _WRITE_BUFFER:
            await self._flush()

    async def _flush(self) -> None:
        chunk, self._pending, self._pending_size = b"".join(self._pending), [], 0
        await asyncio.to_thread(self._write_sync, chunk)

    def _write_sync(self, chunk: bytes) -> None:
        if self._file is None:
            self._new_folders = _make_folders(self._path.parent)
            self._file = open(self._temp, "wb")  # noqa: SIM115 - closed in commit/abort
        self._file.write(chunk)

    async def commit(self) -> None:
        await self._flush()
        await asyncio.to_thread(self._commit_sync)

    def _commit_sync(self) -> None:
        if self._file is None:
            self._write_sync(b"")
        assert self._file is not None
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self._temp, self._path)
        for folder in {self._path.parent, *(new.parent for new in self._new_folders)}:
            _sync_directory(folder)

    async def abort(self) -> None:
        await asyncio.to_thread(self._abort_sync)

    def _abort_sync(self) -> None:
        if self._file is not None:
            self._file.close()
        self._temp.unlink(missing_ok=True)


class LocalBlobStore(BlobStore):
    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def writer(self, key: str) -> BlobWriter:
        return LocalBlobWriter(self._path(key))

    async def read(self, key: str, *, chunk_size: int = 1 << 20) -> AsyncIterator[bytes]:
        handle = await asyncio.to_thread(self._open, key)
        try:
            while chunk := await asyncio.to_thread(handle.read, chunk_size):
                yield chunk
        finally:
            handle.close()

    def _open(self, key: str) -> BinaryIO:
        try:
            return open(self._path(key), "rb")
        except FileNotFoundError as exc:
            raise BlobNotFound(f"blob {key} is missing") from exc

    async def size(self, key: str) -> int:
        try:
            stat = await asyncio.to_thread(self._path(key).stat)
        except FileNotFoundError as exc:
            raise BlobNotFound(f"blob {key} is missing") from exc
        return stat.st_size

    async def read_range(self, key: str, offset: int, length: int) -> bytes:
        return await asyncio.to_thread(self._read_range_sync, key, offset, length)

    def _read_range_sync(self, key: str, offset: int, length: int) -> bytes:
        with self._open(key) as handle:
            handle.seek(offset)
            return handle.read(length)

    async def write_at(self, writes: Sequence[tuple[str, int, bytes]]) -> None:
        # The writes themselves are copies into the page cache and run here; only the wait for
        # the disk goes to a thread, once for them all. A thread doing all of it took the GIL back
        # once per system call, and each time the event loop had to stop and hand it over; and a
        # worker running many batches writes to as many parts in one group commit.
        handles: list[int] = []
        new_in: set[Path] = set()
        try:
            for key, offset, data in writes:
                path = self._path(key)
                if not path.exists():
                    new_in.add(path.parent)
                    new_in.update(new.parent for new in _make_folders(path.parent))
                handles.append(os.open(path, os.O_WRONLY | os.O_CREAT, 0o644))
                _write_at(handles[-1], offset, data, path)
            await asyncio.to_thread(_sync_data, handles, new_in)
        finally:
            for handle in handles:
                os.close(handle)

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._path(key).unlink, True)

    async def list(self) -> AsyncIterator[BlobInfo]:
        blobs = (blob for blob in _files(self.root) if not _is_hidden(blob.key))
        while page := await asyncio.to_thread(_take, blobs, _LIST_PAGE):
            for blob in page:
                yield blob

    async def discard_unfinished(self, before: float) -> int:
        """A write in progress lives in a hidden file beside its blob (as does the readiness
        check's probe): those not written to since ``before`` were left by a dead process. Other
        hidden files (``.nfs…``, an operator's) are not batchd's and stay."""
        return await asyncio.to_thread(self._discard_unfinished_sync, before)

    def _discard_unfinished_sync(self, before: float) -> int:
        stale = [
            blob.key
            for blob in _files(self.root)
            if _UNFINISHED.fullmatch(blob.key.rpartition("/")[2]) and blob.modified < before
        ]
        for key in stale:
            self._path(key).unlink(missing_ok=True)
        return len(stale)

    async def check(self) -> None:
        await asyncio.to_thread(self.root.mkdir, parents=True, exist_ok=True)
        key = f".probe-{secrets.token_hex(4)}"
        writer = self.writer(key)
        try:
            await writer.write(CHECK_BYTES)  # an empty file takes no block: a full disk allows it
            await writer.commit()
        except BaseException:
            await writer.abort()
            raise
        await self.delete(key)


def _walk(folder: Path) -> Iterator[os.DirEntry[str]]:
    """Every file under ``folder``, however deep; nothing when it does not exist."""
    try:
        entries = os.scandir(folder)
    except FileNotFoundError:
        return
    with entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                yield from _walk(Path(entry.path))
            elif entry.is_file(follow_symlinks=False):
                yield entry


def _files(root: Path) -> Iterator[BlobInfo]:
    for entry in _walk(root):
        try:
            stat = entry.stat()
        except FileNotFoundError:  # deleted while the walk went on
            continue
        yield BlobInfo(Path(entry.path).relative_to(root).as_posix(), stat.st_size, stat.st_mtime)


_UNFINISHED = re.compile(r"\..+\.[0-9a-f]{8}\.part|\.probe-[0-9a-f]{8}")
"""The names ``LocalBlobWriter`` and ``check`` write under."""


def _is_hidden(key: str) -> bool:
    return key.rpartition("/")[2].startswith(".")


def _take(items: Iterator[BlobInfo], count: int) -> list[BlobInfo]:
    return list(itertools.islice(items, count))


def _make_folders(folder: Path) -> list[Path]:
    """Create ``folder`` and any missing parents; those it created (whose entries in their own
    parents must be synced, too, for a file in them to survive a power cut)."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for new in reversed(missing):
        new.mkdir(exist_ok=True)
    return missing


def _sync_directory(path: Path) -> None:
    """Make a file's creation or renaming in ``path`` durable."""
    directory = os.open(path, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _write_at(handle: int, offset: int, data: bytes, path: Path) -> None:
    size = os.fstat(handle).st_size
    if size < offset:
        raise OSError(f"{path} holds {size} bytes, fewer than the {offset} written")
    if size > offset:
        os.ftruncate(handle, offset)
    view = memoryview(data)
    while view:
        written = os.pwrite(handle, view, offset)
        offset += written
        view = view[written:]


def _sync_data(handles: list[int], new_in: set[Path]) -> None:
    """Make written bytes durable, and the creation of new files in the folders ``new_in``."""
    for handle in handles:
        os.fdatasync(handle)
    for folder in new_in:
        _sync_directory(folder)
