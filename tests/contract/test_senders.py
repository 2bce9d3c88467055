"""A dispatcher's senders: they outlive the requests they abandon and the errors they do not
expect, and while the upstream is down they wait for it one at a time (worker and store in this
process, upstreams written to misbehave)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path

import pytest

from batchd.store import SqlStore
from batchd.upstreams.base import Upstream, UpstreamResponse
from tests.support.worker import ANSWER, running_worker, until, wait_for

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
    upstream = HangingUpstream()
    async with running_worker(
        store, tmp_path, upstream, completion_windows=["24h", "2s"]
    ) as create:
        hung = await create("hung", 2, "2s")
        await wait_for(store, hung, {"expired"})
        after = await create("after", 5)
        await wait_for(store, after, {"completed"})
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
    upstream = DownThenHangingUpstream()
    async with running_worker(
        store,
        tmp_path,
        upstream,
        breaker_threshold=1,
        breaker_base_cooldown=0.05,
        breaker_max_cooldown=0.3,
    ) as create:
        await create("r", 100)
        await until(lambda: upstream.sent >= 2)  # the first probe
        await asyncio.sleep(0.75)  # two max_cooldowns and a half: two more probes
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
    upstream = FailingOnceUpstream()
    async with running_worker(store, tmp_path, upstream, poll_interval=0.05) as create:
        await create("r", 3)
        await until(lambda: upstream.sent >= 3)
    assert upstream.sent == 3
