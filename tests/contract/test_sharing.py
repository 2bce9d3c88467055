"""Batches that use the same upstream share its slots turn by turn (worker and store in this
process, an upstream that records the order it is sent requests in)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from itertools import groupby
from pathlib import Path

import orjson
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

pytestmark = pytest.mark.anyio

ANSWER = orjson.dumps(
    {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }
)


class RecordingUpstream(Upstream):
    """Holds every request until ``open`` is set, then answers them in the order sent."""

    name = "recording"
    models: frozenset[str] = frozenset()
    max_concurrency = 2

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.batch_ids: list[str] = []

    async def send(
        self, endpoint: str, body: bytes, headers: Mapping[str, str]
    ) -> UpstreamResponse:
        await self.open.wait()
        self.batch_ids.append(headers["x-batchd-batch-id"])
        await asyncio.sleep(0)
        return UpstreamResponse(200, ANSWER, "req_1", {})


async def lines(count: int, prefix: str) -> AsyncIterator[bytes]:
    yield b"".join(
        orjson.dumps(
            {
                "custom_id": f"{prefix}-{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]},
            }
        )
        + b"\n"
        for i in range(count)
    )


async def wait_for(store: SqlStore, batch: Batch, statuses: set[str]) -> None:
    for _ in range(2000):
        current = await store.get_batch(batch.id)
        assert current is not None
        if current.status in statuses:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{batch.id} never reached {statuses}")


async def test_batches_on_one_upstream_take_turns(store: SqlStore, tmp_path: Path) -> None:
    """Once two batches run on one upstream, neither is sent more than two requests in a row
    until the one that started first has sent its last."""
    settings = load_settings(data_dir=str(tmp_path))
    clock = SystemClock()
    blobs = open_blobstore(settings.blob_dir)
    upstream = RecordingUpstream()
    worker = Worker(settings, store, blobs, UpstreamRouter([upstream]), clock)
    files = Files(settings, store, blobs, clock)
    batches = Batches(settings, store, clock, worker.notify)
    await worker.start()
    try:
        created = []
        for prefix in ("first", "second"):
            upload = await files.upload(Upload("default", "batch", "in.jsonl", lines(80, prefix)))
            request = {
                "input_file_id": upload.id,
                "endpoint": "/v1/chat/completions",
                "completion_window": "24h",
            }
            created.append(await batches.create("default", request))
        first, second = created
        for batch in created:
            await wait_for(store, batch, {"in_progress"})
        upstream.open.set()
        for batch in created:
            await wait_for(store, batch, {"completed"})
    finally:
        await worker.stop()
    order = upstream.batch_ids
    assert sorted(order) == sorted([first.id] * 80 + [second.id] * 80)
    start = order.index(second.id)
    end = len(order) - order[::-1].index(first.id)
    runs = [len(list(run)) for _, run in groupby(order[start:end])]
    assert max(runs) <= 2, order[start:end]
