"""A worker and its store in the test's own process, for contract tests that drive batches through
an upstream written for the test."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson

from batchd.batches import Batches
from batchd.blobstore import open_blobstore
from batchd.clock import SystemClock
from batchd.files import Files, Upload
from batchd.models import Batch
from batchd.settings import load_settings
from batchd.store import SqlStore
from batchd.upstreams import UpstreamRouter
from batchd.upstreams.base import Upstream
from batchd.worker import Worker

ANSWER = orjson.dumps(
    {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }
)

CreateBatch = Callable[..., Awaitable[Batch]]
"""``create(prefix, count, window="24h")``: a chat batch of ``count`` lines, ids ``prefix-N``."""


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


@contextlib.asynccontextmanager
async def running_worker(
    store: SqlStore, tmp_path: Path, upstream: Upstream, **settings: Any
) -> AsyncIterator[CreateBatch]:
    """A started worker sending to ``upstream``; yields a function that creates batches. The
    worker is stopped on the way out, with a short grace for requests still in flight."""
    config = load_settings(data_dir=str(tmp_path), **settings)
    clock = SystemClock()
    blobs = open_blobstore(config.blob_dir)
    worker = Worker(config, store, blobs, UpstreamRouter([upstream]), clock)
    files = Files(config, store, blobs, clock)
    batches = Batches(config, store, blobs, clock, worker.notify)

    async def create(prefix: str, count: int, window: str = "24h") -> Batch:
        upload = await files.upload(Upload("default", "batch", "in.jsonl", lines(count, prefix)))
        request = {
            "input_file_id": upload.id,
            "endpoint": "/v1/chat/completions",
            "completion_window": window,
        }
        return await batches.create("default", request)

    await worker.start()
    try:
        yield create
    finally:
        await worker.stop(0.5)


async def wait_for(store: SqlStore, batch: Batch, statuses: set[str]) -> None:
    for _ in range(2000):
        current = await store.get_batch(batch.id)
        assert current is not None
        if current.status in statuses:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{batch.id} never reached {statuses}")


async def until(condition: Callable[[], bool], within: float = 5.0) -> None:
    """Return once ``condition()`` holds, polled every 10 ms; fail after ``within`` seconds."""
    for _ in range(int(within * 100)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the condition never held")
