"""The worker never stalls in silence, driven as a user would: failing lines slow only
themselves, a server's Retry-After has a ceiling, an upstream in trouble is named in the log and
by ``GET /v1/upstreams``, and a worker task that keeps failing takes the process down."""

from __future__ import annotations

import time
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx
import openai

from tests.e2e.conftest import TERMINAL, ModelServer, Server, ServerFactory, wait_for_batch
from tests.e2e.lines import request_line, results, submit
from tests.fakes.model_server import start_model_server_process, stop_model_server_process
from tests.support.ports import free_port

LINES = 1_080
RATE_LIMITED = [n for n in range(LINES) if n % 27 == 0]  # 40 lines: 429 twice, then answered
BROKEN = [n for n in range(LINES) if n % 27 == 13]  # 40 lines: 500 twice, then answered


def _ids(numbers: list[int]) -> str:
    return "^req-(" + "|".join(map(str, numbers)) + ")$"


def _timed_batch(client: openai.OpenAI, tmp_path: Path, count: int) -> tuple[float, Any]:
    started = time.monotonic()
    batch = submit(client, tmp_path, [request_line(i) for i in range(count)])
    batch = wait_for_batch(client, batch.id, within=300)
    return time.monotonic() - started, batch


def test_a_few_failing_lines_slow_only_themselves(
    start_server: ServerFactory, fake: ModelServer, tmp_path: Path
) -> None:
    """40 lines answered 429 (Retry-After: 1) twice and 40 answered 500 twice, among 1,000 good
    ones, at a server that takes 8 at once: the batch takes at most 3 times a clean run plus the
    two Retry-After waits; each 429 line is sent exactly 3 times, at least 1 s apart; never more
    than 8 requests are in flight."""
    server = start_server("--max-concurrency", "8")
    client = server.client()
    fake.set_faults(capacity=8, latency_ms=50)
    clean, batch = _timed_batch(client, tmp_path, LINES)
    assert batch.request_counts.completed == LINES
    fake.reset()
    fake.set_faults(
        capacity=8,
        latency_ms=50,
        record_arrivals=True,
        rules=[
            {"fault": "status", "status": 429, "retry_after": 1, "times": 2,
             "custom_id": _ids(RATE_LIMITED)},
            {"fault": "status", "status": 500, "times": 2, "custom_id": _ids(BROKEN)},
        ],
    )  # fmt: skip
    faulty, batch = _timed_batch(client, tmp_path, LINES)
    output, errors = results(client, batch)
    assert (len(output), errors) == (LINES, [])
    assert faulty <= 3 * clean + 2, f"{faulty:.1f} s against {clean:.1f} s clean"
    stats = fake.stats()
    assert stats["peak_in_flight"] <= 8
    for n in RATE_LIMITED:
        arrivals = stats["arrivals"][f"req-{n}"]
        assert len(arrivals) == 3, (n, arrivals)
        gaps = [later - earlier for earlier, later in pairwise(arrivals)]
        assert min(gaps) >= 0.99, (n, gaps)
    assert all(stats["received"][f"req-{n}"] == 3 for n in BROKEN)


def test_a_retry_after_of_decades_waits_the_ceiling(
    start_server: ServerFactory, fake: ModelServer, tmp_path: Path
) -> None:
    """Retry-After: 999999999 on every line (enough to pause the whole upstream) is honoured up
    to max_retry_after: the batch completes within seconds."""
    server = start_server(extra_env={"BATCHD_MAX_RETRY_AFTER": "2", "BATCHD_BREAKER_WINDOW": "10"})
    fake.set_faults(
        rules=[{"fault": "status", "status": 429, "retry_after": 999999999, "times": 1}]
    )
    client = server.client()
    elapsed, batch = _timed_batch(client, tmp_path, 20)
    output, _ = results(client, batch)
    assert len(output) == 20
    assert all(count == 2 for count in fake.stats()["received"].values())
    assert 1.9 <= elapsed < 15


def _upstreams(server: Server) -> list[dict[str, Any]]:
    response = httpx.get(
        server.base_url + "/upstreams", headers={"Authorization": "Bearer sk-test"}
    )
    response.raise_for_status()
    data: list[dict[str, Any]] = response.json()["data"]
    return data


def _until(condition: Any, within: float = 20.0) -> Any:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.1)
    raise AssertionError("the condition never held")


def test_an_unreachable_upstream_is_named_in_the_log_and_by_get_upstreams(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    """At start, and while lines wait on it, the log says which upstream and why; GET
    /v1/upstreams shows it in trouble with the lines waiting; once it answers, it is ok and the
    batch completes."""
    port = free_port()
    server = start_server("--upstream", f"gpt-test@http://127.0.0.1:{port}/v1", upstream=False)
    _until(lambda: "upstream_unreachable_at_start" in server.log())
    assert "connection refused" in server.log()
    client = server.client()
    batch = submit(client, tmp_path, [request_line(i) for i in range(5)])

    def in_trouble() -> dict[str, Any] | None:
        found = [u for u in _upstreams(server) if u["state"] in ("paused", "probing", "failing")]
        return found[0] if found and found[0]["lines_waiting"] else None

    upstream = _until(in_trouble)
    assert upstream["name"] == "upstream-0" and upstream["reason"] == "connection refused"
    assert upstream["workers"] == 1 and upstream["batches"] == 1
    _until(lambda: "upstream_in_trouble" in server.log())
    process, _ = start_model_server_process(tmp_path, port=port)
    try:
        done = wait_for_batch(client, batch.id, within=30)
        assert done.request_counts.completed == 5
        _until(lambda: _upstreams(server)[0]["state"] == "ok")
    finally:
        stop_model_server_process(process)
    assert "upstream_recovered" in server.log()


def test_an_upstream_answering_plain_text_500s_fails_its_lines_soon_and_says_why(
    server: Server, fake: ModelServer, tmp_path: Path
) -> None:
    """A misconfigured server (LiteLLM without its master key answers every request with a
    plain-text 500): its few lines fail after their tries within seconds, not minutes, and
    the log names the upstream and the status."""
    fake.set_faults(rules=[{"fault": "status", "status": 500, "body": "Internal Server Error"}])
    client = server.client()
    elapsed, batch = _timed_batch(client, tmp_path, 5)
    assert batch.status == "completed" and batch.request_counts.failed == 5
    assert elapsed < 20
    _until(lambda: "upstream_in_trouble" in server.log())
    assert "HTTP 500" in server.log()


def test_a_worker_task_that_keeps_failing_takes_the_process_down(
    start_server: ServerFactory,
) -> None:
    """A task that fails every time it is restarted (here a broken housekeeping) is logged each
    time, /readyz answers 503 naming it meanwhile, and the process exits 70 for systemd or
    Kubernetes to restart."""
    server = start_server(module="tests.support.broken_worker")
    root = server.base_url.removesuffix("/v1")

    def not_ready() -> httpx.Response | None:
        response = httpx.get(root + "/readyz")
        return response if response.status_code == 503 else None

    response = _until(not_ready, within=10)
    assert "worker task housekeeping" in response.json()["error"]["message"]
    assert server.process.wait(timeout=30) == 70
    log = server.log()
    assert log.count('"task_failed"') == 5
    assert "task_failed_for_good" in log and "a bug in housekeeping" in log


def test_a_batch_ends_whatever_status_its_lines_get(
    server: Server, fake: ModelServer, tmp_path: Path
) -> None:
    """Answers batchd cannot keep (not JSON, past the size limit) fail their own lines; the
    batch completes with the rest."""
    fake.set_faults(
        rules=[
            {"fault": "status", "status": 200, "body": "plain text", "custom_id": "^req-1$"},
            {"fault": "large", "size": 80 << 20, "custom_id": "^req-2$"},
            {"fault": "large", "size": 80 << 20, "gzip": True, "custom_id": "^req-3$"},
        ]
    )
    client = server.client()
    _, batch = _timed_batch(client, tmp_path, 6)
    assert batch.status in TERMINAL
    output, errors = results(client, batch)
    codes = {line["custom_id"]: line["error"]["code"] for line in errors}
    assert codes == {
        "req-1": "invalid_response",
        "req-2": "response_too_large",
        "req-3": "response_too_large",
    }
    assert len(output) == 3
