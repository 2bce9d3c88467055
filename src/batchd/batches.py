"""Use cases of the Batches API: create, retrieve, list, cancel, and batchd's own download of
the results finished so far."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from batchd import ids
from batchd.blobstore import BlobStore
from batchd.clock import Clock, whole_seconds
from batchd.errors import Conflict, InvalidRequest, NotFound, unsupported_value
from batchd.files import check_expiry, whole_content
from batchd.idempotency import (
    IDEMPOTENCY_WINDOW,
    fingerprint_of,
    idempotency_conflict,
    idempotency_key_of,
)
from batchd.lifecycle import CANCELLABLE
from batchd.models import ENDPOINTS, TERMINAL, Batch, BatchStatus, Remembered
from batchd.quotas import check_new_batch
from batchd.results import Lines, in_line_order
from batchd.settings import Settings
from batchd.store import Page, SqlStore
from batchd.text import MAX_ID, storable

MAX_METADATA_PAIRS, MAX_METADATA_KEY, MAX_METADATA_VALUE = 16, 64, 512

log = logging.getLogger("batchd.batches")


def log_status(batch: Batch) -> None:
    """Log that ``batch`` entered its current status: the event ``batch_<status>`` (entering
    ``validating`` is ``batch_created``), at info, with its id, project and counts."""
    fields: dict[str, object] = {
        "batch_id": batch.id,
        "project": batch.project,
        "status": batch.status.value,
    }
    if batch.status is BatchStatus.VALIDATING:
        fields.update(endpoint=batch.endpoint, input_file_id=batch.input_file_id)
    elif batch.errors:
        fields["errors"] = batch.errors_found
    else:
        fields.update(
            model=batch.model, total=batch.total, completed=batch.completed, failed=batch.failed
        )
    if batch.status in TERMINAL and batch.total:
        fields.update(
            input_tokens=batch.usage.input_tokens, output_tokens=batch.usage.output_tokens
        )
    event = "created" if batch.status is BatchStatus.VALIDATING else batch.status.value
    log.info(f"batch_{event}", extra=fields)


class Batches:
    def __init__(
        self,
        settings: Settings,
        store: SqlStore,
        blobs: BlobStore,
        clock: Clock,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self._settings = settings
        self._store = store
        self._blobs = blobs
        self._clock = clock
        self._on_change = on_change

    async def create(
        self, project: str, params: dict[str, Any], idempotency_key: str | None = None
    ) -> Batch:
        """A new batch; with an idempotency key (the header's, or llama-stack's body field),
        the batch the key made within a day, if its parameters were the same (409 if not)."""
        key = idempotency_key_of(params, idempotency_key)
        if key is None:
            return await self._create(project, params)
        fingerprint = fingerprint_of(params)
        return await self._made_with(project, key, fingerprint) or await self._create(
            project, params, (key, fingerprint)
        )

    async def _made_with(self, project: str, key: str, fingerprint: str) -> Batch | None:
        since = whole_seconds(self._clock) - IDEMPOTENCY_WINDOW
        made = await self._store.idempotency.find(project, "batch", key, since)
        if made is None:
            return None
        if made.fingerprint != fingerprint:
            raise idempotency_conflict(key)
        return await self._store.get_batch(made.object_id, project)

    async def _create(
        self, project: str, params: dict[str, Any], keyed: tuple[str, str] | None = None
    ) -> Batch:
        input_file_id = _required_string(params, "input_file_id")
        endpoint = _required_string(params, "endpoint")
        window = _required_string(params, "completion_window")
        await self._check_input_file(project, input_file_id)
        if endpoint not in ENDPOINTS:
            raise unsupported_value("endpoint", endpoint, ENDPOINTS)
        window_seconds = self._settings.window_seconds(window)
        if window_seconds is None:
            raise unsupported_value("completion_window", window, self._settings.completion_windows)
        await check_new_batch(self._settings, self._store, project)
        now = whole_seconds(self._clock)
        batch = Batch(
            id=ids.batch_id(),
            project=project,
            endpoint=endpoint,
            input_file_id=input_file_id,
            completion_window=window,
            status=BatchStatus.VALIDATING,
            created_at=now,
            expires_at=now + window_seconds,
            metadata=_metadata(params.get("metadata")),
            output_expires_after=_output_expiry(params.get("output_expires_after")),
        )
        made = Remembered("batch", *keyed, batch.id, now) if keyed else None
        if not await self._store.insert_batch(batch, made, since=now - IDEMPOTENCY_WINDOW):
            assert keyed is not None  # another request with the key won the race
            raced = await self._made_with(project, *keyed)
            assert raced is not None
            return raced
        log_status(batch)
        self._on_change()
        return batch

    async def _check_input_file(self, project: str, file_id: str) -> None:
        """An id that cannot name a file is refused now; a file that is not batch input too.
        A missing file fails the batch's validation, as OpenAI's does."""
        if not storable(file_id, MAX_ID):
            raise InvalidRequest(
                f"Invalid 'input_file_id': at most {MAX_ID} characters of text, without NUL.",
                code="invalid_value",
                param="input_file_id",
            )
        file = await self._store.get_file(project, file_id)
        if file is not None and file.purpose != "batch":
            raise InvalidRequest(
                f"Invalid 'input_file_id': {file_id} has purpose '{file.purpose}'; "
                "a batch's input file must have purpose 'batch'.",
                code="invalid_value",
                param="input_file_id",
            )

    async def get(self, project: str, batch_id: str) -> Batch:
        found = storable(batch_id, MAX_ID)
        batch = await self._store.get_batch(batch_id, project) if found else None
        if batch is None:
            raise NotFound(f"No batch found with id '{batch_id[:MAX_ID]}'.", param="batch_id")
        return batch

    async def list(self, project: str, *, limit: int, after: str | None) -> Page[Batch]:
        """``after``: an id this project does not have (another's, or none at all) is past every
        batch, and the page is empty."""
        if after is not None and not storable(after, MAX_ID):
            return Page([], has_more=False)
        return await self._store.list_batches(project, limit=limit, after=after)

    async def cancel(self, project: str, batch_id: str) -> Batch:
        batch = await self.get(project, batch_id)
        if batch.status in CANCELLABLE:
            cancelled = await self._store.request_cancel(
                batch_id, project, whole_seconds(self._clock)
            )
            assert cancelled is not None
            if cancelled.status is BatchStatus.CANCELLING:
                log_status(cancelled)
            self._on_change()
            batch = cancelled
        if batch.status in TERMINAL and batch.status is not BatchStatus.CANCELLED:
            raise Conflict(f"Cannot cancel a batch with status '{batch.status.value}'.")
        return batch

    async def results_so_far(self, project: str, batch_id: str, kind: str) -> AsyncIterator[bytes]:
        """The batch's ``output`` or ``error`` lines finished so far, in line order; once it has
        ended, its final file (checked whole, like any download). A line whose result cannot be
        read back is left out (finalizing will report it). Checked before the first byte: the
        batch is the caller's."""
        batch = await self.get(project, batch_id)
        if batch.status not in TERMINAL:
            return self._finished_so_far(batch, kind)
        file_id = batch.output_file_id if kind == "output" else batch.error_file_id
        file = await self._store.get_file(batch.project, file_id) if file_id else None
        return await whole_content(self._blobs, file) if file is not None else _nothing()

    async def _finished_so_far(self, batch: Batch, kind: str) -> AsyncIterator[bytes]:
        async for piece in in_line_order(self._store, self._blobs, batch.id, kind=kind):
            if isinstance(piece, Lines):
                yield piece.data


async def _nothing() -> AsyncIterator[bytes]:
    return
    yield


def _required_string(params: dict[str, Any], name: str) -> str:
    value = params.get(name)
    if value is None:
        raise InvalidRequest(
            f"Missing required parameter: '{name}'.", code="missing_required_parameter", param=name
        )
    if not isinstance(value, str):
        raise InvalidRequest(
            f"Invalid type for '{name}': expected a string.", code="invalid_type", param=name
        )
    return value


def _metadata(value: object) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidRequest(
            "Invalid type for 'metadata': expected an object.",
            code="invalid_type",
            param="metadata",
        )
    if len(value) > MAX_METADATA_PAIRS:
        raise InvalidRequest(
            f"Invalid 'metadata': at most {MAX_METADATA_PAIRS} pairs.",
            code="invalid_value",
            param="metadata",
        )
    for key, item in value.items():
        if not storable(key, MAX_METADATA_KEY):
            raise InvalidRequest(
                f"Invalid 'metadata': keys are at most {MAX_METADATA_KEY} characters, without NUL.",
                code="invalid_value",
                param=f"metadata.{key}",
            )
        if not isinstance(item, str):
            raise InvalidRequest(
                f"Invalid type for 'metadata.{key}': expected a string.",
                code="invalid_type",
                param=f"metadata.{key}",
            )
        if not storable(item, MAX_METADATA_VALUE):
            raise InvalidRequest(
                f"Invalid 'metadata.{key}': values are at most {MAX_METADATA_VALUE} characters, "
                "without NUL.",
                code="invalid_value",
                param=f"metadata.{key}",
            )
    return dict(value)


def _output_expiry(value: object) -> int | None:
    if value is None:
        return None
    param = "output_expires_after"
    if not isinstance(value, dict) or value.get("anchor") != "created_at":
        raise InvalidRequest(
            'Invalid \'output_expires_after\': expected {"anchor": "created_at", "seconds": N}.',
            code="invalid_value",
            param=param,
        )
    seconds = _integer(value.get("seconds"))
    if seconds is None:
        raise InvalidRequest(
            "Invalid type for 'output_expires_after.seconds': expected an integer.",
            code="invalid_type",
            param=f"{param}.seconds",
        )
    check_expiry(seconds, f"{param}.seconds")
    return seconds


def _integer(value: object) -> int | None:
    """A JSON integer: ``7200``, or ``7200.0``, which JSON (and so JSON Schema, and clients
    built on it) holds to be the same number."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return None
