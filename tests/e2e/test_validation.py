"""Bad input files fail their batch with every bad line reported (SPEC §4)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.e2e.conftest import ServerFactory, wait_for_batch
from tests.e2e.lines import request_line, submit


def _fail(client: openai.OpenAI, tmp_path: Path, lines: list[Any], **kw: Any) -> Any:
    batch = wait_for_batch(client, submit(client, tmp_path, lines, **kw).id)
    assert batch.status == "failed"
    assert batch.failed_at is not None and batch.in_progress_at is None
    assert batch.request_counts.total == 0 and batch.output_file_id is None
    assert batch.error_file_id is None
    return [(e.code, e.param, e.line) for e in batch.errors.data]


def test_every_bad_line_is_reported_with_its_line_number(
    client: openai.OpenAI, tmp_path: Path
) -> None:
    """One failing batch lists each problem with its 1-based line and param."""
    bad_stream = request_line(7)
    bad_stream["body"]["stream"] = True
    no_messages = request_line(8)
    del no_messages["body"]["messages"]
    lines = [
        request_line(1),
        "{this is not json",
        {"method": "POST", "url": "/v1/chat/completions", "body": {}},
        request_line(4, url="/v1/embeddings"),
        request_line(5, method="GET"),
        request_line(1),  # duplicate custom_id of line 1
        bad_stream,
        no_messages,
        request_line(9, model="other-model"),
    ]
    errors = _fail(client, tmp_path, lines)
    assert ("invalid_json_line", None, 2) in errors
    assert ("missing_required_parameter", "custom_id", 3) in errors
    assert ("invalid_url", "url", 4) in errors
    assert ("invalid_request", "method", 5) in errors
    assert ("duplicate_custom_id", "custom_id", 6) in errors
    assert ("streaming_unsupported", "body.stream", 7) in errors
    assert ("invalid_request", "body.messages", 8) in errors
    assert ("mismatched_model", "body.model", 9) in errors
    assert all(line != 1 for _, _, line in errors)


@pytest.mark.parametrize("missing", ["custom_id", "method", "url", "body"])
def test_each_missing_envelope_field_is_named(
    client: openai.OpenAI, tmp_path: Path, missing: str
) -> None:
    """A line without custom_id, method, url or body names the missing field."""
    line = request_line(1)
    del line[missing]
    assert ("missing_required_parameter", missing, 1) in _fail(client, tmp_path, [line])


@pytest.mark.parametrize(
    ("endpoint", "field"),
    [
        ("/v1/completions", "prompt"),
        ("/v1/embeddings", "input"),
        ("/v1/responses", "input"),
        ("/v1/moderations", "input"),
        ("/v1/images/generations", "prompt"),
        ("/v1/images/edits", "prompt"),
        ("/v1/chat/completions", "model"),
    ],
)
def test_each_endpoint_requires_its_body_fields(
    client: openai.OpenAI, tmp_path: Path, endpoint: str, field: str
) -> None:
    """A body without what its endpoint needs is invalid_request on body.<field>."""
    line = request_line(1, endpoint)
    del line["body"][field]
    errors = _fail(client, tmp_path, [line], endpoint=endpoint)
    assert ("invalid_request", f"body.{field}", 1) in errors


def test_a_model_no_upstream_serves_is_model_not_found(
    client: openai.OpenAI, tmp_path: Path
) -> None:
    """The upstream declares its models; any other model is model_not_found."""
    errors = _fail(client, tmp_path, [request_line(i, model="no-such-model") for i in (1, 2)])
    assert errors == [("model_not_found", "body.model", 1), ("model_not_found", "body.model", 2)]


def test_an_empty_file_fails(client: openai.OpenAI) -> None:
    """A batch file with no requests fails validation."""
    file_id = client.files.create(file=("e.jsonl", io.BytesIO(b"{}\n")), purpose="batch").id
    file_id_blank = client.files.create(
        file=("b.jsonl", io.BytesIO(b'{"a": 1}\n')), purpose="batch"
    ).id
    for fid in (file_id, file_id_blank):
        batch = client.batches.create(
            input_file_id=fid, endpoint="/v1/chat/completions", completion_window="24h"
        )
        assert wait_for_batch(client, batch.id).status == "failed"


def test_a_missing_input_file_fails_the_batch(client: openai.OpenAI) -> None:
    """An input_file_id that does not exist fails the batch with param file_id."""
    batch = client.batches.create(
        input_file_id="file-doesnotexist",
        endpoint="/v1/chat/completions",
        completion_window="24h",
    )
    failed = wait_for_batch(client, batch.id)
    assert failed.status == "failed"
    assert [(e.code, e.param) for e in failed.errors.data] == [("invalid_request", "file_id")]
    assert "file-doesnotexist" in failed.errors.data[0].message


def test_too_many_requests_fails(start_server: ServerFactory, tmp_path: Path) -> None:
    """A file over the configured request limit fails, naming the first line over it."""
    server = start_server(extra_env={"BATCHD_MAX_REQUESTS_PER_BATCH": "3"})
    client = server.client()
    errors = _fail(client, tmp_path, [request_line(i) for i in range(5)])
    assert errors == [("invalid_request", None, 4)]


def test_too_many_embedding_inputs_fails(start_server: ServerFactory, tmp_path: Path) -> None:
    """Embedding inputs are counted across lines against the configured limit."""
    server = start_server(extra_env={"BATCHD_MAX_EMBEDDING_INPUTS": "5"})
    client = server.client()
    lines = [request_line(i, "/v1/embeddings", model="embed-test") for i in range(3)]
    lines[0]["body"]["input"] = ["a", "b", "c", "d"]
    errors = _fail(client, tmp_path, lines, endpoint="/v1/embeddings")
    assert [code for code, _, _ in errors] == ["invalid_request"]


def test_a_capped_error_list_says_how_many_there_were(
    client: openai.OpenAI, tmp_path: Path
) -> None:
    """2,000 bad lines: the first 1,000 are listed, and ``errors.total`` (batchd's) says 2,000."""
    lines = [request_line(i, method="GET") for i in range(2000)]
    batch = wait_for_batch(client, submit(client, tmp_path, lines).id)

    assert batch.status == "failed"
    assert len(batch.errors.data) == 1000
    assert batch.errors.model_extra == {"total": 2000}
