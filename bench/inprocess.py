"""batchd's own CPU per request, without HTTP: a worker and its store in this process, sending
to an upstream that answers at once, against the bare loop's own work per request (parse the
line, dump its body, make the output line, write it).

Over HTTP most of the CPU is the client's and the event loop's, which batchd and the bare loop
share, and the machine's noise hides changes of a few µs; here they show.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import orjson
import uvloop

from batchd.batches import Batches
from batchd.blobstore import open_blobstore
from batchd.clock import SystemClock
from batchd.files import Files, Upload
from batchd.heap import tune_collector
from batchd.result_lines import answered_line
from batchd.settings import load_settings
from batchd.store import open_store
from batchd.upstreams import UpstreamRouter
from batchd.upstreams.base import Upstream, UpstreamResponse
from batchd.worker import Worker

ANSWER = orjson.dumps(
    {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-bench",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "ok " * 20},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 9, "completion_tokens": 12, "total_tokens": 21},
    }
)


class InstantUpstream(Upstream):
    """Answers every request at once, after one turn of the event loop."""

    name = "instant"
    models: frozenset[str] = frozenset()
    max_concurrency = 64

    async def send(
        self, endpoint: str, body: bytes, headers: Mapping[str, str]
    ) -> UpstreamResponse:
        await asyncio.sleep(0)
        return UpstreamResponse(200, ANSWER, "req_1", {})


def batchd_cpu(
    work: Path, source: Path, requests: int, database_url: str | None
) -> dict[str, float]:
    """CPU seconds of this process from ``batches.create`` to each phase of one batch."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(_run_batch(work, source, requests, database_url))


async def _run_batch(
    work: Path, source: Path, requests: int, database_url: str | None
) -> dict[str, float]:
    settings = load_settings(
        data_dir=str(work), database_url=database_url, max_requests_per_batch=requests
    )
    store = await open_store(settings.resolved_database_url)
    blobs = open_blobstore(settings.blob_dir)
    clock = SystemClock()
    worker = Worker(settings, store, blobs, UpstreamRouter([InstantUpstream()]), clock)
    files = Files(settings, store, blobs, clock)
    batches = Batches(settings, store, blobs, clock, worker.notify)
    await worker.start()
    tune_collector()
    try:
        upload = await files.upload(Upload("default", "batch", source.name, _chunks(source)))
        started = time.process_time()
        batch = await batches.create(
            "default",
            {
                "input_file_id": upload.id,
                "endpoint": "/v1/chat/completions",
                "completion_window": "24h",
            },
        )
        reached: dict[str, float] = {}
        while "completed" not in reached:
            current = await store.get_batch(batch.id)
            assert current is not None
            assert current.status.value not in ("failed", "expired", "cancelled"), current
            reached.setdefault(current.status.value, time.process_time() - started)
            await asyncio.sleep(0.01)
        return reached
    finally:
        await worker.stop()
        await store.close()


async def _chunks(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            yield chunk


def bare_cpu(source: Path) -> float:
    """CPU seconds of the bare loop's own work on every line, without sending anything."""
    lines = source.read_bytes().splitlines()
    started = time.process_time()
    with open(source.with_suffix(".bare.jsonl"), "wb") as sink:
        for line in lines:
            request = orjson.loads(line)
            orjson.dumps(request["body"])
            _, out, _ = answered_line(request["custom_id"], 200, "req_1", ANSWER)
            sink.write(out + b"\n")
    return time.process_time() - started
