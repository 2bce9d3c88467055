"""Uploads stream straight into the blob store: the size limit is counted as the bytes arrive,
with or without a Content-Length, nothing is spooled to the temporary folder, and the purpose
may come after the file (as the Node SDK sends it)."""

from __future__ import annotations

import http.client
import select
import socket
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
import pytest

from tests.e2e.conftest import Server, ServerFactory, wait_for_batch
from tests.e2e.lines import request_line
from tests.support.temp_disk import temp_bytes

MAX_UPLOAD = 1_000_000
MAX_BATCH_FILE = 200_000
BOUNDARY = "streaming-test-boundary"
CHUNK = 64 * 1024


@pytest.fixture
def temp_dir(tmp_path: Path) -> Path:
    path = tmp_path / "server-tmp"
    path.mkdir()
    return path


@pytest.fixture
def server(start_server: ServerFactory, temp_dir: Path) -> Server:
    return start_server(
        extra_env={
            "TMPDIR": str(temp_dir),
            "BATCHD_MAX_UPLOAD_BYTES": str(MAX_UPLOAD),
            "BATCHD_MAX_BATCH_FILE_BYTES": str(MAX_BATCH_FILE),
        }
    )


def field(name: str, value: str) -> bytes:
    return (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
    )


def file_head(filename: str = "in.jsonl") -> bytes:
    return (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()


def multipart(
    content: Iterable[bytes], *, before: bytes = b"", after: bytes = b""
) -> Iterator[bytes]:
    yield before + file_head()
    yield from content
    yield b"\r\n" + after + f"--{BOUNDARY}--\r\n".encode()


def jsonl(size: int) -> Iterator[bytes]:
    """About ``size`` bytes of valid batch lines, a chunk at a time."""
    line = orjson.dumps(request_line(0)) + b"\n"
    per_chunk = max(1, CHUNK // len(line))
    for _ in range(0, size, per_chunk * len(line)):
        yield line * per_chunk


def post_chunked(server: Server, body: Iterable[bytes], watch: Any = None) -> tuple[int, Any]:
    """POST /v1/files with a chunked body (no Content-Length), as slow or large as ``body``;
    stops sending once the server has answered. ``watch`` is called after each chunk sent."""
    url = urlsplit(server.base_url)
    with socket.create_connection((url.hostname, url.port)) as sock:
        sock.sendall(
            f"POST /v1/files HTTP/1.1\r\nHost: {url.netloc}\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
            "Transfer-Encoding: chunked\r\n\r\n".encode()
        )
        try:
            for chunk in body:
                if select.select([sock], [], [], 0)[0]:
                    break  # answered already
                sock.sendall(b"%x\r\n%b\r\n" % (len(chunk), chunk))
                if watch is not None:
                    watch()
            else:
                sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, orjson.loads(response.read())


def kept_blobs(server: Server) -> list[Path]:
    """Blobs and partial blobs in the server's data folder (its readiness probes aside)."""
    return [
        path
        for path in (server.data_dir / "files").rglob("*")
        if path.is_file() and not path.name.startswith(".probe")
    ]


@pytest.mark.parametrize(
    ("before", "after"),
    [(field("purpose", "batch"), b""), (b"", field("purpose", "batch"))],
    ids=["purpose-first", "file-first"],
)
def test_a_chunked_upload_past_the_limit_is_refused_without_spooling(
    server: Server, temp_dir: Path, before: bytes, after: bytes
) -> None:
    """No Content-Length: the limit is counted as the bytes arrive, nothing lands in the temp
    folder meanwhile, and no blob or partial file is left."""
    peak = 0

    def watch() -> None:
        nonlocal peak
        peak = max(peak, temp_bytes(server.process.pid, temp_dir))

    status, body = post_chunked(
        server, multipart(jsonl(8 * MAX_UPLOAD), before=before, after=after), watch
    )
    assert status == 400, body
    assert body["error"]["code"] == "file_too_large"
    assert peak == 0
    assert temp_bytes(server.process.pid, temp_dir) == 0
    assert kept_blobs(server) == []
    assert "Traceback" not in server.log()


def test_a_batch_file_sent_before_its_purpose_is_kept_and_runs(server: Server) -> None:
    """The Node SDK sends the file before the purpose: the upload works and the batch runs."""
    content = b"".join(orjson.dumps(request_line(i)) + b"\n" for i in range(3))
    status, body = post_chunked(server, multipart([content], after=field("purpose", "batch")), None)
    assert status == 200, body
    assert body["purpose"] == "batch" and body["bytes"] == len(content)
    client = server.client()
    assert client.files.content(body["id"]).content == content
    batch = client.batches.create(
        input_file_id=body["id"], endpoint="/v1/chat/completions", completion_window="24h"
    )
    assert wait_for_batch(client, batch.id).status == "completed"


def test_a_file_past_its_purposes_limit_sent_first_is_refused(server: Server) -> None:
    """Written under the larger limit while the purpose is unknown, then refused by the
    purpose's own limit once it arrives; nothing is kept."""
    status, body = post_chunked(
        server,
        multipart(jsonl(MAX_BATCH_FILE + CHUNK), after=field("purpose", "batch")),
    )
    assert status == 400, body
    assert body["error"]["code"] == "file_too_large"
    assert kept_blobs(server) == []
    assert server.client().files.list().data == []


def test_a_batch_file_that_is_not_jsonl_sent_first_is_refused(server: Server) -> None:
    """The first-line check still applies when the purpose follows the file."""
    status, body = post_chunked(server, multipart([b"not json\n"], after=field("purpose", "batch")))
    assert status == 400, body
    assert body["error"]["code"] == "invalid_file_format"
    assert server.client().files.list().data == []


def test_an_unknown_purpose_sent_first_is_refused_before_the_file_is_read(server: Server) -> None:
    """A purpose known before the file is checked before a byte of it is written."""
    status, body = post_chunked(
        server, multipart(jsonl(8 * MAX_UPLOAD), before=field("purpose", "nonsense"))
    )
    assert status == 400, body
    assert body["error"]["param"] == "purpose"


def test_the_purpose_is_still_required_after_the_file(server: Server) -> None:
    """A form with a file and no purpose is the same 400 as before."""
    status, body = post_chunked(server, multipart([b"{}\n"]))
    assert status == 400
    assert body["error"]["code"] == "missing_required_parameter"
    assert body["error"]["param"] == "purpose"
    assert kept_blobs(server) == []


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "multipart/form-data", "multipart/form-data; boundary=other"],
)
def test_a_body_that_is_not_the_multipart_it_claims_is_a_400(
    server: Server, content_type: str
) -> None:
    """A wrong content type, a missing boundary, or a body not in the declared boundary."""
    body = b"".join(multipart([b"{}\n"], before=field("purpose", "batch")))
    response = httpx.post(
        f"{server.base_url}/files", content=body, headers={"Content-Type": content_type}
    )
    assert response.status_code == 400, response.text
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    assert "Traceback" not in server.log()


def test_a_client_that_goes_away_mid_file_leaves_nothing(
    start_server: ServerFactory, temp_dir: Path
) -> None:
    """A body cut off mid-file, past the first bytes written to disk: the partial blob is
    removed, and the server carries on."""
    server = start_server(extra_env={"TMPDIR": str(temp_dir)})
    url = urlsplit(server.base_url)
    with socket.create_connection((url.hostname, url.port)) as sock:
        sock.sendall(
            f"POST /v1/files HTTP/1.1\r\nHost: {url.netloc}\r\nContent-Length: 10000000\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n\r\n".encode()
            + field("purpose", "batch")
            + file_head()
        )
        for chunk in jsonl(3 << 20):
            sock.sendall(chunk)
        time.sleep(0.5)  # for the server to write what it has
    deadline = time.monotonic() + 10
    while kept_blobs(server) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert kept_blobs(server) == []
    assert server.client().files.list().data == []
    assert temp_bytes(server.process.pid, temp_dir) == 0
    assert "Traceback" not in server.log()
