"""Use cases of the Files API: upload, list, retrieve, delete, download."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import orjson

from batchd import ids
from batchd.blobstore import BlobStore, BlobWriter
from batchd.clock import Clock, whole_seconds
from batchd.errors import BlobNotFound, InvalidRequest, NotFound, unsupported_value
from batchd.models import OUTPUT_PURPOSE, UPLOAD_PURPOSES, Batch, StoredFile
from batchd.quotas import check_stored_bytes
from batchd.settings import Settings
from batchd.store import Page, SqlStore
from batchd.text import MAX_FILENAME, MAX_ID, storable

BATCH_FILE_TTL = 30 * 86400
MIN_EXPIRY, MAX_EXPIRY = 3600, 2_592_000
PURGE_CHUNK = 500

log = logging.getLogger("batchd.files")


@dataclass(frozen=True)
class UploadDetails:
    """What an upload says of its file besides the bytes and their name."""

    project: str
    purpose: str
    expires_after_seconds: int | None = None


@dataclass(frozen=True)
class Upload:
    project: str
    purpose: str
    filename: str
    chunks: AsyncIterator[bytes]
    expires_after_seconds: int | None = None


class IncomingFile:
    """A file's bytes as they arrive: written straight to its blob, counted against a limit as
    they come, the first line kept to check a batch file is JSONL. Kept by ``Files.finish``, or
    given up with ``abort``."""

    def __init__(
        self, file_id: str, filename: str, writer: BlobWriter, limit: int, *, may_be_batch: bool
    ) -> None:
        self.file_id = file_id
        self.filename = filename
        self._writer = writer
        self._limit = limit
        self._first_line = FirstLine() if may_be_batch else None
        self._settled = False

    @property
    def size(self) -> int:
        return self._writer.size

    async def write(self, chunk: bytes) -> None:
        if self.size + len(chunk) > self._limit:
            raise _too_large()
        if self._first_line is not None:
            self._first_line.feed(chunk)
        await self._writer.write(chunk)

    def check(self, purpose: str, limit: int) -> None:
        """Raise unless the bytes received suit ``purpose``."""
        if self.size > limit:
            raise _too_large()
        if purpose == "batch" and not (
            self._first_line is not None and self._first_line.is_json_object()
        ):
            raise InvalidRequest(
                "Invalid file format for Batch API. Must be .jsonl",
                code="invalid_file_format",
                param="file",
            )

    async def commit(self) -> None:
        await self._writer.commit()
        self._settled = True

    async def abort(self) -> None:
        if not self._settled:
            self._settled = True
            await self._writer.abort()


class Files:
    def __init__(self, settings: Settings, store: SqlStore, blobs: BlobStore, clock: Clock) -> None:
        self._settings = settings
        self._store = store
        self._blobs = blobs
        self._clock = clock

    @property
    def max_upload_bytes(self) -> int:
        """The largest file of any purpose: the limit while the purpose is not yet known."""
        return max(self._settings.max_upload_bytes, self._settings.max_batch_file_bytes)

    def _limit_of(self, purpose: str) -> int:
        if purpose == "batch":
            return self._settings.max_batch_file_bytes
        return self._settings.max_upload_bytes

    def receive(self, filename: str, purpose: str | None = None) -> IncomingFile:
        """Start an upload whose bytes are about to arrive. ``purpose``, if already known, is
        checked now and its limit applies from the first byte; else ``finish`` checks it."""
        if purpose is not None:
            _check_purpose(purpose)
        _check_filename(filename)
        limit = self.max_upload_bytes if purpose is None else self._limit_of(purpose)
        file_id = ids.file_id()
        writer = self._blobs.writer(upload_key(file_id))
        return IncomingFile(
            file_id, filename, writer, limit, may_be_batch=purpose in (None, "batch")
        )

    async def finish(self, incoming: IncomingFile, details: UploadDetails) -> StoredFile:
        """Once all of an upload has arrived: check the file against its purpose, then keep it
        (its bytes, then its row); else give it up."""
        try:
            _check_purpose(details.purpose)
            check_expiry(details.expires_after_seconds, "expires_after[seconds]")
            incoming.check(details.purpose, self._limit_of(details.purpose))
            await check_stored_bytes(self._settings, self._store, details.project, incoming.size)
            await incoming.commit()
        except BaseException:
            await incoming.abort()
            raise
        now = whole_seconds(self._clock)
        stored = StoredFile(
            id=incoming.file_id,
            project=details.project,
            purpose=details.purpose,
            filename=incoming.filename,
            bytes=incoming.size,
            created_at=now,
            expires_at=self._expiry(details, now),
            blob_key=upload_key(incoming.file_id),
        )
        try:
            await self._store.insert_file(stored)
        except BaseException:
            await self._blobs.delete(stored.blob_key)
            raise
        return stored

    async def upload(self, upload: Upload) -> StoredFile:
        """An upload whose purpose is known before its bytes, read from one stream."""
        details = UploadDetails(upload.project, upload.purpose, upload.expires_after_seconds)
        check_expiry(details.expires_after_seconds, "expires_after[seconds]")
        incoming = self.receive(upload.filename, upload.purpose)
        try:
            async for chunk in upload.chunks:
                await incoming.write(chunk)
        except BaseException:
            await incoming.abort()
            raise
        return await self.finish(incoming, details)

    def _expiry(self, details: UploadDetails, now: int) -> int | None:
        if details.expires_after_seconds is not None:
            return now + details.expires_after_seconds
        return now + BATCH_FILE_TTL if details.purpose == "batch" else None

    async def get(self, project: str, file_id: str) -> StoredFile:
        file = await self._store.get_file(project, file_id) if storable(file_id, MAX_ID) else None
        if file is None:
            raise _no_such_file(file_id)
        return file

    async def list(
        self, project: str, *, purpose: str | None, limit: int, ascending: bool, after: str | None
    ) -> Page[StoredFile]:
        """``after``: an id this project does not have (another's, or none at all) is past every
        file, and the page is empty."""
        if purpose is not None and not storable(purpose, MAX_ID):
            raise unsupported_value("purpose", purpose, (*UPLOAD_PURPOSES, OUTPUT_PURPOSE))
        if after is not None and not storable(after, MAX_ID):
            return Page([], has_more=False)
        return await self._store.list_files(
            project, purpose=purpose, limit=limit, ascending=ascending, after=after
        )

    async def delete(self, project: str, file_id: str) -> StoredFile:
        if not storable(file_id, MAX_ID):
            raise _no_such_file(file_id)
        file = await self._store.delete_file(project, file_id)
        if file is None:
            raise _no_such_file(file_id)
        if not await self._store.blob_in_use(file.id):
            await self._blobs.delete(file.blob_key)
        return file

    async def content(self, project: str, file_id: str) -> tuple[StoredFile, AsyncIterator[bytes]]:
        """The file and its bytes, checked to be all there before the first is sent: a blob
        lost or cut short on disk is a clean 404, not a 200 with a length and a cut
        connection."""
        file = await self.get(project, file_id)
        return file, await whole_content(self._blobs, file)


async def whole_content(blobs: BlobStore, file: StoredFile) -> AsyncIterator[bytes]:
    """The file's bytes, once its blob is checked to be all there: a blob lost or cut short is a
    clean 404 ``file_content_unavailable`` before the first byte is sent."""
    try:
        whole = await blobs.size(file.blob_key) == file.bytes
    except BlobNotFound:
        whole = False
    if not whole:
        log.error("file_content_unavailable", extra={"file_id": file.id})
        raise NotFound(
            f"The content of file {file.id} is no longer available: the file store has lost "
            "or cut it short.",
            code="file_content_unavailable",
            param="id",
        )
    return blobs.read(file.blob_key)


def upload_key(file_id: str) -> str:
    return f"files/{file_id}"


async def release_input(store: SqlStore, blobs: BlobStore, batch: Batch) -> None:
    """Once ``batch`` has ended: if its input file was deleted while the batch read it (the
    delete left the bytes for it) and no other unfinished batch reads it, the bytes go too."""
    file_id = batch.input_file_id
    if (
        ids.is_file_id(file_id)
        and not await store.file_exists(file_id)
        and not await store.blob_in_use(file_id)
    ):
        await blobs.delete(upload_key(file_id))


def _check_purpose(purpose: str) -> None:
    if purpose not in UPLOAD_PURPOSES:
        raise unsupported_value("purpose", purpose, UPLOAD_PURPOSES)


def _check_filename(filename: str) -> None:
    if not storable(filename, MAX_FILENAME):
        raise InvalidRequest(
            f"Invalid filename: at most {MAX_FILENAME} characters of text, without NUL.",
            code="invalid_value",
            param="file",
        )


def _too_large() -> InvalidRequest:
    return InvalidRequest("File is too large.", code="file_too_large", param="file")


def _no_such_file(file_id: str) -> NotFound:
    return NotFound(f"No such File object: {file_id[:MAX_ID]}", param="id")


async def purge_expired(store: SqlStore, blobs: BlobStore, now: int) -> int:
    """Delete files past their expiry (rows, then bytes); how many were deleted."""
    purged = 0
    while expired := await store.expired_files(now, PURGE_CHUNK):
        for file in expired:
            if await store.delete_file(file.project, file.id) is not None:
                await blobs.delete(file.blob_key)
                purged += 1
        if len(expired) < PURGE_CHUNK:
            break
    return purged


def check_expiry(seconds: int | None, param: str) -> None:
    if seconds is not None and not MIN_EXPIRY <= seconds <= MAX_EXPIRY:
        raise InvalidRequest(
            f"Invalid '{param}': must be between {MIN_EXPIRY} and {MAX_EXPIRY} seconds.",
            code="invalid_value",
            param=param,
        )


class FirstLine:
    """Collects the first non-blank line of a stream, to check that a batch file is JSONL."""

    LIMIT = 64 * 1024 * 1024

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._done = False

    def feed(self, chunk: bytes) -> None:
        if self._done:
            return
        if not self._buffer:
            chunk = chunk.lstrip()
        end = chunk.find(b"\n")
        self._buffer += chunk if end < 0 else chunk[:end]
        # Each chunk is looked at once: stripping or searching all that came before, chunk after
        # chunk, made a long first line cost quadratic time.
        self._done = end >= 0 or len(self._buffer) > self.LIMIT

    def is_json_object(self) -> bool:
        try:
            return isinstance(orjson.loads(self._buffer), dict)
        except orjson.JSONDecodeError:
            return False
