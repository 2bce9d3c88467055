"""Collecting blobs that nothing refers to any more.

Every blob has an owner in the store: an uploaded file's bytes (``files/ID``) belong to its file
row, or to an unfinished batch still reading them after the file was deleted; a result part
(``batches/ID/parts/N.jsonl``) to its part row; an output or error file
(``batches/ID/output.jsonl``) to its batch until the batch ends and to its file row after. A
process that dies between writing a blob and recording it (or between deleting a row and its
blob) leaves bytes without an owner. Those, and writes never finished, are removed once they are
older than ``GRACE``: no write in progress or commit on its way takes that long to be recorded.
Keys of any other shape are never touched.
"""

from __future__ import annotations

import logging
import re

from batchd import ids
from batchd.blobstore import BlobInfo, BlobStore
from batchd.models import TERMINAL
from batchd.store import SqlStore

GRACE = 3600
"""Seconds a blob must have been left alone before it can be called an orphan."""

log = logging.getLogger("batchd.orphans")

_FILE = re.compile(r"files/(?P<file>[^/]+)")
_PART = re.compile(r"batches/(?P<batch>[^/]+)/parts/(?P<part>\d+)\.jsonl")
_RESULTS = re.compile(r"batches/(?P<batch>[^/]+)/(?P<kind>output|error)\.jsonl")


async def collect_orphans(store: SqlStore, blobs: BlobStore, now: float) -> int:
    """Delete blobs without an owner and unfinished writes, older than ``GRACE``; how many."""
    before = now - GRACE
    removed = await blobs.discard_unfinished(before)
    async for blob in blobs.list():
        if blob.modified < before and not await is_owned(store, blob.key):
            await blobs.delete(blob.key)
            _log_removed(blob)
            removed += 1
    return removed


async def is_owned(store: SqlStore, key: str) -> bool:
    """Whether the store still refers to the blob ``key`` (any key of unknown shape is)."""
    if match := _FILE.fullmatch(key):
        file_id = match["file"]
        return not ids.is_file_id(file_id) or (
            await store.file_exists(file_id) or await store.blob_in_use(file_id)
        )
    if match := _PART.fullmatch(key):
        parts = await store.result_parts(match["batch"])
        return any(part.id == int(match["part"]) for part in parts)
    if match := _RESULTS.fullmatch(key):
        return await _results_owned(store, match["batch"], match["kind"])
    return True


async def _results_owned(store: SqlStore, batch_id: str, kind: str) -> bool:
    batch = await store.get_batch(batch_id)
    if batch is None:
        return False
    if batch.status not in TERMINAL:
        return True
    file_id = batch.output_file_id if kind == "output" else batch.error_file_id
    return file_id is not None and await store.file_exists(file_id)


def _log_removed(blob: BlobInfo) -> None:
    log.warning("orphan_blob_deleted", extra={"key": blob.key, "bytes": blob.size})
