"""Validating a batch's input file and indexing its lines as request rows, in one streaming pass."""

from __future__ import annotations

from batchd.blobstore import BlobStore
from batchd.errors import BlobNotFound
from batchd.files import release_input
from batchd.models import Batch, IndexedLine, LineError
from batchd.quotas import enqueued_lines_error
from batchd.settings import Settings
from batchd.store import SqlStore
from batchd.upstreams import UpstreamRouter
from batchd.validation import LineValidator, Outcome, Rules, iter_line_runs

INDEX_CHUNK = 2000


class Ingest:
    def __init__(
        self, store: SqlStore, blobs: BlobStore, router: UpstreamRouter, settings: Settings
    ) -> None:
        self._store = store
        self._blobs = blobs
        self._router = router
        self._settings = settings

    async def run(self, batch: Batch, owner: str, now: int) -> None:
        outcome = await self._index(batch)
        if not outcome.error_count:
            await self._check_quota(batch, outcome)
        if outcome.error_count:
            await self._store.fail_validation(
                batch.id, owner, outcome.errors, now, outcome.error_count
            )
            await release_input(self._store, self._blobs, batch)
        else:
            assert outcome.model is not None  # every valid line names one
            await self._store.start_batch(batch.id, owner, outcome.total, outcome.model, now)

    async def _check_quota(self, batch: Batch, outcome: Outcome) -> None:
        """A valid batch whose lines would take its project past its quota fails too."""
        error = await enqueued_lines_error(
            self._settings, self._store, batch.project, outcome.total
        )
        if error is not None:
            outcome.report(error)

    async def _index(self, batch: Batch) -> Outcome:
        file = await self._store.get_file(batch.project, batch.input_file_id)
        if file is None:
            return _failure(f"Cannot find file {batch.input_file_id}.", "file_id")
        if file.bytes > self._settings.max_batch_file_bytes:
            return _failure(
                f"The input file is larger than {self._settings.max_batch_file_bytes} bytes, "
                "the limit for one batch.",
                "input_file_id",
            )
        await self._store.clear_requests(batch.id)  # a worker that died mid-way left some
        validator = LineValidator(
            Rules(
                endpoint=batch.endpoint,
                max_requests=self._settings.max_requests_per_batch,
                max_embedding_inputs=self._settings.max_embedding_inputs,
                model_is_served=self._router.serves,
                served_models=self._router.named_models(),
            )
        )
        pending: list[IndexedLine] = []
        try:
            async for number, offset, lines in iter_line_runs(self._blobs.read(file.blob_key)):
                indexed = validator.feed(number, offset, lines)
                if validator.outcome.error_count:
                    continue  # once the file is bad, only the errors matter
                pending += indexed
                if len(pending) >= INDEX_CHUNK:
                    await self._store.add_requests(batch.id, pending)
                    pending = []
        except BlobNotFound:
            return _failure(f"Cannot find file {batch.input_file_id}.", "file_id")
        outcome = validator.finish()
        if pending and not outcome.error_count:
            await self._store.add_requests(batch.id, pending)
        return outcome


def _failure(message: str, param: str) -> Outcome:
    outcome = Outcome()
    outcome.report(LineError("invalid_request", message, param))
    return outcome
