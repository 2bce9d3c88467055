"""Batches that use the same upstream share its slots turn by turn (worker and store in this
process, an upstream that records the order it is sent requests in)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from itertools import groupby
from pathlib import Path

import pytest

from batchd.store import SqlStore
from batchd.upstreams.base import Upstream, UpstreamResponse
from tests.support.worker import ANSWER, running_worker, wait_for

pytestmark = pytest.mark.anyio


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


async def test_batches_on_one_upstream_take_turns(store: SqlStore, tmp_path: Path) -> None:
    """Once two batches run on one upstream, neither is sent more than two requests in a row
    until the one that started first has sent its last."""
    upstream = RecordingUpstream()
    async with running_worker(store, tmp_path, upstream) as create:
        first, second = created = [await create(prefix, 80) for prefix in ("first", "second")]
        for batch in created:
            await wait_for(store, batch, {"in_progress"})
        upstream.open.set()
        for batch in created:
            await wait_for(store, batch, {"completed"})
    order = upstream.batch_ids
    assert sorted(order) == sorted([first.id] * 80 + [second.id] * 80)
    start = order.index(second.id)
    end = len(order) - order[::-1].index(first.id)
    runs = [len(list(run)) for _, run in groupby(order[start:end])]
    assert max(runs) <= 2, order[start:end]
