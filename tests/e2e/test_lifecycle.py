"""Cancel and expiry: finished work is kept, and every other line is accounted for."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import openai
import pytest

from tests.e2e.conftest import ModelServer, Server, ServerFactory, wait_for_batch
from tests.e2e.lines import request_line, results, submit


def test_cancel_keeps_finished_results_and_marks_the_rest_cancelled(
    start_server: ServerFactory, fake: ModelServer, tmp_path: Path
) -> None:
    """Cancel mid-run: in-flight requests finish, unsent lines become batch_cancelled."""
    server = start_server("--max-concurrency", "2")
    fake.set_faults(latency_ms=100)
    client = server.client()
    batch = submit(client, tmp_path, [request_line(i) for i in range(40)])
    running = wait_for_batch(client, batch.id, until={"in_progress"})
    while client.batches.retrieve(batch.id).request_counts.completed < 2:
        time.sleep(0.02)
    cancelling = client.batches.cancel(running.id)
    assert cancelling.status == "cancelling" and cancelling.cancelling_at is not None
    done = wait_for_batch(client, batch.id)
    assert done.status == "cancelled" and done.cancelled_at is not None
    assert done.completed_at is None
    output, errors = results(client, done)
    assert len(output) >= 2
    assert errors and all(e["error"]["code"] == "batch_cancelled" for e in errors)
    assert all(e["response"] is None for e in errors)
    assert len(output) + len(errors) == 40
    assert fake.stats()["total"] == len(output)


def test_cancelling_a_cancelled_batch_answers_it_unchanged(
    server: Server, fake: ModelServer, tmp_path: Path
) -> None:
    """A second cancel is a 200 with the batch as it is."""
    fake.set_faults(latency_ms=200)
    client = server.client()
    batch = submit(client, tmp_path, [request_line(i) for i in range(10)])
    first = client.batches.cancel(batch.id)
    assert first.status == "cancelling"
    again = client.batches.cancel(batch.id)
    assert again.status in {"cancelling", "cancelled"}
    assert again.cancelling_at == first.cancelling_at
    done = wait_for_batch(client, batch.id)
    assert done.status == "cancelled"
    assert client.batches.cancel(batch.id).status == "cancelled"
    results(client, done)
    assert done.request_counts.total in (0, 10)


@pytest.mark.parametrize("status", ["completed", "failed"])
def test_cancelling_a_finished_batch_is_a_409_that_the_sdk_does_not_retry(
    server: Server, fake: ModelServer, tmp_path: Path, status: str
) -> None:
    """Cancel of a completed or failed batch: 409 with x-should-retry: false."""
    client = server.client()
    lines = [request_line(1)] if status == "completed" else [{"custom_id": "no-body"}]
    batch = wait_for_batch(client, submit(client, tmp_path, lines).id)
    assert batch.status == status
    response = httpx.post(f"{server.base_url}/batches/{batch.id}/cancel")
    assert response.status_code == 409
    assert response.headers["x-should-retry"] == "false"
    assert response.json()["error"]["message"] == f"Cannot cancel a batch with status '{status}'."
    retrying = openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=3)
    with pytest.raises(openai.ConflictError):
        retrying.batches.cancel(batch.id)
    retrying.close()


def test_a_batch_expires_with_finished_results_kept(
    server: Server, fake: ModelServer, tmp_path: Path
) -> None:
    """At the end of its window the batch is expired; unfinished lines are batch_expired."""
    fake.set_faults(rules=[{"fault": "hang", "custom_id": "^req-[5-9]$"}])
    client = server.client()
    batch = submit(client, tmp_path, [request_line(i) for i in range(10)], window="3s")
    done = wait_for_batch(client, batch.id, within=30)
    assert done.status == "expired"
    assert done.expired_at is not None and done.expired_at >= done.expires_at
    output, errors = results(client, done)
    assert sorted(o["custom_id"] for o in output) == [f"req-{i}" for i in range(5)]
    assert sorted(e["custom_id"] for e in errors) == [f"req-{i}" for i in range(5, 10)]
    assert all(e["error"]["code"] == "batch_expired" for e in errors)
    assert done.request_counts.completed == 5 and done.request_counts.failed == 5
    response = httpx.post(f"{server.base_url}/batches/{done.id}/cancel")
    assert response.status_code == 409
