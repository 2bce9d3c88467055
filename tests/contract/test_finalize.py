"""The finalizer against a real store: what an interrupted earlier attempt leaves behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchd.blobstore import open_blobstore
from batchd.models import BatchStatus, RequestState
from batchd.store import SqlStore
from batchd.worker.finalize import Finalizer
from tests.contract.test_store import DAY, LEASE, NOW, fetch, make_running_batch

pytestmark = pytest.mark.anyio


async def test_lines_an_earlier_attempt_closed_as_expired_still_make_the_batch_expired(
    store: SqlStore, tmp_path: Path
) -> None:
    """A finalizer that closed the lines of a batch past its window and then stopped leaves the
    counters complete; the next attempt must still end the batch as expired, not completed."""
    batch = await make_running_batch(store, lines=3)
    assert await store.claim_batch_to_finalize("f", NOW + DAY, NOW + DAY + LEASE) is not None
    await store.skip_unfinished(batch.id, "f", RequestState.EXPIRED)  # then it stopped
    again = await store.claim_batch_to_finalize("g", NOW + DAY + LEASE + 1, NOW + 2 * DAY)
    assert again is not None

    status = await Finalizer(store, open_blobstore(tmp_path)).run(again, "g", NOW + DAY + LEASE)

    assert status is BatchStatus.EXPIRED
    assert (await fetch(store, batch.id)).status is BatchStatus.EXPIRED
