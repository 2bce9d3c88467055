"""Finalizing: close what is left, copy the workers' result parts into the output and error
files (line by line only where a part holds lines that did not count), then record the files and
the terminal status in one transaction.

Every step can be redone: a worker that dies part-way leaves the batch to the next one.

A line whose result cannot be read back (its part was deleted or cut short on disk) is written to
the error file as ``result_lost`` and counted as failed, so that the batch still ends, and says
which lines to send again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

from batchd import ids
from batchd.batches import log_status
from batchd.blobstore import BlobStore, BlobWriter
from batchd.files import release_input
from batchd.models import OUTPUT_PURPOSE, Batch, BatchStatus, RequestState, StoredFile
from batchd.result_lines import unanswered_line
from batchd.results import PART_KIND, RUN, Lost, in_line_order, part_key, read_whole, unparted_line
from batchd.store import FinishedLine, SqlStore

log = logging.getLogger("batchd.worker")

DEFAULT_OUTPUT_TTL = 30 * 86400

RESULT_LOST = (
    "The request was answered, but its result cannot be read back from the worker's result part "
    "(deleted or cut short on disk). Send it again."
)

_SKIP_STATE = {
    BatchStatus.EXPIRED: RequestState.EXPIRED,
    BatchStatus.CANCELLED: RequestState.CANCELLED,
}


class Finalizer:
    def __init__(self, store: SqlStore, blobs: BlobStore) -> None:
        self._store = store
        self._blobs = blobs

    async def run(self, batch: Batch, owner: str, now: int) -> BatchStatus:
        target = await self._target(batch, now)
        if target is BatchStatus.COMPLETED and batch.status is BatchStatus.IN_PROGRESS:
            await self._store.enter_finalizing(batch.id, owner, now)
            log_status(replace(batch, status=BatchStatus.FINALIZING, finalizing_at=now))
        if target in _SKIP_STATE:
            await self._store.skip_unfinished(batch.id, owner, _SKIP_STATE[target])
        output, error, lost = await self._write_files(batch, now)
        if await self._store.finish_batch(
            batch.id, owner, target, now, output, error, lost_successes=lost
        ):
            await drop_lines(self._store, self._blobs, batch.id)
            await release_input(self._store, self._blobs, batch)
        return target

    async def _target(self, batch: Batch, now: int) -> BatchStatus:
        if batch.status is BatchStatus.CANCELLING:
            return BatchStatus.CANCELLED
        if batch.status is BatchStatus.FINALIZING:
            return BatchStatus.COMPLETED
        if batch.completed + batch.failed < batch.total:
            return BatchStatus.EXPIRED  # claimed for finalizing with lines left: the window ended
        # An earlier attempt may have closed the lines as expired and stopped: only possible once
        # the window has ended, and only then worth the look (it reads every result of a batch
        # that has no expired line).
        if batch.expires_at <= now and await self._store.has_results_in(
            batch.id, RequestState.EXPIRED
        ):
            return BatchStatus.EXPIRED
        return BatchStatus.COMPLETED

    async def _write_files(
        self, batch: Batch, now: int
    ) -> tuple[StoredFile | None, StoredFile | None, int]:
        """The output and error files, and how many succeeded lines were lost on the way."""
        keys = {kind: f"batches/{batch.id}/{kind}.jsonl" for kind in ("output", "error")}
        writers = self._writers(keys)
        lost = _Lost()
        try:
            if not await self._copy_whole_parts(batch, writers):
                await _abort(writers)
                writers = self._writers(keys)
                await self._copy_line_by_line(batch, writers, lost)
        except BaseException:
            await _abort(writers)
            raise
        if lost.lines:
            log.error(
                "results_lost",
                extra={"batch_id": batch.id, "lines": lost.lines, "succeeded": lost.succeeded},
            )
        return (
            await self._keep(batch, writers["output"], keys["output"], now),
            await self._keep(batch, writers["error"], keys["error"], now),
            lost.succeeded,
        )

    def _writers(self, keys: dict[str, str]) -> dict[str, BlobWriter]:
        return {kind: self._blobs.writer(key) for kind, key in keys.items()}

    async def _copy_whole_parts(self, batch: Batch, writers: dict[str, BlobWriter]) -> bool:
        """The common case: every part holds only counted lines, so each is copied whole, then
        the few lines outside parts. False (nothing kept) unless that accounts for every line."""
        parts = await self._store.result_parts(batch.id)
        if not all(part.whole for part in parts):
            return False
        for part in parts:
            if not await self._copy_part(batch.id, part.id, part.written, writers[part.kind]):
                return False  # line by line, to save what is left of it
        lines = sum(part.lines for part in parts)
        async for row in self._store.unparted_lines(batch.id):
            await writers[PART_KIND[row.state]].write(unparted_line(row))
            lines += 1
        return lines == batch.total

    async def _copy_line_by_line(
        self, batch: Batch, writers: dict[str, BlobWriter], lost: _Lost
    ) -> None:
        """Every line's result in line order; a line that cannot be read back is reported lost."""
        async for piece in in_line_order(self._store, self._blobs, batch.id):
            if isinstance(piece, Lost):
                lost.count(piece.row)
                line = unanswered_line(piece.row.custom_id, "result_lost", RESULT_LOST)
                await writers["error"].write(line + b"\n")
            else:
                await writers[piece.kind].write(piece.data)

    async def _copy_part(self, batch_id: str, part: int, end: int, writer: BlobWriter) -> bool:
        """Copy a part's first ``end`` bytes, ``RUN`` at a time; whether they were all there."""
        for offset in range(0, end, RUN):
            data = await read_whole(self._blobs, batch_id, part, offset, min(RUN, end - offset))
            if data is None:
                return False
            await writer.write(data)
        return True

    async def _keep(
        self, batch: Batch, writer: BlobWriter, key: str, now: int
    ) -> StoredFile | None:
        """A file only when it has at least one line."""
        if writer.size == 0:
            await writer.abort()
            return None
        await writer.commit()
        ttl = batch.output_expires_after or DEFAULT_OUTPUT_TTL
        return StoredFile(
            id=ids.file_id(),
            project=batch.project,
            purpose=OUTPUT_PURPOSE,
            filename=f"{batch.id}_{key.rsplit('/', 1)[-1]}",
            bytes=writer.size,
            created_at=now,
            expires_at=now + ttl,
            blob_key=key,
        )


@dataclass(slots=True)
class _Lost:
    """Lines whose result could not be read back, and how many of them had succeeded."""

    lines: int = 0
    succeeded: int = 0

    def count(self, row: FinishedLine) -> None:
        self.lines += 1
        self.succeeded += row.state is RequestState.SUCCEEDED


async def drop_lines(store: SqlStore, blobs: BlobStore, batch_id: str) -> None:
    """Delete a finished batch's result parts and its lines' rows: its output and error files
    hold them now. Parts go first, while the rows that name them are still there."""
    for part in await store.result_parts(batch_id):
        await blobs.delete(part_key(batch_id, part.id))
    await store.drop_lines(batch_id)


async def _abort(writers: dict[str, BlobWriter]) -> None:
    for writer in writers.values():
        await writer.abort()
