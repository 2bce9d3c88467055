"""Per-project quotas: unfinished batches, the lines they hold, and the bytes of files kept.

Each is a setting, ``None`` for no limit. A quota is checked by reading what the project holds
before the write that adds to it (no lock across requests or processes), so requests of one
project checked at the same moment may all pass: a quota can be passed by as many requests as
race, then refuses the next.
"""

from __future__ import annotations

from batchd.errors import InvalidRequest, QuotaExceeded
from batchd.models import LineError
from batchd.settings import Settings
from batchd.store import SqlStore

RETRY_LATER = "Please try again once some in_progress batches have been completed."


async def check_new_batch(settings: Settings, store: SqlStore, project: str) -> None:
    """Refuse a batch while the project is at its limit of unfinished batches or of their
    lines."""
    max_batches, max_lines = settings.max_active_batches, settings.max_enqueued_lines
    if max_batches is None and max_lines is None:
        return
    batches, lines = await store.usage.unfinished_batches(project)
    if max_batches is not None and batches >= max_batches:
        raise QuotaExceeded(
            f"Active batch limit reached for project {project}. Limit: {max_batches:,} batches "
            f"validating, in progress, finalizing or cancelling. {RETRY_LATER}",
            code="batch_limit_exceeded",
        )
    if max_lines is not None and lines >= max_lines:
        raise QuotaExceeded(
            f"{_lines_reached(project, max_lines)} {RETRY_LATER}", code="request_limit_exceeded"
        )


async def enqueued_lines_error(
    settings: Settings, store: SqlStore, project: str, lines: int
) -> LineError | None:
    """Why a validated batch of ``lines`` lines fails, if they would take the project past its
    limit of enqueued lines (as OpenAI fails a batch past its enqueued tokens)."""
    limit = settings.max_enqueued_lines
    if limit is None:
        return None
    _, held = await store.usage.unfinished_batches(project)  # this batch holds none until it runs
    if held + lines <= limit:
        return None
    return LineError(
        "request_limit_exceeded",
        f"{_lines_reached(project, limit)} This batch has {lines:,} requests and the project's "
        f"other unfinished batches hold {held:,}. {RETRY_LATER}",
    )


def _lines_reached(project: str, limit: int) -> str:
    return (
        f"Enqueued request limit reached for project {project}. Limit: {limit:,} enqueued requests."
    )


async def check_stored_bytes(settings: Settings, store: SqlStore, project: str, size: int) -> None:
    """Refuse a new file of ``size`` bytes that would take the project past its storage limit."""
    limit = settings.max_stored_bytes
    if limit is None:
        return
    total = await store.usage.stored_bytes(project) + size
    if total > limit:
        raise InvalidRequest(
            f"Storage limit reached for project {project}: this file of {size:,} bytes would "
            f"bring its files to {total:,} bytes, past the limit of {limit:,} bytes. Delete "
            "files you no longer need and try again.",
            code="storage_limit_exceeded",
            param="file",
        )
