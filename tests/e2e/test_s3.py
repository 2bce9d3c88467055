"""batchd on PostgreSQL and an S3 bucket: nothing on local disk, and batches still run, cancel,
expire and survive kills as they do on one machine's disk."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from batchd.blobstore import open_blobstore
from tests.e2e.conftest import ModelServer, ServerFactory, wait_for_batch
from tests.e2e.lines import request_line, results, submit
from tests.e2e.test_durability import killed_four_times_finishes_once

pytestmark = [pytest.mark.postgres, pytest.mark.s3]


@pytest.fixture
def flags(postgres_url: str, s3_url: str) -> list[str]:
    return ["--database-url", postgres_url, "--blob-url", s3_url]


def _keys(s3_url: str) -> set[str]:
    async def listed() -> set[str]:
        return {blob.key async for blob in open_blobstore(s3_url).list()}

    return asyncio.run(listed())


def test_a_batch_runs_with_its_bytes_in_the_bucket(
    start_server: ServerFactory, fake: ModelServer, tmp_path: Path, flags: list[str], s3_url: str
) -> None:
    """Uploads, result parts and output files are objects: the data folder holds none of them,
    and once the batch ends its parts are gone and its input and output remain."""
    server = start_server(*flags)
    client = server.client()
    batch = submit(client, tmp_path, [request_line(i) for i in range(600)])  # past the kept lines
    done = wait_for_batch(client, batch.id)
    assert done.status == "completed"
    output, errors = results(client, done)
    assert len(output) == 600 and errors == []
    assert not (server.data_dir / "files").exists()
    assert _keys(s3_url) == {f"files/{batch.input_file_id}", f"batches/{batch.id}/output.jsonl"}
    client.files.delete(done.output_file_id)
    assert _keys(s3_url) == {f"files/{batch.input_file_id}"}


def test_cancel_keeps_finished_results(
    start_server: ServerFactory, fake: ModelServer, tmp_path: Path, flags: list[str]
) -> None:
    server = start_server("--max-concurrency", "2", *flags)
    fake.set_faults(latency_ms=100)
    client = server.client()
    batch = submit(client, tmp_path, [request_line(i) for i in range(40)])
    while client.batches.retrieve(batch.id).request_counts.completed < 2:
        time.sleep(0.02)
    assert client.batches.cancel(batch.id).status == "cancelling"
    done = wait_for_batch(client, batch.id)
    assert done.status == "cancelled"
    output, errors = results(client, done)
    assert len(output) >= 2 and len(output) + len(errors) == 40
    assert {e["error"]["code"] for e in errors} == {"batch_cancelled"}


def test_a_batch_expires_with_finished_results_kept(
    start_server: ServerFactory, fake: ModelServer, tmp_path: Path, flags: list[str]
) -> None:
    fake.set_faults(rules=[{"fault": "hang", "custom_id": "^req-[5-9]$"}])
    client = start_server(*flags).client()
    batch = submit(client, tmp_path, [request_line(i) for i in range(10)], window="3s")
    done = wait_for_batch(client, batch.id, within=30)
    assert done.status == "expired"
    output, errors = results(client, done)
    assert sorted(o["custom_id"] for o in output) == [f"req-{i}" for i in range(5)]
    assert {e["error"]["code"] for e in errors} == {"batch_expired"}


def test_kill_9_at_random_moments_loses_nothing(
    start_server: ServerFactory, fake: ModelServer, tmp_path: Path, flags: list[str]
) -> None:
    """Killed four times mid-batch, batchd finishes every line exactly once from what the store
    and the bucket kept; only requests in flight at a kill are sent again."""
    killed_four_times_finishes_once(start_server, fake, tmp_path, flags)
