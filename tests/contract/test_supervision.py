"""A worker never stalls in silence: one bad answer costs its own line, an I/O error or a bug in a
task costs a retry or a restart, and while commits fail nothing more is claimed or sent (worker
and store in this process, upstreams and faults written for the test)."""

from __future__ import annotations

import asyncio
import errno
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest

from batchd.blobstore.local import LocalBlobStore
from batchd.errors import StoreError
from batchd.models import RequestResult
from batchd.store import SqlStore
from batchd.upstreams.base import Upstream, UpstreamResponse
from batchd.worker.commits import GroupCommitter
from tests.support.worker import ANSWER, running_worker, until, wait_for

pytestmark = pytest.mark.anyio

POISON = b'{"object": "chat.completion", "usage": {"prompt_tokens": 9223372036854775808}}'


class CountingUpstream(Upstream):
    """Answers every line at once (``answers`` may name a body per custom_id) and counts what it
    was sent, per custom_id."""

    name = "counting"
    models: frozenset[str] = frozenset()
    max_concurrency = 4

    def __init__(self, answers: Mapping[str, bytes] | None = None) -> None:
        self.answers = dict(answers or {})
        self.sent: Counter[str] = Counter()
        self.status = 200

    async def send(
        self, endpoint: str, body: bytes, headers: Mapping[str, str]
    ) -> UpstreamResponse:
        custom_id = headers["x-batchd-custom-id"]
        self.sent[custom_id] += 1
        await asyncio.sleep(0.001)
        return UpstreamResponse(self.status, self.answers.get(custom_id, ANSWER), "req_1", {})


def commits_fail(
    monkeypatch: pytest.MonkeyPatch, error: Callable[[Sequence[RequestResult]], StoreError | None]
) -> None:
    """The store's commits raise ``error(results)`` whenever it is not None."""
    record = SqlStore.record_results

    async def failing(
        self: SqlStore, owner: str, results: Sequence[RequestResult], *, again: bool = False
    ) -> None:
        if (refusal := error(results)) is not None:
            raise refusal
        await record(self, owner, results, again=again)

    monkeypatch.setattr(SqlStore, "record_results", failing)


async def error_lines(store: SqlStore, tmp_path: Path, batch_id: str) -> dict[str, Any]:
    """The batch's error file, by custom_id."""
    batch = await store.get_batch(batch_id)
    assert batch is not None and batch.error_file_id is not None
    file = await store.get_file("default", batch.error_file_id)
    assert file is not None
    lines = (tmp_path / "files" / file.blob_key).read_bytes().splitlines()
    return {line["custom_id"]: line for line in map(orjson.loads, lines)}


async def test_a_token_count_past_64_bits_fails_only_its_line(
    store: SqlStore, tmp_path: Path
) -> None:
    """The answer that used to stop every batch of the worker (its group commit overflowed)
    is its line's error; the other lines of its group are committed."""
    upstream = CountingUpstream({"r-3": POISON})
    async with running_worker(store, tmp_path, upstream) as create:
        batch = await create("r", 20)
        await wait_for(store, batch, {"completed"})
    done = await store.get_batch(batch.id)
    assert done is not None and (done.completed, done.failed) == (19, 1)
    assert done.usage.input_tokens == 19
    failed = await error_lines(store, tmp_path, batch.id)
    assert failed["r-3"]["error"]["code"] == "invalid_response"


async def test_a_result_the_store_refuses_fails_alone(
    store: SqlStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever the store refuses for good, not for the moment, costs only the line it came
    with: its group is committed in halves around it, and it fails as server_error."""

    def refusal(results: Sequence[RequestResult]) -> StoreError | None:
        if any(result.line == 5 and b"chat.completion" in result.output_line for result in results):
            return StoreError("a value the store cannot hold", transient=False)
        return None

    commits_fail(monkeypatch, refusal)
    upstream = CountingUpstream()
    async with running_worker(store, tmp_path, upstream) as create:
        batch = await create("r", 40)
        await wait_for(store, batch, {"completed"})
    done = await store.get_batch(batch.id)
    assert done is not None and (done.completed, done.failed) == (39, 1)
    [(custom_id, line)] = (await error_lines(store, tmp_path, batch.id)).items()
    assert custom_id == "r-4"  # line 5
    assert line["error"]["code"] == "server_error"
    assert "could not record" in line["error"]["message"]
    assert set(upstream.sent.values()) == {1}


async def test_an_io_error_reading_the_input_costs_a_retry_not_the_worker(
    store: SqlStore,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """One EIO from the blob store (a bad sector, a flaky network disk) is logged, and the lines
    it was reading are tried again: the batch completes, every line sent once."""
    read_range = LocalBlobStore.read_range
    failures = iter([True])

    async def flaky(self: LocalBlobStore, key: str, offset: int, length: int) -> bytes:
        if next(failures, False):
            raise OSError(errno.EIO, "Input/output error")
        return await read_range(self, key, offset, length)

    monkeypatch.setattr(LocalBlobStore, "read_range", flaky)
    upstream = CountingUpstream()
    async with running_worker(store, tmp_path, upstream, retry_base_delay=0.01) as create:
        batch = await create("r", 20)
        await wait_for(store, batch, {"completed"})
    done = await store.get_batch(batch.id)
    assert done is not None and (done.completed, done.failed) == (20, 0)
    assert set(upstream.sent.values()) == {1} and len(upstream.sent) == 20
    assert any(r.getMessage() == "input_read_failed" for r in caplog.records)


async def test_an_error_in_the_committer_is_logged_and_it_is_restarted(
    store: SqlStore,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A bug in the committer's own loop does not leave the worker looking healthy with nothing
    committed: it is logged with its traceback, the committer restarts, the batch completes."""
    gather = GroupCommitter._gather
    failures = iter([True])

    async def buggy(self: GroupCommitter) -> None:
        await gather(self)
        if next(failures, False):
            raise RuntimeError("a bug in the committer")

    monkeypatch.setattr(GroupCommitter, "_gather", buggy)
    upstream = CountingUpstream()
    async with running_worker(store, tmp_path, upstream) as create:
        batch = await create("r", 30)
        await wait_for(store, batch, {"completed"})
    done = await store.get_batch(batch.id)
    assert done is not None and (done.completed, done.failed) == (30, 0)
    assert set(upstream.sent.values()) == {1}
    failed = [r for r in caplog.records if r.getMessage() == "task_failed"]
    assert [getattr(r, "task", None) for r in failed] == ["committer"]
    assert failed[0].levelno == logging.ERROR and failed[0].exc_info is not None


async def test_while_commits_fail_nothing_more_is_claimed_or_sent(
    store: SqlStore,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The store refusing writes for a while (a full disk) stalls the worker: the model server
    gets nothing more than what was in flight, and once writes succeed again the batch goes on
    without a restart, no line sent twice."""
    failing_until = 0.0

    def full_for_a_while(results: Sequence[RequestResult]) -> StoreError | None:
        if time.monotonic() < failing_until:
            return StoreError("SQLite: database or disk is full")
        return None

    commits_fail(monkeypatch, full_for_a_while)
    upstream = CountingUpstream()
    async with running_worker(store, tmp_path, upstream) as create:
        batch = await create("r", 400)
        await until(lambda: sum(upstream.sent.values()) >= 50)
        failing_until = time.monotonic() + 1.5
        await asyncio.sleep(0.5)
        sent_while_failing = sum(upstream.sent.values())
        await asyncio.sleep(0.75)
        assert sum(upstream.sent.values()) == sent_while_failing  # nothing sent meanwhile
        await wait_for(store, batch, {"completed"})
    done = await store.get_batch(batch.id)
    assert done is not None and (done.completed, done.failed) == (400, 0)
    assert set(upstream.sent.values()) == {1} and len(upstream.sent) == 400
    events = [r.getMessage() for r in caplog.records]
    assert "commit_failed" in events and "commit_resumed" in events


async def test_while_every_line_waits_for_its_retry_the_feeder_does_not_spin(
    store: SqlStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing to claim (every line waits on its own retry time): the feeder looks about once a
    poll interval, not in a loop that wakes the senders for nothing."""
    claim = SqlStore.claim_requests
    claims = 0

    async def counting(self: SqlStore, *args: Any) -> Any:
        nonlocal claims
        claims += 1
        return await claim(self, *args)

    monkeypatch.setattr(SqlStore, "claim_requests", counting)
    upstream = CountingUpstream()
    upstream.status = 503  # every line to be tried again in 30 s
    async with running_worker(store, tmp_path, upstream, retry_base_delay=30) as create:
        await create("r", 4)
        await until(lambda: sum(upstream.sent.values()) == 4)
        await asyncio.sleep(0.2)
        before = claims
        await asyncio.sleep(1.0)
        assert claims - before <= 6, claims - before


async def test_a_store_that_refuses_every_commit_for_a_while_fails_no_line(
    store: SqlStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error that trying again only repeats, but for every commit (a schema being changed, a
    permission revoked): no result is failed or dropped as if it were to blame; once commits
    go through, every line is recorded, none sent twice."""
    refusing_until = 0.0

    def refusing(results: Sequence[RequestResult]) -> StoreError | None:
        if time.monotonic() < refusing_until:
            return StoreError("permission denied for table results", transient=False)
        return None

    commits_fail(monkeypatch, refusing)
    upstream = CountingUpstream()
    async with running_worker(store, tmp_path, upstream) as create:
        refusing_until = time.monotonic() + 2.0
        batch = await create("r", 30)
        await wait_for(store, batch, {"completed"})
    done = await store.get_batch(batch.id)
    assert done is not None and (done.completed, done.failed) == (30, 0)
    assert set(upstream.sent.values()) == {1} and len(upstream.sent) == 30


class SomeLinesAlwaysFail(CountingUpstream):
    """Answers the lines named in ``failing`` 500, every time; the others at once."""

    def __init__(self, failing: set[str]) -> None:
        super().__init__()
        self.failing = failing
        self.probed = 0

    async def send(
        self, endpoint: str, body: bytes, headers: Mapping[str, str]
    ) -> UpstreamResponse:
        answer = await super().send(endpoint, body, headers)
        if headers["x-batchd-custom-id"] in self.failing:
            return UpstreamResponse(500, b'{"error": {"message": "no"}}', "req_1", {})
        return answer

    async def probe(self) -> None:
        self.probed += 1


async def test_lines_that_always_fail_at_the_end_of_a_batch_do_not_pause_it_for_good(
    store: SqlStore, tmp_path: Path
) -> None:
    """Once only lines that fail on their own are left, the breaker (opened by them: every
    answer fails, from enough lines) asks the server itself whether it is up rather than probe
    with one of them, one every max_cooldown; the lines then fail after their own tries."""
    failing = {f"r-{i}" for i in range(0, 200, 10)}
    upstream = SomeLinesAlwaysFail(failing)
    async with running_worker(
        store,
        tmp_path,
        upstream,
        retry_base_delay=0.05,
        retry_max_delay=0.2,
        breaker_base_cooldown=0.2,
        breaker_max_cooldown=30,
    ) as create:
        batch = await create("r", 200)
        started = time.monotonic()
        await wait_for(store, batch, {"completed"})
    done = await store.get_batch(batch.id)
    assert done is not None and (done.completed, done.failed) == (180, 20)
    assert time.monotonic() - started < 15
    assert all(upstream.sent[custom_id] == 5 for custom_id in failing)
    assert upstream.probed >= 1
