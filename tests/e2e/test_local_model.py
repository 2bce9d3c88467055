"""A whole batch through the embedded model (``--upstream local``), driven by the openai SDK."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import openai
import pytest

from tests.e2e.conftest import Server, ServerFactory, wait_for_batch
from tests.e2e.lines import write_jsonl

pytestmark = pytest.mark.usefixtures("local_extra")

EXAMPLE = Path(__file__).parents[2] / "examples" / "embeddings.jsonl"
MODEL = "all-MiniLM-L6-v2"


@pytest.fixture
def local_server(start_server: ServerFactory) -> Server:
    # Loading torch and the model takes seconds, and longer on a busy machine.
    return start_server("--upstream", "local", upstream=False, healthy_within=180)


def run_batch(client: openai.OpenAI, path: Path) -> openai.types.Batch:
    with path.open("rb") as upload:
        uploaded = client.files.create(file=upload, purpose="batch")
    batch = client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/embeddings", completion_window="24h"
    )
    done: openai.types.Batch = wait_for_batch(client, batch.id, within=120)
    return done


def answers(client: openai.OpenAI, batch: openai.types.Batch) -> dict[str, dict[str, object]]:
    assert batch.output_file_id is not None
    lines = client.files.content(batch.output_file_id).text.splitlines()
    return {row["custom_id"]: row["response"] for row in map(json.loads, lines)}


def test_the_example_batch_completes_with_meaningful_embeddings(local_server: Server) -> None:
    client = local_server.client()
    batch = run_batch(client, EXAMPLE)

    assert batch.status == "completed"
    total = len(EXAMPLE.read_text().splitlines())
    assert batch.request_counts is not None
    assert (batch.request_counts.completed, batch.request_counts.failed) == (total, 0)
    by_id = answers(client, batch)
    vectors = {}
    for custom_id, response in by_id.items():
        assert response["status_code"] == 200
        body = response["body"]
        assert isinstance(body, dict)
        assert body["model"] == MODEL
        assert body["usage"]["prompt_tokens"] > 0
        vectors[custom_id] = np.array(body["data"][0]["embedding"])
    assert all(v.shape == (384,) for v in vectors.values())
    # sentence-0 and -1 are about cats, -4 about the stock market.
    cat, kitten, stocks = (vectors[f"sentence-{i}"] for i in (0, 1, 4))
    assert cat @ kitten > cat @ stocks + 0.3


def test_lists_of_inputs_and_base64_vectors_come_back_per_line(
    local_server: Server, tmp_path: Path
) -> None:
    client = local_server.client()
    lines = [
        {
            "custom_id": "list",
            "method": "POST",
            "url": "/v1/embeddings",
            "body": {"model": MODEL, "input": ["first text", "second text", "third"]},
        },
        {
            "custom_id": "base64",
            "method": "POST",
            "url": "/v1/embeddings",
            "body": {"model": MODEL, "input": "first text", "encoding_format": "base64"},
        },
        {
            "custom_id": "tokens",
            "method": "POST",
            "url": "/v1/embeddings",
            "body": {"model": MODEL, "input": [101, 2034, 102]},
        },
    ]
    batch = run_batch(client, write_jsonl(tmp_path / "in.jsonl", lines))

    by_id = answers(client, batch)
    listed = by_id["list"]["body"]
    assert isinstance(listed, dict)
    assert [d["index"] for d in listed["data"]] == [0, 1, 2]
    encoded = by_id["base64"]["body"]
    assert isinstance(encoded, dict)
    decoded = np.frombuffer(base64.b64decode(encoded["data"][0]["embedding"]), dtype="<f4")
    assert np.allclose(decoded, listed["data"][0]["embedding"], atol=1e-6)
    # Token arrays belong to another tokenizer: an error line, not a wrong embedding.
    assert batch.request_counts is not None
    assert batch.request_counts.failed == 1
    assert batch.error_file_id is not None
    error = json.loads(client.files.content(batch.error_file_id).text)
    assert error["custom_id"] == "tokens"
    assert error["response"]["status_code"] == 400


def test_a_model_the_local_upstream_does_not_serve_fails_validation(
    local_server: Server, tmp_path: Path
) -> None:
    client = local_server.client()
    line = {
        "custom_id": "x",
        "method": "POST",
        "url": "/v1/embeddings",
        "body": {"model": "text-embedding-3-small", "input": "hello"},
    }
    batch = run_batch(client, write_jsonl(tmp_path / "in.jsonl", [line]))

    assert batch.status == "failed"
    assert batch.errors is not None
    assert [e.code for e in batch.errors.data or []] == ["model_not_found"]


def test_the_readme_example_script_prints_nearest_neighbours(local_server: Server) -> None:
    script = EXAMPLE.parent / "embeddings_batch.py"
    run = subprocess.run(
        [sys.executable, str(script), "--base-url", local_server.base_url],
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    )

    assert "completed" in run.stdout
    assert "'Python is a popular programming language.'" in run.stdout
    python_line = next(x for x in run.stdout.splitlines() if x.startswith("'Python is"))
    assert "Many developers write code in Python." in python_line


def test_a_model_path_that_is_not_a_model_stops_the_server_with_a_clear_message(
    tmp_path: Path,
) -> None:
    serve = [sys.executable, "-m", "batchd", "serve", "--data-dir", str(tmp_path / "data")]
    run = subprocess.run(
        [*serve, "--port", "1", "--upstream", f"local:{tmp_path}"],
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert run.returncode != 0
    assert "is not a sentence-transformers model directory" in run.stderr
    assert "Traceback" not in run.stderr
