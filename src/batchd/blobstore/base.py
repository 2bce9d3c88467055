"""The seam for file bytes. Blobs are written once, through a writer that makes them appear
whole or not at all, or grown a durable write at a time (the workers' result parts); they are
read as streams or byte ranges."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass


def check_key(key: str) -> str:
    """The key, unless it climbs out of the store's root or is absolute (then ValueError)."""
    if ".." in key.split("/") or key.startswith("/"):
        raise ValueError(f"bad blob key {key!r}")
    return key


@dataclass(frozen=True)
class BlobInfo:
    key: str
    size: int
    modified: float
    """When its last byte was written, in seconds since the epoch."""


class BlobWriter(ABC):
    """Bytes go in with ``write``; ``commit`` makes the blob visible and durable."""

    size: int = 0

    @abstractmethod
    async def write(self, data: bytes) -> None: ...

    @abstractmethod
    async def commit(self) -> None: ...

    @abstractmethod
    async def abort(self) -> None: ...


class BlobStore(ABC):
    @abstractmethod
    def writer(self, key: str) -> BlobWriter: ...

    @abstractmethod
    def read(self, key: str, *, chunk_size: int = 1 << 20) -> AsyncIterator[bytes]:
        """The blob's bytes, a chunk at a time. Raises BlobNotFound."""

    @abstractmethod
    async def read_range(self, key: str, offset: int, length: int) -> bytes: ...

    @abstractmethod
    async def size(self, key: str) -> int:
        """The blob's size in bytes. Raises BlobNotFound."""

    @abstractmethod
    async def write_at(self, writes: Sequence[tuple[str, int, bytes]]) -> None:
        """For each ``(key, offset, data)``, write ``data`` at ``offset`` of the blob, creating it
        if missing and cutting off whatever lay at or past ``offset``; all are durable before
        this returns. A blob must hold at least ``offset`` bytes. One writer per key. Raises
        OSError."""

    @abstractmethod
    async def delete(self, key: str) -> None:
        """Remove the blob; a missing blob is not an error."""

    @abstractmethod
    def list(self) -> AsyncIterator[BlobInfo]:
        """Every committed blob, in no particular order, a page of them at a time."""

    @abstractmethod
    async def discard_unfinished(self, before: float) -> int:
        """Remove the bytes of writes begun but never committed nor aborted (their process
        died) whose last byte came before ``before`` (seconds since the epoch); how many."""

    @abstractmethod
    async def check(self) -> None:
        """Raise unless the store can be written."""
