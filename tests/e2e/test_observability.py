"""What an operator sees: readiness, Prometheus metrics after a batch, and one log line per batch
event."""

from __future__ import annotations

import inspect
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

import batchd.cli
from tests.e2e.conftest import ModelServer, Server, ServerFactory, wait_for_batch
from tests.e2e.lines import read_lines, request_line, results, submit, upload, write_jsonl
from tests.support.ports import free_port
from tests.support.postgres import find_bin_dir, start_cluster

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _root(server: Server) -> str:
    return server.base_url.removesuffix("/v1")


def scrape(url: str) -> Samples:
    """Every sample of a /metrics page, by name and labels."""
    response = httpx.get(url)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name`` over every series whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, lbl), v in samples.items() if n == name and wanted <= set(lbl))


def values_by(samples: Samples, name: str, label: str) -> dict[str, float]:
    return {dict(lbl)[label]: v for (n, lbl), v in samples.items() if n == name}


def test_readyz_and_metrics_need_no_api_key(start_server: ServerFactory) -> None:
    """With API keys configured, /healthz, /readyz and /metrics still answer without one."""
    server = start_server("--api-key", "sk-right")
    for path in ("/healthz", "/readyz", "/metrics"):
        assert httpx.get(_root(server) + path).status_code == 200, path
    assert httpx.get(server.base_url + "/batches").status_code == 401
    assert httpx.get(_root(server) + "/readyz").json() == {"status": "ok"}


def test_readyz_is_503_while_the_blob_store_cannot_be_written(server: Server) -> None:
    """A blob folder that is gone (a file in its place) makes /readyz a 503 naming the blobs;
    /healthz stays 200, and /readyz recovers once the folder is back."""
    blob_dir = server.data_dir / "files"
    shutil.rmtree(blob_dir)
    blob_dir.write_text("not a folder")
    response = httpx.get(_root(server) + "/readyz")
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "not_ready" and error["type"] == "server_error"
    assert "blobs" in error["message"] and "store" not in error["message"]
    assert httpx.get(_root(server) + "/healthz").status_code == 200
    blob_dir.unlink()
    blob_dir.mkdir()
    assert httpx.get(_root(server) + "/readyz").status_code == 200


@pytest.mark.postgres
def test_readyz_is_503_when_postgresql_goes_away(start_server: ServerFactory) -> None:
    """On a PostgreSQL whose server stops, /readyz turns 503 naming the store."""
    if find_bin_dir() is None:
        pytest.skip("PostgreSQL server binaries not found")
    root = Path(tempfile.mkdtemp(prefix="batchd-pg-"))  # the postgres user must reach it
    try:
        cluster = start_cluster(root)
        try:
            server = start_server("--database-url", cluster.create_database(), upstream=False)
            assert httpx.get(_root(server) + "/readyz").status_code == 200
        finally:
            cluster.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    response = httpx.get(_root(server) + "/readyz", timeout=30)
    assert response.status_code == 503
    message = response.json()["error"]["message"]
    assert "store" in message and "blobs" not in message
    assert httpx.get(_root(server) + "/healthz").status_code == 200


def _usage_of(lines: list[dict[str, Any]]) -> tuple[int, int]:
    usages = [line["response"]["body"]["usage"] for line in lines]
    return sum(u["prompt_tokens"] for u in usages), sum(u["completion_tokens"] for u in usages)


def test_metrics_after_a_batch_count_every_request(
    server: Server, fake: ModelServer, tmp_path: Path
) -> None:
    """Five lines answered 500 twice, one answered 400, four answered 200: the metrics count 9
    200s, 10 500s and one 400, 10 retries, the fake's tokens, and nothing left in flight."""
    fake.set_faults(
        rules=[
            {"fault": "status", "status": 500, "custom_id": "^req-[0-4]$", "times": 2},
            {"fault": "status", "status": 400, "custom_id": "^req-5$"},
        ]
    )
    client = server.client()
    submitted = submit(client, tmp_path, [request_line(i) for i in range(10)])
    batch = wait_for_batch(client, submitted.id)
    assert batch.status == "completed"
    output, _ = results(client, batch)
    samples = scrape(_root(server) + "/metrics")

    requests = "batchd_upstream_requests_total"
    by_status = {s: total(samples, requests, status=s) for s in ("200", "500", "400")}
    assert by_status == {"200": 9, "500": 10, "400": 1}
    assert total(samples, requests, upstream="upstream-0", model="gpt-test") == 20
    assert fake.stats()["total"] == 20
    assert total(samples, "batchd_upstream_retries_total", reason="500") == 10
    assert total(samples, "batchd_upstream_retries_total") == 10
    latency = "batchd_upstream_request_duration_seconds"
    assert total(samples, latency + "_count", model="gpt-test") == 20
    assert total(samples, latency + "_bucket", le="+Inf") == 20
    assert 0 < total(samples, latency + "_sum") < 20
    tokens_in, tokens_out = _usage_of(output)
    assert tokens_in > 0 and tokens_out > 0
    assert total(samples, "batchd_input_tokens_total", model="gpt-test") == tokens_in
    assert total(samples, "batchd_output_tokens_total", model="gpt-test") == tokens_out
    assert values_by(samples, "batchd_upstream_requests_in_flight", "upstream") == {"upstream-0": 0}
    batches = values_by(samples, "batchd_batches", "status")
    assert batches["completed"] == 1
    assert sum(batches.values()) == 1
    assert total(samples, "batchd_lines_waiting") == 0


def test_lines_waiting_counts_pending_lines(
    start_server: ServerFactory, fake: ModelServer, tmp_path: Path
) -> None:
    """While a batch runs one request at a time, lines waiting and in flight are what is left."""
    server = start_server("--max-concurrency", "1")
    fake.set_faults(latency_ms=400)
    client = server.client()
    batch = submit(client, tmp_path, [request_line(i) for i in range(30)])
    wait_for_batch(client, batch.id, until={"in_progress"})
    deadline = time.monotonic() + 10
    while fake.stats()["in_flight"] == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    samples = scrape(_root(server) + "/metrics")
    assert values_by(samples, "batchd_batches", "status")["in_progress"] == 1
    assert values_by(samples, "batchd_upstream_requests_in_flight", "upstream") == {"upstream-0": 1}
    # Claimed lines are no longer pending: at most 30 less the one in flight, at least 30 less a
    # full prefetch buffer.
    assert 0 < total(samples, "batchd_lines_waiting") < 30
    client.batches.cancel(batch.id)


def test_a_standalone_worker_serves_metrics_on_its_port(
    start_server: ServerFactory, fake: ModelServer, tmp_path: Path
) -> None:
    """``batchd worker`` with ``metrics_port`` serves /metrics counting the requests it sent."""
    api = start_server("--no-worker")
    port = free_port()
    start_server(role="worker", data_dir=api.data_dir, extra_env={"BATCHD_METRICS_PORT": str(port)})
    client = api.client()
    submitted = submit(client, tmp_path, [request_line(i) for i in range(4)])
    batch = wait_for_batch(client, submitted.id)
    assert batch.status == "completed"
    samples = scrape(f"http://127.0.0.1:{port}/metrics")
    assert total(samples, "batchd_upstream_requests_total", status="200") == 4
    assert values_by(samples, "batchd_batches", "status")["completed"] == 1
    api_samples = scrape(_root(api) + "/metrics")
    assert total(api_samples, "batchd_upstream_requests_total") == 0
    assert values_by(api_samples, "batchd_batches", "status")["completed"] == 1


def _events(server: Server) -> list[dict[str, Any]]:
    """The JSON log lines of a server (uvicorn's own lines are not JSON)."""
    return [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]


def _events_of(events: list[dict[str, Any]], batch_id: str) -> list[str]:
    return [e["event"] for e in events if e.get("batch_id") == batch_id]


def _line(i: int, prefix: str) -> dict[str, Any]:
    return request_line(i, custom_id=f"{prefix}-{i}")


def test_every_batch_event_is_logged_once_as_json(
    server: Server, fake: ModelServer, tmp_path: Path
) -> None:
    """Completed, failed, cancelled and expired batches each log their events once, in order,
    as JSON lines with batch_id, project and counts."""
    client = server.client()
    completed = submit(client, tmp_path, [request_line(i) for i in range(3)])
    wait_for_batch(client, completed.id)
    failed = submit(client, tmp_path, [request_line(0), "not json"])
    wait_for_batch(client, failed.id)
    fake.set_faults(
        rules=[
            {"fault": "latency", "custom_id": "^slow-", "latency_ms": 1500},
            {"fault": "hang", "custom_id": "^stuck-"},
        ]
    )
    cancelled = submit(client, tmp_path, [_line(i, "slow") for i in range(3)])
    wait_for_batch(client, cancelled.id, until={"in_progress"})
    client.batches.cancel(cancelled.id)
    expired = submit(client, tmp_path, [_line(i, "stuck") for i in range(3)], window="3s")
    assert wait_for_batch(client, cancelled.id).status == "cancelled"
    assert wait_for_batch(client, expired.id, within=30).status == "expired"

    events = _events(server)
    assert all({"ts", "level", "logger", "event"} <= set(e) for e in events)
    lifecycle = ["batch_created", "batch_in_progress"]
    assert _events_of(events, completed.id) == [
        *lifecycle,
        "batch_finalizing",
        "batch_completed",
    ]
    assert _events_of(events, failed.id) == ["batch_created", "batch_failed"]
    assert _events_of(events, cancelled.id) == [*lifecycle, "batch_cancelling", "batch_cancelled"]
    assert _events_of(events, expired.id) == [*lifecycle, "batch_expired"]
    by_event = {(e["batch_id"], e["event"]): e for e in events if "batch_id" in e}
    for batch_id in (completed.id, failed.id, cancelled.id, expired.id):
        for event in _events_of(events, batch_id):
            entry = by_event[(batch_id, event)]
            assert entry["project"] == "default" and entry["level"] == "info"
    done = by_event[(completed.id, "batch_completed")]
    assert (done["total"], done["completed"], done["failed"]) == (3, 3, 0)
    assert done["input_tokens"] > 0 and done["output_tokens"] > 0
    assert by_event[(failed.id, "batch_failed")]["errors"] == 1
    assert by_event[(expired.id, "batch_expired")]["failed"] == 3


@pytest.mark.skipif(
    "log_format" not in inspect.getsource(batchd.cli),
    reason="cli.py does not pass settings.log_format to logs.configure yet",
)
def test_log_format_text_is_for_people(
    start_server: ServerFactory, fake: ModelServer, tmp_path: Path
) -> None:
    """With log_format text, events are plain lines with key=value fields."""
    server = start_server(extra_env={"BATCHD_LOG_FORMAT": "text"})
    client = server.client()
    file_id = upload(client, write_jsonl(tmp_path / "in.jsonl", [request_line(0)]))
    batch = client.batches.create(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    done = wait_for_batch(client, batch.id)
    assert read_lines(client, done.output_file_id)
    log = server.log()
    assert not any(line.startswith("{") for line in log.splitlines())
    completed = [line for line in log.splitlines() if " batch_completed " in line]
    assert len(completed) == 1
    assert f"batch_id={batch.id}" in completed[0] and "project=default" in completed[0]
