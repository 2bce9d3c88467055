"""A dispatcher's senders: they outlive the requests they abandon, and while the upstream is down
they wait for it one at a time (worker and store in this process, upstreams that never answer)."""

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


class DownThenHangingUpstream(Upstream):
    """Answers the first request 503 (the breaker opens), then never answers again."""

    name = "down"
    models: frozenset[str] = frozenset()
    max_concurrency = 16

    def __init__(self) -> None:
        self.sent = 0

    async def send(
        self, endpoint: str, body: bytes, headers: Mapping[str, str]
    ) -> UpstreamResponse:
        self.sent += 1
        if self.sent == 1:
            return UpstreamResponse(503, b"{}", None, {})
        await asyncio.Event().wait()
        raise AssertionError("never answered")


async def test_probes_that_never_answer_are_replaced_one_at_a_time(
    store: SqlStore, tmp_path: Path
) -> None:
    """Once the breaker is open, a probe that never reports back is replaced by one more probe
    each ``breaker_max_cooldown``, not by every sender waiting for the breaker at once."""
    settings = load_settings(
        data_dir=str(tmp_path),
        breaker_threshold=1,
        breaker_base_cooldown=0.05,
        breaker_max_cooldown=0.3,
    )
    clock = SystemClock()
    blobs = open_blobstore(settings.blob_dir)
    upstream = DownThenHangingUpstream()
    worker = Worker(settings, store, blobs, UpstreamRouter([upstream]), clock)
    files = Files(settings, store, blobs, clock)
    batches = Batches(settings, store, clock, worker.notify)
    await worker.start()
    try:
        upload = await files.upload(Upload("default", "batch", "in.jsonl", lines(100, "r")))
        request = {
            "input_file_id": upload.id,
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
        }
        await batches.create("default", request)
        for _ in range(500):
            if upstream.sent >= 2:  # the first probe
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.75)  # two max_cooldowns and a half: two more probes
    finally:
        await worker.stop(0.1)
    assert 2 <= upstream.sent <= 5, upstream.sent


class FailingOnceUpstream(Upstream):
    """Raises an error no upstream should (a bug) on the first request; answers the others."""

    name = "failing"
    models: frozenset[str] = frozenset()
    max_concurrency = 1

    def __init__(self) -> None:
        self.sent = 0

    async def send(
        self, endpoint: str, body: bytes, headers: Mapping[str, str]
    ) -> UpstreamResponse:
        self.sent += 1
        if self.sent == 1:
            raise RuntimeError("a bug")
        return UpstreamResponse(200, ANSWER, "req_1", {})


async def test_a_sender_outlives_an_error_it_does_not_expect(
    store: SqlStore, tmp_path: Path
) -> None:
    """A bug that raises while a line is sent is logged, and its sender goes on with the next
    lines: with one sender, the rest of the batch is still sent."""
    settings = load_settings(data_dir=str(tmp_path), poll_interval=0.05)
    clock = SystemClock()
    blobs = open_blobstore(settings.blob_dir)
    upstream = FailingOnceUpstream()
    worker = Worker(settings, store, blobs, UpstreamRouter([upstream]), clock)
    files = Files(settings, store, blobs, clock)
    batches = Batches(settings, store, clock, worker.notify)
    await worker.start()
    try:
        upload = await files.upload(Upload("default", "batch", "in.jsonl", lines(3, "r")))
        request = {
            "input_file_id": upload.id,
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
        }
        await batches.create("default", request)
        for _ in range(500):
            if upstream.sent >= 3:
                break
            await asyncio.sleep(0.01)
    finally:
        await worker.stop(0.1)
    assert upstream.sent == 3
