"""Wire details: errors, ids, headers, authentication and projects."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import httpx
import openai
import pytest

from tests.e2e.conftest import Server, ServerFactory, wait_for_batch
from tests.e2e.lines import request_line, submit

ERROR_KEYS = {"message", "type", "param", "code"}


def test_every_response_has_a_request_id(server: Server) -> None:
    """x-request-id is on successes, errors and unknown routes alike."""
    for response in (
        httpx.get(f"{server.base_url}/batches"),
        httpx.get(f"{server.base_url}/batches/batch_nope"),
        httpx.get(f"{server.base_url}/nothing-here"),
        httpx.get(server.base_url.removesuffix("/v1") + "/healthz"),
    ):
        assert response.headers["x-request-id"].startswith("req_")


def test_errors_use_the_openai_envelope(server: Server) -> None:
    """404, 405 and bad JSON all answer {"error": {message, type, param, code}}."""
    cases = [
        (httpx.get(f"{server.base_url}/batches/batch_nope"), 404),
        (httpx.get(f"{server.base_url}/nothing-here"), 404),
        (httpx.put(f"{server.base_url}/batches"), 405),
        (httpx.post(f"{server.base_url}/batches", content=b"{not json"), 400),
        (httpx.post(f"{server.base_url}/batches", content=b"[1, 2]"), 400),
        (httpx.get(f"{server.base_url}/batches", params={"limit": 0}), 400),
        (httpx.get(f"{server.base_url}/files", params={"order": "sideways"}), 400),
    ]
    for response, status in cases:
        assert response.status_code == status, response.text
        assert set(response.json()["error"]) == ERROR_KEYS
        assert response.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("limit", ["1_0", " 5", "+5", "\u0665", "5.0", "1" * 5000])
def test_a_limit_is_a_decimal_integer(server: Server, limit: str) -> None:
    """What int() would also read (underscores, spaces, a sign, other scripts' digits) is a 400,
    as OpenAPI's integer says; found by fuzzing."""
    for path in ("/files", "/batches"):
        response = httpx.get(f"{server.base_url}{path}", params={"limit": limit})
        assert response.status_code == 400, response.text
        assert response.json()["error"]["param"] == "limit"


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        ("/files", "GET, HEAD, POST"),
        ("/files/file-x", "DELETE, GET, HEAD"),
        ("/batches", "GET, HEAD, POST"),
        ("/batches/batch_x/cancel", "POST"),
    ],
)
def test_a_405_names_every_method_the_url_answers(server: Server, path: str, allowed: str) -> None:
    """Allow lists the methods of every route of the URL, not only those of the first one."""
    response = httpx.put(f"{server.base_url}{path}")
    assert response.status_code == 405
    assert response.headers["allow"] == allowed


def test_unknown_batch_is_a_404_with_the_openai_message(client: openai.OpenAI) -> None:
    """Retrieving an unknown batch names it in the message."""
    with pytest.raises(openai.NotFoundError) as caught:
        client.batches.retrieve("batch_missing")
    assert caught.value.body["message"] == "No batch found with id 'batch_missing'."  # type: ignore[index]


def test_keys_are_required_when_configured(start_server: ServerFactory) -> None:
    """With --api-key set, a wrong or missing key is a 401 authentication_error."""
    server = start_server("--api-key", "sk-right")
    with pytest.raises(openai.AuthenticationError) as caught:
        server.client("sk-wrong").batches.list()
    assert caught.value.body["type"] == "authentication_error"  # type: ignore[index]
    assert httpx.get(f"{server.base_url}/batches").status_code == 401
    assert server.client("sk-right").batches.list().data == []


def test_projects_never_see_each_others_objects(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    """A key of one project gets 404 for another project's files and batches."""
    server = start_server("--api-key", "alpha:sk-a", "--api-key", "beta:sk-b")
    alpha, beta = server.client("sk-a"), server.client("sk-b")
    batch = submit(alpha, tmp_path, [request_line(1)])
    wait_for_batch(alpha, batch.id)
    with pytest.raises(openai.NotFoundError):
        beta.batches.retrieve(batch.id)
    with pytest.raises(openai.NotFoundError):
        beta.files.retrieve(batch.input_file_id)
    with pytest.raises(openai.NotFoundError):
        beta.files.content(batch.input_file_id)
    with pytest.raises(openai.NotFoundError):
        beta.batches.cancel(batch.id)
    with pytest.raises(openai.NotFoundError):
        beta.files.delete(batch.input_file_id)
    assert beta.batches.list().data == [] and beta.files.list().data == []
    assert [b.id for b in alpha.batches.list()] == [batch.id]


def test_a_batch_naming_another_projects_file_fails_validation(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    """An input file of another project is 'not found' for the batch."""
    server = start_server("--api-key", "alpha:sk-a", "--api-key", "beta:sk-b")
    alpha, beta = server.client("sk-a"), server.client("sk-b")
    file_id = alpha.files.create(
        file=("a.jsonl", io.BytesIO(b'{"custom_id": "a"}\n')), purpose="batch"
    ).id
    batch = beta.batches.create(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    failed = wait_for_batch(beta, batch.id)
    assert failed.status == "failed"
    assert failed.errors.data[0].param == "file_id"


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (["--host", "0.0.0.0"], "--insecure-no-auth"),
        (["--api-key", ""], "not an API key"),
        (["--api-key", "a:sk-1", "--api-key", "b:sk-1"], "two projects"),
    ],
)
def test_serve_refuses_keys_that_cannot_work_and_an_open_api_on_the_network(
    tmp_path: Path, flags: list[str], said: str
) -> None:
    """Refused at start, with what to do, exit 2: no --api-key on a non-loopback --host, an
    empty key, one key for two projects."""
    done = subprocess.run(
        [sys.executable, "-m", "batchd", "serve", "--data-dir", str(tmp_path), *flags],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert said in done.stderr and "Traceback" not in done.stderr
