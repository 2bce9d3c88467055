"""Creating, listing and retrieving batches: the synchronous checks and paging."""

from __future__ import annotations

import io
from typing import Any

import httpx
import openai
import pytest

from tests.e2e.conftest import Server, wait_for_batch

JSONL = b'{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "gpt-test", "messages": []}}\n'  # noqa: E501


@pytest.fixture
def file_id(client: openai.OpenAI) -> str:
    return client.files.create(file=("a.jsonl", io.BytesIO(JSONL)), purpose="batch").id


def _create(server: Server, **params: Any) -> httpx.Response:
    return httpx.post(f"{server.base_url}/batches", json=params)


@pytest.mark.parametrize(
    ("params", "code", "param"),
    [
        ({"endpoint": "/v1/videos"}, "invalid_value", "endpoint"),
        ({"endpoint": "/v1/nope"}, "invalid_value", "endpoint"),
        ({"completion_window": "12h"}, "invalid_value", "completion_window"),
        ({"input_file_id": None}, "missing_required_parameter", "input_file_id"),
        ({"endpoint": None}, "missing_required_parameter", "endpoint"),
        ({"completion_window": None}, "missing_required_parameter", "completion_window"),
        ({"input_file_id": 7}, "invalid_type", "input_file_id"),
        ({"metadata": {"k": 1}}, "invalid_type", "metadata.k"),
        ({"metadata": "text"}, "invalid_type", "metadata"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "invalid_value", "metadata"),
        ({"metadata": {"k" * 65: "v"}}, "invalid_value", "metadata." + "k" * 65),
        ({"metadata": {"k": "v" * 513}}, "invalid_value", "metadata.k"),
        (
            {"output_expires_after": {"anchor": "created_at", "seconds": 5}},
            "invalid_value",
            "output_expires_after.seconds",
        ),
        (
            {"output_expires_after": {"anchor": "created_at", "seconds": 3600.5}},
            "invalid_type",
            "output_expires_after.seconds",
        ),
        (
            {"output_expires_after": {"anchor": "later", "seconds": 3600}},
            "invalid_value",
            "output_expires_after",
        ),
    ],
)
def test_bad_parameters_are_a_400_and_create_nothing(
    server: Server, file_id: str, params: dict[str, Any], code: str, param: str
) -> None:
    """Each bad parameter answers 400 with its code and param, and no batch exists after."""
    body = {
        "input_file_id": file_id,
        "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
    }
    body.update(params)
    body = {k: v for k, v in body.items() if v is not None}
    response = _create(server, **body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"]) == (code, param)
    assert error["type"] == "invalid_request_error"
    assert httpx.get(f"{server.base_url}/batches").json()["data"] == []


def test_seconds_written_as_a_whole_float_are_an_integer(server: Server, file_id: str) -> None:
    """``7200.0`` is the integer 7200 to JSON (and to JSON Schema, as /openapi.json says)."""
    response = _create(
        server,
        input_file_id=file_id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        output_expires_after={"anchor": "created_at", "seconds": 7200.0},
    )
    assert response.status_code == 200, response.text


def test_an_unknown_endpoint_lists_the_supported_ones(server: Server, file_id: str) -> None:
    """The message for a bad endpoint names every supported endpoint."""
    response = _create(server, input_file_id=file_id, endpoint="/v1/x", completion_window="24h")
    message = response.json()["error"]["message"]
    for endpoint in (
        "/v1/chat/completions",
        "/v1/embeddings",
        "/v1/responses",
        "/v1/completions",
        "/v1/moderations",
        "/v1/images/generations",
        "/v1/images/edits",
    ):
        assert endpoint in message


def test_metadata_and_configured_windows_are_kept(client: openai.OpenAI, file_id: str) -> None:
    """Metadata round-trips and any configured completion window is accepted."""
    batch = client.batches.create(
        input_file_id=file_id,
        endpoint="/v1/chat/completions",
        completion_window="3s",  # type: ignore[arg-type]
        metadata={"team": "evals", "run": "7"},
    )
    assert batch.metadata == {"team": "evals", "run": "7"}
    assert batch.expires_at == batch.created_at + 3
    assert batch.id.startswith("batch_")
    assert client.batches.retrieve(batch.id).metadata == {"team": "evals", "run": "7"}


def test_list_is_newest_first_with_cursor_paging(
    server: Server, client: openai.OpenAI, file_id: str
) -> None:
    """Batches list newest first; `after` pages; has_more is exact."""
    ids = [
        client.batches.create(
            input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
        ).id
        for _ in range(5)
    ]
    first = client.batches.list(limit=2)
    assert [b.id for b in first.data] == ids[::-1][:2] and first.has_more is True
    assert [b.id for b in client.batches.list(limit=2)] == ids[::-1]
    last = httpx.get(f"{server.base_url}/batches", params={"limit": 2, "after": ids[1]}).json()
    assert [b["id"] for b in last["data"]] == [ids[0]] and last["has_more"] is False
    exact = httpx.get(f"{server.base_url}/batches", params={"limit": 5}).json()
    assert (
        exact["has_more"] is False and exact["first_id"] == ids[-1] and exact["last_id"] == ids[0]
    )
    for batch_id in ids:
        wait_for_batch(client, batch_id)
