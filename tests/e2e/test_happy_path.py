"""The whole workflow through the official SDK, on every endpoint."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types import (
    Batch,
    Completion,
    CreateEmbeddingResponse,
    ImagesResponse,
    ModerationCreateResponse,
)
from openai.types.chat import ChatCompletion
from openai.types.responses import Response

from tests.e2e.conftest import ModelServer, Server, ServerFactory, wait_for_batch
from tests.e2e.lines import request_line, results, submit

RESPONSE_TYPES: dict[str, Any] = {
    "/v1/chat/completions": ChatCompletion,
    "/v1/completions": Completion,
    "/v1/embeddings": CreateEmbeddingResponse,
    "/v1/responses": Response,
    "/v1/moderations": ModerationCreateResponse,
    "/v1/images/generations": ImagesResponse,
    "/v1/images/edits": ImagesResponse,
}
BATCH_FIELDS = set(Batch.model_fields) - {"output_expires_after"}


@pytest.mark.parametrize("endpoint", list(RESPONSE_TYPES))
def test_a_batch_runs_every_line_and_returns_sdk_shaped_results(
    endpoint: str, server: Server, fake: ModelServer, tmp_path: Path
) -> None:
    """Every line of a batch is answered once, and each answer parses as the SDK's type."""
    client = server.client()
    lines = [request_line(i, endpoint, model="embed-test") for i in range(25)]
    created = submit(client, tmp_path, lines, endpoint=endpoint)
    assert created.status == "validating"
    batch = wait_for_batch(client, created.id)
    assert batch.status == "completed"
    assert batch.request_counts.total == 25 and batch.request_counts.completed == 25
    assert batch.error_file_id is None
    assert batch.model == "embed-test"
    output, errors = results(client, batch)
    assert errors == []
    assert sorted(line["custom_id"] for line in output) == sorted(f"req-{i}" for i in range(25))
    for line in output:
        RESPONSE_TYPES[endpoint].model_validate(line["response"]["body"])
    assert fake.stats()["total"] == 25


def test_an_images_batch_sums_the_images_usage(
    server: Server, fake: ModelServer, tmp_path: Path
) -> None:
    """An images batch's usage adds up the input and output tokens of every image answer."""
    client = server.client()
    lines = [request_line(i, "/v1/images/generations") for i in range(4)]
    batch = wait_for_batch(
        client, submit(client, tmp_path, lines, endpoint="/v1/images/generations").id
    )
    output, _ = results(client, batch)
    bodies = [line["response"]["body"]["usage"] for line in output]
    assert batch.usage.output_tokens == sum(u["output_tokens"] for u in bodies) > 0
    assert batch.usage.total_tokens == sum(u["total_tokens"] for u in bodies)


def test_the_batch_object_has_every_field_and_timestamps_in_order(
    server: Server, fake: ModelServer, tmp_path: Path
) -> None:
    """The raw batch JSON has every SDK field, and the lifecycle timestamps are all set."""
    client = server.client()
    created = submit(client, tmp_path, [request_line(i) for i in range(3)])
    wait_for_batch(client, created.id)
    raw = httpx.get(f"{server.base_url}/batches/{created.id}").json()
    assert set(raw) >= BATCH_FIELDS
    batch = Batch.model_validate(raw)
    assert batch.created_at <= batch.in_progress_at <= batch.finalizing_at <= batch.completed_at
    assert batch.expires_at == batch.created_at + 86400
    assert batch.usage is not None and batch.usage.total_tokens > 0
    assert batch.usage.total_tokens == batch.usage.input_tokens + batch.usage.output_tokens
    assert raw["failed_at"] is None and raw["errors"] is None


def test_usage_is_the_sum_of_the_responses_usage(
    server: Server, fake: ModelServer, tmp_path: Path
) -> None:
    """Batch usage adds up the usage of every successful response."""
    client = server.client()
    batch = wait_for_batch(
        client, submit(client, tmp_path, [request_line(i) for i in range(10)]).id
    )
    output, _ = results(client, batch)
    bodies = [line["response"]["body"]["usage"] for line in output]
    assert batch.usage.input_tokens == sum(u["prompt_tokens"] for u in bodies)
    assert batch.usage.output_tokens == sum(u["completion_tokens"] for u in bodies)


def test_output_files_are_listed_with_purpose_batch_output(
    server: Server, fake: ModelServer, tmp_path: Path
) -> None:
    """Output files are File objects with purpose batch_output and an expiry."""
    client = server.client()
    batch = wait_for_batch(client, submit(client, tmp_path, [request_line(1)]).id)
    output = client.files.retrieve(batch.output_file_id)
    assert output.purpose == "batch_output"
    assert output.expires_at is not None and output.expires_at > output.created_at
    listed = client.files.list(purpose="batch_output")
    assert [f.id for f in listed.data] == [batch.output_file_id]


def test_many_batches_at_once_all_complete(
    server: Server, fake: ModelServer, tmp_path: Path
) -> None:
    """Batches created together share the upstream and all finish."""
    client = server.client()
    created = []
    for n in range(6):
        folder = tmp_path / str(n)
        folder.mkdir()
        created.append(submit(client, folder, [request_line(i) for i in range(40)]))
    for batch in created:
        done = wait_for_batch(client, batch.id)
        assert done.status == "completed" and done.request_counts.completed == 40
    assert fake.stats()["total"] == 240


def test_the_async_client_works_too(server: Server, fake: ModelServer, tmp_path: Path) -> None:
    """The async SDK drives the same workflow."""
    import asyncio

    from tests.e2e.lines import write_jsonl

    path = write_jsonl(tmp_path / "in.jsonl", [request_line(i) for i in range(5)])

    async def run() -> str:
        async with openai.AsyncOpenAI(base_url=server.base_url, api_key="k") as client:
            with path.open("rb") as upload:
                file = await client.files.create(file=upload, purpose="batch")
            batch = await client.batches.create(
                input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
            )
            while batch.status not in {"completed", "failed"}:
                await asyncio.sleep(0.05)
                batch = await client.batches.retrieve(batch.id)
            return batch.status

    assert asyncio.run(run()) == "completed"


def test_a_finished_batch_leaves_no_lines_in_the_database(
    start_server: ServerFactory, fake: ModelServer, tmp_path: Path
) -> None:
    """The output and error files hold every result: the store keeps none of a finished batch's
    lines, so the database does not grow with every line ever run."""
    data = tmp_path / "data"
    client = start_server(data_dir=data).client()
    (tmp_path / "input").mkdir()
    batch = submit(client, tmp_path / "input", [request_line(i) for i in range(50)])
    done = wait_for_batch(client, batch.id)
    assert done.status == "completed"
    deadline = time.monotonic() + 10
    while _rows_of(data / "batchd.db", batch.id) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _rows_of(data / "batchd.db", batch.id) == 0
    output, errors = results(client, done)
    assert len(output) == 50 and errors == []


def _rows_of(database: Path, batch_id: str) -> int:
    with sqlite3.connect(database) as conn:
        return sum(
            conn.execute(
                f"SELECT count(*) FROM {table} WHERE batch_id = ?", (batch_id,)
            ).fetchone()[0]
            for table in ("requests", "results", "spans", "retries")
        )
