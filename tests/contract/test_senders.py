"""A dispatcher's senders: they outlive the requests they abandon and the errors they do not
expect, and while the upstream is down they wait for it one at a time (worker and store in this
process, upstreams written to misbehave)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path

import pytest

from batchd.errors import StoreError, UpstreamUnreachable
from batchd.store import SqlStore
from batchd.upstreams.base import Upstream, UpstreamResponse
from batchd.worker.commits import GroupCommitter
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
    """Refuses the first request's connection (the breaker opens), then never answers again."""

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
            raise UpstreamUnreachable()
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


class BuggyUpstream(Upstream):
    """Raises an error no upstream should (a bug) on the first ``failures`` requests; answers the
    others."""

    name = "buggy"
    models: frozenset[str] = frozenset()
    max_concurrency = 1

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.sent = 0

    async def send(
        self, endpoint: str, body: bytes, headers: Mapping[str, str]
    ) -> UpstreamResponse:
        self.sent += 1
        if self.sent <= self.failures:
            raise RuntimeError("a bug")
        return UpstreamResponse(200, ANSWER, "req_1", {})


async def test_a_line_whose_send_raises_a_bug_is_tried_again(
    store: SqlStore, tmp_path: Path
) -> None:
    """A bug that raises while a line is sent costs that line an attempt, not its sender: with
    one sender, the batch still completes, every line answered."""
    upstream = BuggyUpstream(failures=1)
    async with running_worker(store, tmp_path, upstream, retry_base_delay=0) as create:
        batch = await create("r", 3)
        await wait_for(store, batch, {"completed"})
    done = await store.get_batch(batch.id)
    assert done is not None and (done.completed, done.failed) == (3, 0)
    assert upstream.sent == 4


async def test_a_line_whose_send_always_raises_fails_and_the_batch_ends(
    store: SqlStore, tmp_path: Path
) -> None:
    """Out of tries, such a line fails as a server_error, and its batch ends rather than wait."""
    upstream = BuggyUpstream(failures=1_000)
    async with running_worker(
        store, tmp_path, upstream, retry_base_delay=0, max_attempts=2
    ) as create:
        batch = await create("r", 2)
        await wait_for(store, batch, {"completed"})
    done = await store.get_batch(batch.id)
    assert done is not None and (done.completed, done.failed) == (0, 2)
    assert upstream.sent == 4


async def test_a_sender_outlives_the_store_failing_under_it(
    store: SqlStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store failing while a sender waits for room to hand over results is logged, and the
    sender goes on: with one sender, the batch still completes."""
    backlogged = iter([True])
    monkeypatch.setattr(GroupCommitter, "backlogged", property(lambda _: next(backlogged, False)))

    async def failing_room(self: GroupCommitter) -> None:
        raise StoreError("the database is gone for a moment")

    monkeypatch.setattr(GroupCommitter, "room", failing_room)
    upstream = BuggyUpstream(failures=0)
    async with running_worker(store, tmp_path, upstream, poll_interval=0.05) as create:
        batch = await create("r", 3)
        await wait_for(store, batch, {"completed"})
    assert upstream.sent == 3


class HeaderRecordingUpstream(Upstream):
    name = "recording"
    models: frozenset[str] = frozenset()
    max_concurrency = 1

    def __init__(self) -> None:
        self.headers: list[dict[str, str]] = []

    async def send(
        self, endpoint: str, body: bytes, headers: Mapping[str, str]
    ) -> UpstreamResponse:
        self.headers.append(dict(headers))
        return UpstreamResponse(200, ANSWER, "req_1", {})


async def test_a_long_custom_id_is_not_sent_as_a_header(store: SqlStore, tmp_path: Path) -> None:
    """Percent-encoded past 512 bytes, a custom_id would push a model server past its header
    limit: it is left out (the batch id still goes)."""
    upstream = HeaderRecordingUpstream()
    async with running_worker(store, tmp_path, upstream) as create:
        batch = await create("é" * 200, 1)  # 200 characters, 1,200 bytes encoded
        await wait_for(store, batch, {"completed"})
        short = await create("r", 1)
        await wait_for(store, short, {"completed"})
    long_headers, short_headers = upstream.headers
    assert "x-batchd-custom-id" not in long_headers and "x-batchd-batch-id" in long_headers
    assert short_headers["x-batchd-custom-id"] == "r-0"
