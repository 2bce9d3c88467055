"""Finalizing: close what is left, stream every line's result in line order into the output and
error files, then record them and the terminal status in one transaction.

Every step can be redone: a worker that dies part-way leaves the batch to the next one.
"""

from __future__ import annotations

from dataclasses import replace

from batchd import ids
from batchd.batches import log_status
from batchd.blobstore import BlobStore, BlobWriter
from batchd.models import OUTPUT_PURPOSE, Batch, BatchStatus, RequestState, StoredFile
from batchd.result_lines import skipped_line
from batchd.store import SqlStore

DEFAULT_OUTPUT_TTL = 30 * 86400

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
        output, error = await self._write_files(batch, now)
        if await self._store.finish_batch(batch.id, owner, target, now, output, error):
            await self._store.drop_lines(batch.id)
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
    ) -> tuple[StoredFile | None, StoredFile | None]:
        output_key, error_key = (f"batches/{batch.id}/{kind}.jsonl" for kind in ("output", "error"))
        output, error = self._blobs.writer(output_key), self._blobs.writer(error_key)
        try:
            async for row in self._store.finished_lines(batch.id):
                if row.state is RequestState.SUCCEEDED and row.result is not None:
                    await output.write(row.result + b"\n")
                elif row.result is not None:
                    await error.write(row.result + b"\n")
                else:
                    await error.write(skipped_line(row.custom_id, row.state) + b"\n")
        except BaseException:
            await output.abort()
            await error.abort()
            raise
        return (
            await self._keep(batch, output, output_key, now),
            await self._keep(batch, error, error_key, now),
        )

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
