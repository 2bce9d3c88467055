"""Blobs as objects in an S3-compatible bucket (``s3://BUCKET/PREFIX``), through obstore (the Rust
object_store crate): per request it costs a fifth of the CPU of aiobotocore
(``bench/s3_clients.py``), and workers make one per group commit and per span of input lines.

The endpoint, credentials and region come from the standard AWS variables (``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``…), read by the client itself.

Objects cannot be appended to, so a blob grown by ``write_at`` (a worker's result part) is kept as
segments, one object per write, named by the offset it starts at: ``KEY.segments/OFFSET``. A blob
is read by stitching its segments in order, each cut where the next begins (a write cuts off what
lay past its offset). Blobs written whole are single objects, streamed up as a multipart upload a
part at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import obstore
from obstore.exceptions import BaseError
from obstore.store import S3Store

from batchd.blobstore.base import BlobInfo, BlobStore, BlobWriter, check_key
from batchd.blobstore.local import CHECK_BYTES
from batchd.blobstore.s3_uploads import Uploads
from batchd.errors import BlobNotFound

if TYPE_CHECKING:
    from obstore import AsyncWritableFile, ObjectMeta

PART_SIZE = 8 << 20
"""Bytes of an upload held in memory before they go up as one part of its multipart upload."""
PARTS_IN_FLIGHT = 2
LIST_PAGE = 1000
LONGEST_UPLOAD = 23 * 3600
"""Seconds past the orphans' grace that an unfinished multipart upload may still be going: with
the grace, a day from its start, as a bucket's usual AbortIncompleteMultipartUpload rule."""
KNOWN_PARTS = 8192
"""Blobs grown by this process whose end it remembers (a worker's open parts are fewer)."""
_SEGMENTS = ".segments"
_SEGMENT = re.compile(r"(?P<key>.+)\.segments/(?P<offset>\d{20})")


class S3BlobWriter(BlobWriter):
    """An object store writer: a single PUT at commit when the blob fits in one part, else a
    multipart upload that ``commit`` completes. obstore cannot abort an upload it began: an
    aborted one is left for ``discard_unfinished``, invisible meanwhile."""

    def __init__(self, store: S3Store, key: str) -> None:
        self._file: AsyncWritableFile | None = obstore.open_writer_async(
            store, key, buffer_size=PART_SIZE, max_concurrency=PARTS_IN_FLIGHT
        )
        self._key = key
        self.size = 0

    async def write(self, data: bytes) -> None:
        assert self._file is not None, "write after commit or abort"
        with _translated(self._key):
            await self._file.write(data)
        self.size += len(data)

    async def commit(self) -> None:
        assert self._file is not None, "commit after commit or abort"
        with _translated(self._key):
            await self._file.close()
        self._file = None

    async def abort(self) -> None:
        self._file = None


@dataclass(frozen=True, slots=True)
class _Segment:
    offset: int
    size: int
    modified: float

    def end_before(self, following: _Segment | None) -> int:
        """Where its bytes end: at its own end, or where the next segment begins."""
        end = self.offset + self.size
        return end if following is None else min(end, following.offset)


class S3BlobStore(BlobStore):
    def __init__(self, bucket: str, prefix: str = "") -> None:
        # http endpoints are allowed: the operator's AWS_ENDPOINT_URL names the scheme it wants
        self._store = S3Store(bucket, prefix=prefix or None, client_options={"allow_http": True})
        self._uploads = Uploads(bucket, prefix)
        self._ends: OrderedDict[str, int] = OrderedDict()
        """Where each part this process grows ends: one LIST for a part's first write, none
        after (the spool appends, so a write at the end needs to know nothing more)."""

    def writer(self, key: str) -> BlobWriter:
        return S3BlobWriter(self._store, check_key(key))

    async def read(self, key: str, *, chunk_size: int = 1 << 20) -> AsyncIterator[bytes]:
        pending = bytearray()
        async for chunk in self._chunks(check_key(key), chunk_size):
            pending += chunk
            while len(pending) >= chunk_size:
                yield bytes(pending[:chunk_size])
                del pending[:chunk_size]
        if pending:
            yield bytes(pending)

    async def _chunks(self, key: str, chunk_size: int) -> AsyncIterator[bytes]:
        with _translated(key):
            try:
                result = await obstore.get_async(self._store, key)
            except FileNotFoundError:
                for offset, end in _spans(await self._segments(key)):
                    path = _segment_path(key, offset)
                    yield bytes(
                        await obstore.get_range_async(self._store, path, start=0, end=end - offset)
                    )
                return
            async for chunk in result.stream(min_chunk_size=chunk_size):
                yield bytes(chunk)

    async def read_range(self, key: str, offset: int, length: int) -> bytes:
        check_key(key)
        with _translated(key):
            try:
                return bytes(
                    await obstore.get_range_async(self._store, key, start=offset, length=length)
                )
            except FileNotFoundError:
                return await self._read_segments(key, offset, offset + length)
            except BaseError:
                if await self.size(key) <= offset:  # S3 refuses a range past the end (416)
                    return b""
                raise

    async def _read_segments(self, key: str, start: int, end: int) -> bytes:
        pieces = []
        for at, until in _spans(await self._segments(key, until=end)):
            first, last = max(at, start), min(until, end)
            if first < last:
                path = _segment_path(key, at)
                got = obstore.get_range_async(self._store, path, start=first - at, end=last - at)
                pieces.append(bytes(await got))
        return b"".join(pieces)

    async def size(self, key: str) -> int:
        check_key(key)
        with _translated(key):
            try:
                return (await obstore.head_async(self._store, key))["size"]
            except FileNotFoundError:
                spans = list(_spans(await self._segments(key)))
                return spans[-1][1]

    async def _segments(self, key: str, until: int | None = None) -> list[_Segment]:
        """The segments of a blob grown by ``write_at``, in order (those starting before ``until``
        and the one after them, when given). Raises BlobNotFound when it has none."""
        segments: list[_Segment] = []
        async for page in obstore.list(self._store, prefix=key + _SEGMENTS, chunk_size=LIST_PAGE):
            for meta in page:
                segments.append(_segment_of(meta))
                if until is not None and segments[-1].offset >= until:
                    return segments
        if not segments:
            raise BlobNotFound(f"blob {key} is missing")
        return segments

    async def write_at(self, writes: Sequence[tuple[str, int, bytes]]) -> None:
        by_key: dict[str, list[tuple[int, bytes]]] = {}
        for key, offset, data in writes:
            by_key.setdefault(check_key(key), []).append((offset, data))
        # Every write is finished, or failed, before this returns (as on a local disk): a failed
        # one does not leave the others going on behind the caller's back.
        done = await asyncio.gather(
            *(self._grow(key, key_writes) for key, key_writes in by_key.items()),
            return_exceptions=True,
        )
        for outcome in done:
            if isinstance(outcome, BaseException):
                raise outcome

    async def _grow(self, key: str, writes: list[tuple[int, bytes]]) -> None:
        """One blob's writes, in order: each a new segment, once those it cuts off are gone (a
        crash between the two leaves the blob shorter, never with stale bytes after new ones)."""
        try:
            end = await self._known_end(key)
            for offset, data in writes:
                end = await self._write_segment(key, end, offset, data)
        except BaseException:
            self._ends.pop(key, None)
            raise
        self._ends[key] = end
        self._ends.move_to_end(key)
        while len(self._ends) > KNOWN_PARTS:
            self._ends.popitem(last=False)

    async def _known_end(self, key: str) -> int:
        if key in self._ends:
            return self._ends[key]
        try:
            with _translated(key):
                return list(_spans(await self._segments(key)))[-1][1]
        except BlobNotFound:
            return 0

    async def _write_segment(self, key: str, end: int, offset: int, data: bytes) -> int:
        """Write ``data`` at ``offset`` as a segment; where the blob ends after."""
        if end < offset:
            raise OSError(f"{key} holds {end} bytes, fewer than the {offset} written")
        with _translated(key):
            if offset < end:  # a write back over written bytes: what lay past it goes first
                await self._cut_after(key, offset)
            await obstore.put_async(self._store, _segment_path(key, offset), data)
        return offset + len(data)

    async def _cut_after(self, key: str, offset: int) -> None:
        try:
            segments = await self._segments(key)
        except BlobNotFound:
            return
        cut = [_segment_path(key, s.offset) for s in segments if s.offset > offset]
        if cut:
            await obstore.delete_async(self._store, cut)

    async def delete(self, key: str) -> None:
        check_key(key)
        self._ends.pop(key, None)
        with _translated(key):
            paths = [key]
            async for page in obstore.list(
                self._store, prefix=key + _SEGMENTS, chunk_size=LIST_PAGE
            ):
                paths += [meta["path"] for meta in page]
            await obstore.delete_async(self._store, paths)

    async def list(self) -> AsyncIterator[BlobInfo]:
        grown: tuple[str, list[_Segment]] | None = None
        with _translated("(list)"):
            async for page in obstore.list(self._store, chunk_size=LIST_PAGE):
                for meta in page:
                    match = _SEGMENT.fullmatch(meta["path"])
                    if grown is not None and (match is None or match["key"] != grown[0]):
                        yield _grown_info(*grown)
                        grown = None
                    if match is None:
                        yield BlobInfo(
                            meta["path"], meta["size"], meta["last_modified"].timestamp()
                        )
                    elif grown is None:
                        grown = (match["key"], [_segment_of(meta)])
                    else:
                        grown[1].append(_segment_of(meta))
        if grown is not None:
            yield _grown_info(*grown)

    async def discard_unfinished(self, before: float) -> int:
        """Abort batchd's multipart uploads never completed. S3 tells when an upload began, not
        when its last part came: one is left alone until ``LONGEST_UPLOAD`` past ``before``, so
        that a long upload or finalize still going is never cut off."""
        return await self._uploads.abort_older_than(before - LONGEST_UPLOAD)

    async def check(self) -> None:
        key = f".probe-{secrets.token_hex(4)}"
        with _translated(key):
            await obstore.put_async(self._store, key, CHECK_BYTES)
            await obstore.delete_async(self._store, key)


@contextlib.contextmanager
def _translated(key: str) -> Iterator[None]:
    """obstore's errors as the seam's: a missing object is BlobNotFound, any other failure an
    OSError (the group committer retries those)."""
    try:
        yield
    except FileNotFoundError as exc:
        raise BlobNotFound(f"blob {key} is missing") from exc
    except BaseError as exc:
        raise OSError(f"object store failed on {key}: {exc}") from exc


def _segment_path(key: str, offset: int) -> str:
    return f"{key}{_SEGMENTS}/{offset:020d}"


def _segment_of(meta: ObjectMeta) -> _Segment:
    offset = int(meta["path"].rpartition("/")[2])
    return _Segment(offset, meta["size"], meta["last_modified"].timestamp())


def _spans(segments: list[_Segment]) -> Iterator[tuple[int, int]]:
    """Where each segment's bytes start and end in the blob."""
    for segment, following in zip(segments, [*segments[1:], None], strict=True):
        yield segment.offset, segment.end_before(following)


def _grown_info(key: str, segments: list[_Segment]) -> BlobInfo:
    size = list(_spans(segments))[-1][1]
    return BlobInfo(key, size, max(segment.modified for segment in segments))
