"""Managed API keys (``batchd keys``), keys from a file, and per-project quotas, against a real
server and the openai SDK."""

from __future__ import annotations

import io
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import openai
import pytest

from tests.e2e.conftest import ModelServer, Server, ServerFactory, wait_for_batch
from tests.e2e.lines import request_line, submit, upload, write_jsonl

Keys = Callable[..., str]


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    """Run ``batchd keys ARGS… --data-dir DIR``; its stdout (exit 0 asserted)."""

    def run(*args: str, data_dir: Path = tmp_path / "data-0") -> str:
        done = subprocess.run(
            [sys.executable, "-m", "batchd", "keys", *args, "--data-dir", str(data_dir)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    return run


def refused(client: openai.OpenAI) -> bool:
    """Whether the server answers the client's key with 401 invalid_api_key."""
    answer = httpx.get(
        f"{client.base_url}batches", headers={"authorization": f"Bearer {client.api_key}"}
    )
    if answer.status_code == 401:
        assert answer.json()["error"]["code"] == "invalid_api_key"
        return True
    assert answer.status_code == 200, answer.text
    return False


def test_a_made_key_works_until_revoked(
    start_server: ServerFactory, keys: Keys, tmp_path: Path
) -> None:
    """A key made before the start names its project; revoked while the server runs, it is
    refused from the next request; neither the log nor ``keys ls`` ever shows it."""
    key = keys("create", "--project", "alpha", "--name", "ci").strip()
    other = keys("create", "--project", "beta").strip()
    server = start_server("--log-level", "debug")
    alpha, beta = server.client(key), server.client(other)
    batch = submit(alpha, tmp_path, [request_line(1)])
    assert wait_for_batch(alpha, batch.id).status == "completed"
    assert beta.batches.list().data == []
    assert refused(server.client("sk-batchd-wrong"))

    keys("revoke", key[:16])

    assert refused(alpha)
    assert beta.batches.list().data == []
    listed = keys("ls")
    assert "alpha" in listed and key[:16] in listed and key not in listed
    assert key not in server.log() and other not in server.log()


def test_a_server_started_without_keys_requires_them_once_one_is_made(
    server: Server, keys: Keys
) -> None:
    assert "auth_disabled" in server.log()
    assert not refused(server.client("anything"))

    key = keys("create", "--project", "alpha").strip()

    deadline = time.monotonic() + 10
    while not refused(server.client("anything")):
        assert time.monotonic() < deadline, "keys were not required after 10 s"
        time.sleep(0.1)
    assert server.client(key).batches.list().data == []


def test_a_stored_key_lets_serve_bind_a_network_address(
    start_server: ServerFactory, keys: Keys
) -> None:
    """Without --insecure-no-auth: the store holds a key, so the API is not open."""
    key = keys("create", "--project", "alpha").strip()
    server = start_server("--host", "0.0.0.0")
    assert refused(server.client("anything"))
    assert server.client(key).batches.list().data == []


def test_keys_from_a_file(start_server: ServerFactory, tmp_path: Path) -> None:
    path = tmp_path / "keys.txt"
    path.write_text("# the team's keys\n\nalpha:sk-file-a\n")
    server = start_server("--api-keys-file", str(path))
    assert server.client("sk-file-a").batches.list().data == []
    assert refused(server.client("sk-other"))


def test_a_bad_keys_file_is_refused_at_start_by_line(tmp_path: Path) -> None:
    path = tmp_path / "keys.txt"
    path.write_text("alpha:sk-file-a\n:sk-secret-b\n")
    serve = [sys.executable, "-m", "batchd", "serve", "--data-dir", str(tmp_path)]
    done = subprocess.run(
        [*serve, "--api-keys-file", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "line 2: not an API key" in done.stderr and "sk-secret-b" not in done.stderr


# -- quotas ----------------------------------------------------------------------------------


def create(client: openai.OpenAI, file_id: str) -> openai.types.Batch:
    return client.batches.create(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
    )


def test_active_batches_past_the_quota_are_a_429(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    """Per project: another project still creates; the SDKs are told not to retry."""
    server = start_server(
        "--no-worker",
        "--api-key",
        "alpha:sk-a",
        "--api-key",
        "beta:sk-b",
        extra_env={"BATCHD_MAX_ACTIVE_BATCHES": "1"},
    )
    alpha, beta = server.client("sk-a"), server.client("sk-b")
    path = write_jsonl(tmp_path / "in.jsonl", [request_line(1)])
    create(alpha, upload(alpha, path))  # stays validating: no worker
    with pytest.raises(openai.RateLimitError) as caught:
        create(alpha, upload(alpha, path))
    error = caught.value.body
    assert error["type"] == "rate_limit_error"  # type: ignore[index]
    assert error["code"] == "batch_limit_exceeded"  # type: ignore[index]
    assert "Limit: 1 batches" in error["message"]  # type: ignore[index]
    assert caught.value.response.headers["x-should-retry"] == "false"
    assert len(alpha.batches.list().data) == 1
    create(beta, upload(beta, path))


def test_enqueued_lines_past_the_quota_fail_validation(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    """As OpenAI fails a batch past its enqueued tokens: failed, with the limit's code."""
    server = start_server(extra_env={"BATCHD_MAX_ENQUEUED_LINES": "2"})
    client = server.client()
    batch = submit(client, tmp_path, [request_line(i) for i in range(3)])
    failed = wait_for_batch(client, batch.id)
    assert failed.status == "failed"
    assert failed.request_counts.total == 0
    [error] = failed.errors.data
    assert error.code == "request_limit_exceeded" and error.line is None
    assert "Limit: 2 enqueued requests" in error.message
    done = submit(client, tmp_path, [request_line(i) for i in range(2)])
    assert wait_for_batch(client, done.id).status == "completed"


def test_a_project_at_its_enqueued_lines_cannot_create_more(
    start_server: ServerFactory, fake: ModelServer, tmp_path: Path
) -> None:
    fake.set_faults(rules=[{"fault": "latency", "latency_ms": 4000}])
    server = start_server(extra_env={"BATCHD_MAX_ENQUEUED_LINES": "2"})
    client = server.client()
    running = submit(client, tmp_path, [request_line(i) for i in range(2)])
    wait_for_batch(client, running.id, until={"in_progress"})
    with pytest.raises(openai.RateLimitError) as caught:
        create(client, running.input_file_id)
    assert caught.value.body["code"] == "request_limit_exceeded"  # type: ignore[index]
    assert wait_for_batch(client, running.id).status == "completed"
    assert create(client, running.input_file_id).status == "validating"


def test_an_upload_past_the_storage_quota_is_refused_and_not_kept(
    start_server: ServerFactory,
) -> None:
    line = b'{"custom_id": "a"}\n'
    limit = 2 * len(line) + 1
    server = start_server(extra_env={"BATCHD_MAX_STORED_BYTES": str(limit)})
    client = server.client()
    first = client.files.create(file=("a.jsonl", io.BytesIO(line)), purpose="batch")
    client.files.create(file=("b.jsonl", io.BytesIO(line)), purpose="batch")
    with pytest.raises(openai.BadRequestError) as caught:
        client.files.create(file=("c.jsonl", io.BytesIO(line)), purpose="batch")
    error = caught.value.body
    assert error["code"] == "storage_limit_exceeded"  # type: ignore[index]
    assert error["param"] == "file"  # type: ignore[index]
    assert f"past the limit of {limit} bytes" in error["message"]  # type: ignore[index]
    assert len(client.files.list().data) == 2
    assert len(list((server.data_dir / "files" / "files").iterdir())) == 2

    client.files.delete(first.id)
    client.files.create(file=("c.jsonl", io.BytesIO(line)), purpose="batch")
    raw = httpx.post(
        f"{server.base_url}/files", files={"file": ("d", line)}, data={"purpose": "batch"}
    )
    assert raw.status_code == 400 and raw.json()["error"]["type"] == "invalid_request_error"
