"""A dispatcher's senders outlive the requests they abandon (worker and store in this process,
an upstream that never answers one batch's lines)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path

import pytest

from batchd.batches import Batches
from batchd.blobstore import open_blobstore
from batchd.clock import SystemClock
from batchd.files import Files, Upload
from batchd.models import Batch
from batchd.settings import load_settings
from batchd.store import SqlStore
from batchd.upstreams import UpstreamRouter
from batchd.upstreams.base import Upstream, UpstreamResponse
from batchd.worker import Worker
from tests.contract.test_sharing import ANSWER, lines, wait_for

pytestmark = pytest.mark.anyio


class HangingUpstream(Upstream):
    """Never answers lines whose custom_id starts with ``hung``; answers the others at once."""

    name = "hanging"
    models: frozenset[str] = frozenset()
    max_concurrency = 2

    def __init__(self) -> None:
        self.abandoned = 0

    async def send(
        self, endpoint: str, body: bytes, headers: Mapping[str, str]
    ) -> UpstreamResponse:
        if headers["x-batchd-custom-id"].startswith("hung"):
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.abandoned += 1
                raise
        return UpstreamResponse(200, ANSWER, "req_1", {})


async def test_a_batch_that_expires_with_every_slot_hung_frees_them_for_the_next(
    store: SqlStore, tmp_path: Path
) -> None:
    """Both of the upstream's slots wait on answers that never come, until the batch's window
    ends: its requests are abandoned, and the slots then serve the next batch."""
    settings = load_settings(data_dir=str(tmp_path), completion_windows=["24h", "2s"])
    clock = SystemClock()
    blobs = open_blobstore(settings.blob_dir)
    upstream = HangingUpstream()
    worker = Worker(settings, store, blobs, UpstreamRouter([upstream]), clock)
    files = Files(settings, store, blobs, clock)
    batches = Batches(settings, store, clock, worker.notify)

    async def create(prefix: str, count: int, window: str) -> Batch:
        upload = await files.upload(Upload("default", "batch", "in.jsonl", lines(count, prefix)))
        request = {
            "input_file_id": upload.id,
            "endpoint": "/v1/chat/completions",
            "completion_window": window,
        }
        return await batches.create("default", request)

    await worker.start()
    try:
        hung = await create("hung", 2, "2s")
        await wait_for(store, hung, {"expired"})
        after = await create("after", 5, "24h")
        await wait_for(store, after, {"completed"})
    finally:
        await worker.stop()
    assert upstream.abandoned == 2
    done = await store.get_batch(after.id)
    assert done is not None and done.completed == 5
