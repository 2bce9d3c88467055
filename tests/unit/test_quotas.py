"""Per-project quotas: each refuses exactly past its limit, and never without one."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from batchd import ids
from batchd.errors import InvalidRequest, QuotaExceeded
from batchd.models import Batch, BatchStatus, StoredFile
from batchd.quotas import check_new_batch, check_stored_bytes, enqueued_lines_error
from batchd.settings import Settings
from batchd.store import SqlStore, open_store

pytestmark = pytest.mark.anyio

NOW = 1_700_000_000


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqlStore]:
    opened = await open_store(f"sqlite:///{tmp_path / 'batchd.db'}")
    try:
        yield opened
    finally:
        await opened.close()


async def add_batch(store: SqlStore, total: int, status: BatchStatus, project: str = "a") -> None:
    batch = Batch(
        id=ids.batch_id(),
        project=project,
        endpoint="/v1/chat/completions",
        input_file_id=ids.file_id(),
        completion_window="24h",
        status=status,
        created_at=NOW,
        expires_at=NOW + 86_400,
    )
    await store.insert_batch(batch)
    async with store.db.transaction() as conn:
        await conn.execute("UPDATE batches SET total = $1 WHERE id = $2", total, batch.id)


async def add_file(store: SqlStore, size: int, project: str = "a") -> None:
    file_id = ids.file_id()
    await store.insert_file(
        StoredFile(file_id, project, "batch", "f.jsonl", size, NOW, None, f"files/{file_id}")
    )


async def test_without_limits_nothing_is_refused(store: SqlStore) -> None:
    settings = Settings()
    await add_batch(store, 10**6, BatchStatus.IN_PROGRESS)
    await add_file(store, 10**12)
    await check_new_batch(settings, store, "a")
    assert await enqueued_lines_error(settings, store, "a", 10**6) is None
    await check_stored_bytes(settings, store, "a", 10**12)


async def test_active_batches_are_refused_at_the_limit(store: SqlStore) -> None:
    settings = Settings(max_active_batches=2)
    await add_batch(store, 0, BatchStatus.VALIDATING)
    await add_batch(store, 5, BatchStatus.COMPLETED)
    await add_batch(store, 5, BatchStatus.IN_PROGRESS, project="b")
    await check_new_batch(settings, store, "a")
    await add_batch(store, 5, BatchStatus.CANCELLING)
    with pytest.raises(QuotaExceeded) as caught:
        await check_new_batch(settings, store, "a")
    assert (caught.value.status_code, caught.value.code) == (429, "batch_limit_exceeded")


async def test_enqueued_lines_are_refused_at_create_once_reached(store: SqlStore) -> None:
    settings = Settings(max_enqueued_lines=10)
    await add_batch(store, 9, BatchStatus.IN_PROGRESS)
    await check_new_batch(settings, store, "a")
    await add_batch(store, 1, BatchStatus.FINALIZING)
    with pytest.raises(QuotaExceeded) as caught:
        await check_new_batch(settings, store, "a")
    assert caught.value.code == "request_limit_exceeded"


async def test_a_batch_fails_validation_only_past_the_enqueued_limit(store: SqlStore) -> None:
    settings = Settings(max_enqueued_lines=10)
    await add_batch(store, 6, BatchStatus.IN_PROGRESS)
    assert await enqueued_lines_error(settings, store, "a", 4) is None
    error = await enqueued_lines_error(settings, store, "a", 5)
    assert error is not None and error.code == "request_limit_exceeded"
    assert "This batch has 5 requests" in error.message and "hold 6" in error.message


async def test_an_upload_is_refused_only_past_the_storage_limit(store: SqlStore) -> None:
    settings = Settings(max_stored_bytes=100)
    await add_file(store, 60)
    await add_file(store, 1000, project="b")
    await check_stored_bytes(settings, store, "a", 40)
    with pytest.raises(InvalidRequest) as caught:
        await check_stored_bytes(settings, store, "a", 41)
    assert (caught.value.status_code, caught.value.code) == (400, "storage_limit_exceeded")
    assert caught.value.param == "file"
