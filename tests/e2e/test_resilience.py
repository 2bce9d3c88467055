"""Transient upstream trouble is retried; an upstream that is down is waited out, not flooded."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.e2e.conftest import TERMINAL, ModelServer, Server, ServerFactory, wait_for_batch
from tests.e2e.lines import request_line, results, submit
from tests.fakes.model_server import start_model_server_process, stop_model_server_process
from tests.support.ports import free_port

FLAKY = "^req-[0-4]$"  # the first five of ten lines


def _run(client: openai.OpenAI, tmp_path: Path, count: int) -> Any:
    """Submit ``count`` chat lines and wait until the batch is terminal."""
    batch = submit(client, tmp_path, [request_line(i) for i in range(count)])
    return wait_for_batch(client, batch.id)


def _succeeded_ids(client: openai.OpenAI, batch: Any) -> set[str]:
    assert batch.status == "completed"
    output, errors = results(client, batch)
    assert errors == []
    return {line["custom_id"] for line in output}


def _stays_in_progress(client: openai.OpenAI, batch_id: str, seconds: float) -> None:
    """For ``seconds``, the batch is in progress and no line has failed."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        batch = client.batches.retrieve(batch_id)
        assert batch.status == "in_progress"
        assert batch.request_counts.failed == 0
        time.sleep(0.1)


def _outage_then_recovery(client: openai.OpenAI, tmp_path: Path, port: int) -> None:
    """Five lines wait out 2 s of refused connections, then all succeed once a server listens."""
    batch = submit(client, tmp_path, [request_line(i) for i in range(5)])
    wait_for_batch(client, batch.id, until={"in_progress", *TERMINAL})
    _stays_in_progress(client, batch.id, 2.0)
    process, _ = start_model_server_process(tmp_path, port=port)
    try:
        batch = wait_for_batch(client, batch.id, within=30)
        assert batch.request_counts.completed == 5
        assert len(_succeeded_ids(client, batch)) == 5
    finally:
        stop_model_server_process(process)


def test_flaky_500s_are_retried_until_they_succeed(
    server: Server, fake: ModelServer, tmp_path: Path
) -> None:
    """Lines answered 500 twice succeed on their third try; the others are sent once."""
    fake.set_faults(rules=[{"fault": "status", "status": 500, "custom_id": FLAKY, "times": 2}])
    client = server.client()
    batch = _run(client, tmp_path, 10)
    assert _succeeded_ids(client, batch) == {f"req-{i}" for i in range(10)}
    received = fake.stats()["received"]
    assert received == {f"req-{i}": 3 if i < 5 else 1 for i in range(10)}


def test_reset_connections_are_retried_until_they_succeed(
    server: Server, fake: ModelServer, tmp_path: Path
) -> None:
    """Lines whose connection is reset twice succeed on their third try."""
    fake.set_faults(rules=[{"fault": "reset", "custom_id": FLAKY, "times": 2}])
    client = server.client()
    batch = _run(client, tmp_path, 10)
    assert _succeeded_ids(client, batch) == {f"req-{i}" for i in range(10)}
    received = fake.stats()["received"]
    assert all(received[f"req-{i}"] == 3 for i in range(5))


def test_a_request_that_hangs_once_succeeds_on_its_second_attempt(
    start_server: ServerFactory, fake: ModelServer, tmp_path: Path
) -> None:
    """A request timed out once is sent again and its answer kept."""
    server = start_server(extra_env={"BATCHD_REQUEST_TIMEOUT": "0.5"})
    fake.set_faults(rules=[{"fault": "hang", "custom_id": "^req-2$", "times": 1}])
    client = server.client()
    batch = _run(client, tmp_path, 4)
    assert _succeeded_ids(client, batch) == {f"req-{i}" for i in range(4)}
    assert fake.stats()["received"]["req-2"] == 2


def test_retries_are_bounded_and_only_for_retryable_answers(
    start_server: ServerFactory, fake: ModelServer, tmp_path: Path
) -> None:
    """A line always answered 503 fails after max_attempts tries; a 400 is never retried."""
    server = start_server(extra_env={"BATCHD_MAX_ATTEMPTS": "3"})
    fake.set_faults(
        rules=[
            {"fault": "status", "status": 503, "custom_id": "^req-0$"},
            {"fault": "status", "status": 400, "custom_id": "^req-1$"},
        ]
    )
    client = server.client()
    batch = _run(client, tmp_path, 5)
    assert batch.status == "completed"
    assert (batch.request_counts.completed, batch.request_counts.failed) == (3, 2)
    _, errors = results(client, batch)
    status_by_id = {line["custom_id"]: line["response"]["status_code"] for line in errors}
    assert status_by_id == {"req-0": 503, "req-1": 400}
    received = fake.stats()["received"]
    assert (received["req-0"], received["req-1"]) == (3, 1)


@pytest.mark.parametrize(
    ("header", "seconds"), [("retry_after", 1), ("retry_after_ms", 600)], ids=["seconds", "ms"]
)
def test_retry_after_is_honoured(
    server: Server, fake: ModelServer, tmp_path: Path, header: str, seconds: int
) -> None:
    """A 429 asking to wait delays the retry by at least that long, and the line then succeeds."""
    wait = seconds / 1000 if header == "retry_after_ms" else seconds
    rule = {"fault": "status", "status": 429, "custom_id": "^req-1$", "times": 1, header: seconds}
    fake.set_faults(rules=[rule])
    client = server.client()
    started = time.monotonic()
    batch = _run(client, tmp_path, 3)
    elapsed = time.monotonic() - started
    assert _succeeded_ids(client, batch) == {"req-0", "req-1", "req-2"}
    assert fake.stats()["received"]["req-1"] == 2
    assert elapsed >= wait - 0.05


def test_an_upstream_that_is_down_is_waited_out_without_a_flood(
    server: Server, fake: ModelServer, tmp_path: Path
) -> None:
    """While every answer is 503 no line fails and few requests are sent; then all succeed."""
    fake.set_faults(down=True)
    client = server.client()
    batch = submit(client, tmp_path, [request_line(i) for i in range(20)])
    wait_for_batch(client, batch.id, until={"in_progress", *TERMINAL})
    _stays_in_progress(client, batch.id, 2.5)
    during_outage = fake.stats()["total"]
    assert during_outage < 40, f"{during_outage} requests sent to a server that is down"
    fake.set_faults()
    batch = wait_for_batch(client, batch.id, within=30)
    assert batch.request_counts.completed == 20
    assert len(_succeeded_ids(client, batch)) == 20


def test_an_upstream_refusing_connections_is_waited_out(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    """Refused connections cost no line its tries while the upstream is down; then all succeed."""
    port = free_port()
    server = start_server("--upstream", f"gpt-test@http://127.0.0.1:{port}/v1", upstream=False)
    _outage_then_recovery(server.client(), tmp_path, port)


def test_a_line_on_its_last_attempt_is_not_failed_by_a_refused_connection(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    """While the breaker is open a refused connection costs nothing, even on the last attempt."""
    port = free_port()
    server = start_server(
        "--upstream",
        f"gpt-test@http://127.0.0.1:{port}/v1",
        upstream=False,
        extra_env={"BATCHD_MAX_ATTEMPTS": "2"},
    )
    _outage_then_recovery(server.client(), tmp_path, port)


def test_the_concurrency_cap_holds_while_retrying(
    start_server: ServerFactory, fake: ModelServer, tmp_path: Path
) -> None:
    """Retries never push the requests in flight past --max-concurrency."""
    server = start_server("--max-concurrency", "4")
    even = "^req-\\d*[02468]$"
    fake.set_faults(
        latency_ms=20, rules=[{"fault": "status", "status": 500, "times": 1, "custom_id": even}]
    )
    client = server.client()
    batch = _run(client, tmp_path, 40)
    assert len(_succeeded_ids(client, batch)) == 40
    stats = fake.stats()
    assert stats["responses_by_status"].get("500") == 20
    assert stats["peak_in_flight"] <= 4


def test_429s_from_a_server_at_capacity_are_retried_until_all_succeed(
    start_server: ServerFactory, fake: ModelServer, tmp_path: Path
) -> None:
    """An upstream that takes fewer requests than batchd sends still gets every line done."""
    server = start_server("--max-concurrency", "8")
    fake.set_faults(capacity=4, retry_after=0.2, latency_ms=20)
    client = server.client()
    batch = _run(client, tmp_path, 30)
    assert len(_succeeded_ids(client, batch)) == 30


def test_adaptive_concurrency_finds_what_a_server_takes_without_429s(
    start_server: ServerFactory, fake: ModelServer, tmp_path: Path
) -> None:
    """With adaptive_concurrency, batchd sends no more than a server serves well, however high
    max_concurrency is: a server that slows down past 4 requests and refuses past 12 gets every
    line done with hardly a 429 (a fixed cap of 64 gets hundreds)."""
    server = start_server(
        "--max-concurrency", "64", extra_env={"BATCHD_ADAPTIVE_CONCURRENCY": "true"}
    )
    fake.set_faults(knee=4, capacity=12, retry_after=0.2, latency_ms=50)
    client = server.client()
    batch = _run(client, tmp_path, 200)
    assert len(_succeeded_ids(client, batch)) == 200
    stats = fake.stats()
    assert stats["responses_by_status"].get("429", 0) <= 10, stats["responses_by_status"]
