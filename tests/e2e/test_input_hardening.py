"""Bad input at the doors, as an attacker would send it, on both engines: NUL bytes, ids too long
to exist, another project's cursor, a body too large, a file of the wrong purpose. Each answers a
clear 4xx in the OpenAI envelope, never a 500; a line with such a custom_id is an invalid line."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.e2e.conftest import ModelServer, Server, ServerFactory, wait_for_batch
from tests.e2e.lines import request_line, submit, upload, write_jsonl

KEYS = ("--api-key", "team-a:sk-a", "--api-key", "team-b:sk-b")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def server(request: pytest.FixtureRequest, start_server: ServerFactory) -> Server:
    if request.param == "sqlite":
        return start_server(*KEYS)
    return start_server(*KEYS, "--database-url", request.getfixturevalue("postgres_url"))


def call(server: Server, method: str, path: str, key: str = "sk-a", **kwargs: Any) -> Any:
    headers = {"Authorization": f"Bearer {key}", **kwargs.pop("headers", {})}
    return httpx.request(method, server.base_url + path, headers=headers, **kwargs)


def envelope(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/files/%00"),
        ("GET", "/files/file-%00abc/content"),
        ("DELETE", "/files/%00"),
        ("GET", "/batches/batch_%00"),
        ("POST", "/batches/batch_%00/cancel"),
        ("GET", "/files/" + "x" * 10_000),
    ],
)
def test_an_id_that_cannot_exist_is_not_found(server: Server, method: str, path: str) -> None:
    envelope(call(server, method, path), 404)
    assert "Traceback" not in server.log()


@pytest.mark.parametrize("query", ["after=%00", "after=" + "y" * 5_000, "purpose=%00"])
def test_a_cursor_or_filter_with_nul_is_no_server_error(server: Server, query: str) -> None:
    files = call(server, "GET", f"/files?{query}")
    batches = call(server, "GET", f"/batches?{query}")
    assert files.status_code in (200, 400) and batches.status_code in (200, 400)
    if files.status_code == 200:
        assert files.json()["data"] == []
    assert "Traceback" not in server.log()


def test_another_projects_id_as_a_cursor_reveals_nothing(server: Server, tmp_path: Path) -> None:
    """``after=`` another project's id answers like an unknown id: an empty page."""
    mine = server.client("sk-a")
    theirs = server.client("sk-b")
    path = write_jsonl(tmp_path / "in.jsonl", [request_line(0)])
    upload(mine, path)
    their_file = upload(theirs, path)
    assert [f.id for f in mine.files.list(after=their_file).data] == []
    their_batch = theirs.batches.create(
        input_file_id=their_file, endpoint="/v1/chat/completions", completion_window="24h"
    )
    assert mine.batches.list(after=their_batch.id).data == []


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("input_file_id", "file-\u0000x"),
        ("input_file_id", "file-" + "z" * 10_000),
        ("metadata", {"k\u0000": "v"}),
        ("metadata", {"k": "v\u0000"}),
    ],
)
def test_strings_the_store_cannot_hold_are_refused_at_create(
    server: Server, field: str, value: object
) -> None:
    body = {
        "input_file_id": "file-abc",
        "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
        field: value,
    }
    error = envelope(call(server, "POST", "/batches", json=body), 400)
    assert error["code"] == "invalid_value"
    assert "Traceback" not in server.log()


def test_a_filename_with_nul_is_refused(server: Server) -> None:
    """Written by hand: clients percent-encode a NUL in a filename, an attacker need not."""
    body = (
        b'--b\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="a\x00b.jsonl"\r\n'
        b"Content-Type: application/jsonl\r\n\r\n{}\n\r\n--b--\r\n"
    )
    headers = {"Content-Type": "multipart/form-data; boundary=b"}
    response = call(server, "POST", "/files", content=body, headers=headers)
    assert envelope(response, 400)["param"] == "file"


def test_a_json_body_past_the_limit_is_413_before_it_is_read(server: Server) -> None:
    """Declared too large: refused from its Content-Length; sent in chunks with none: refused as
    the bytes arrive."""
    big = b'{"input_file_id": "' + b"x" * (2 << 20) + b'"}'
    error = envelope(call(server, "POST", "/batches", content=big), 413)
    assert error["code"] == "request_too_large"

    def chunks() -> Any:
        for start in range(0, len(big), 64 * 1024):
            yield big[start : start + 64 * 1024]

    envelope(call(server, "POST", "/batches", content=chunks()), 413)


@pytest.mark.parametrize("purpose", ["user_data", "assistants", "fine-tune", "vision", "evals"])
def test_batch_input_must_have_purpose_batch(server: Server, tmp_path: Path, purpose: str) -> None:
    client = server.client("sk-a")
    path = write_jsonl(tmp_path / "in.jsonl", [request_line(0)])
    with path.open("rb") as handle:
        file = client.files.create(file=handle, purpose=purpose)  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError) as refused:
        client.batches.create(
            input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
    error = refused.value.body
    assert isinstance(error, dict) and error["param"] == "input_file_id"
    assert "purpose 'batch'" in error["message"]


def test_a_custom_id_the_store_cannot_keep_is_an_invalid_line(
    server: Server, tmp_path: Path
) -> None:
    """A NUL in a custom_id, or one past 512 characters, is reported by line: the batch fails
    validation at once instead of staying ``validating``."""
    client = server.client("sk-a")
    lines = [
        request_line(0),
        request_line(1, custom_id="bad\u0000id"),
        request_line(2, custom_id="c" * 513),
    ]
    batch = submit(client, tmp_path, lines)
    done = wait_for_batch(client, batch.id, within=30)
    assert done.status == "failed"
    assert done.errors is not None
    reported = {(e.line, e.param) for e in done.errors.data}
    assert reported == {(2, "custom_id"), (3, "custom_id")}
    assert "Traceback" not in server.log()


@pytest.mark.parametrize("damage", ["missing", "cut short"])
def test_content_lost_on_disk_is_a_clean_404_before_any_byte(
    server: Server, tmp_path: Path, damage: str
) -> None:
    """Not a 200 with a Content-Length and then a cut connection."""
    client = server.client("sk-a")
    file_id = upload(
        client, write_jsonl(tmp_path / "in.jsonl", [request_line(i) for i in range(9)])
    )
    blob = server.data_dir / "files" / "files" / file_id
    if damage == "missing":
        blob.unlink()
    else:
        blob.write_bytes(blob.read_bytes()[:10])
    error = envelope(call(server, "GET", f"/files/{file_id}/content"), 404)
    assert error["code"] == "file_content_unavailable"
    assert "file_content_unavailable" in server.log()


def test_a_file_deleted_while_its_batch_runs_loses_its_bytes_when_the_batch_ends(
    server: Server, fake: ModelServer, tmp_path: Path
) -> None:
    """The delete answers at once and leaves the bytes for the batch; once the batch has ended
    they go too, and nothing else's do."""
    fake.set_faults(latency_ms=300)
    client = server.client("sk-a")
    lines = write_jsonl(tmp_path / "in.jsonl", [request_line(i) for i in range(5)])
    kept = upload(client, lines)
    batch = submit(client, tmp_path, [request_line(i) for i in range(5)])
    wait_for_batch(client, batch.id, until={"in_progress"})
    blobs = server.data_dir / "files" / "files"
    assert client.files.delete(batch.input_file_id).deleted
    assert (blobs / batch.input_file_id).exists()  # the batch still reads it
    assert wait_for_batch(client, batch.id, within=30).status == "completed"
    deadline = time.monotonic() + 10  # the worker releases it just after the status changes
    while (blobs / batch.input_file_id).exists():
        assert time.monotonic() < deadline, "the deleted file's bytes are still there"
        time.sleep(0.05)
    assert (blobs / kept).exists()
