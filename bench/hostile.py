"""``python -m bench.hostile``: what hostile request bodies cost a real ``batchd serve``.

Each case runs against a fresh server (SQLite, a fresh data folder, a fresh TMPDIR) and reports
the answer, the server's peak resident memory (VmHWM) beside its peak before the request, the
peak bytes it held in its temporary folder (files there, and unlinked ones it still has open, as
a spooled upload is), and the seconds the request took. Bodies are generated as they are sent:
the client never holds more than a chunk, and stops sending once answered ("sent MB").

    a  a chunked 1.5 GB upload (no Content-Length), the file before the purpose, past the limit
    b  a 1.5 GB upload with a Content-Length, within limits raised to 2 GiB: accepted
    c  a chunked 500 MB JSON body to POST /v1/batches, past max_request_bytes
    d  ten chunked POST /v1/batches whose input_file_id is 10 MB each, then GET
       /v1/batches?limit=100
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import select
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table
from tests.support.temp_disk import temp_bytes

from bench.harness import Batchd, batchd

GB = 10**9
MB = 10**6
CHUNK = 1 << 20
BOUNDARY = "hostile-bench-boundary"
NO_UPSTREAM = "gpt-bench@http://127.0.0.1:9/v1"  # nothing is ever sent to it
LINE = (
    b'{"custom_id": "r", "method": "POST", "url": "/v1/chat/completions", '
    b'"body": {"model": "gpt-bench", "messages": [{"role": "user", "content": "hi"}]}}\n'
)


@dataclass
class Result:
    case: str
    status: str
    sent_mb: float
    idle_rss_mb: float
    peak_rss_mb: float
    peak_temp_mb: float
    seconds: float


@dataclass
class Request:
    method: str
    path: str
    content_type: str
    body: Iterable[bytes]
    length: int | None = None
    """Sent as Content-Length; None sends the body chunked."""


def jsonl(size: int) -> Iterator[bytes]:
    """``size`` bytes (rounded down to whole lines) of batch lines, the same chunk over again."""
    chunk = LINE * (CHUNK // len(LINE))
    for _ in range(size // len(chunk)):
        yield chunk


def multipart_upload(size: int, *, purpose_first: bool, chunked: bool) -> Request:
    purpose = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
    ).encode()
    head = (purpose if purpose_first else b"") + (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="big.jsonl"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    tail = b"\r\n" + (b"" if purpose_first else purpose) + f"--{BOUNDARY}--\r\n".encode()
    content = size // len(LINE * (CHUNK // len(LINE)))
    length = len(head) + content * len(LINE * (CHUNK // len(LINE))) + len(tail)

    def body() -> Iterator[bytes]:
        yield head
        yield from jsonl(size)
        yield tail

    return Request(
        "POST",
        "/v1/files",
        f"multipart/form-data; boundary={BOUNDARY}",
        body(),
        None if chunked else length,
    )


def json_body(size: int) -> Request:
    head, tail = b'{"input_file_id": "', b'", "endpoint": "/v1/chat/completions"}'
    filler = b"x" * CHUNK

    def body() -> Iterator[bytes]:
        yield head
        for _ in range(size // CHUNK):
            yield filler
        yield tail

    return Request("POST", "/v1/batches", "application/json", body())


def send(base_url: str, request: Request) -> tuple[int, int]:
    """Send ``request`` over a socket of its own, stopping once the server has answered (as a
    client should when refused early); the status, and the body bytes sent."""
    host, port = base_url.removeprefix("http://").split("/")[0].split(":")
    with socket.create_connection((host, int(port))) as sock:
        framing = (
            "Transfer-Encoding: chunked"
            if request.length is None
            else f"Content-Length: {request.length}"
        )
        sock.sendall(
            f"{request.method} {request.path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Content-Type: {request.content_type}\r\n{framing}\r\n\r\n".encode()
        )
        sent = [0]
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            _send_body(sock, request, sent)  # an early answer may close the connection
        response = http.client.HTTPResponse(sock)
        response.begin()
        response.read()
        return response.status, sent[0]


def _send_body(sock: socket.socket, request: Request, sent: list[int]) -> None:
    for chunk in request.body:
        if select.select([sock], [], [], 0)[0]:
            return  # answered already
        sent[0] += len(chunk)
        if request.length is None:
            sock.sendall(b"%x\r\n" % len(chunk))
            sock.sendall(chunk)
            sock.sendall(b"\r\n")
        else:
            sock.sendall(chunk)
    if request.length is None:
        sock.sendall(b"0\r\n\r\n")


class TempWatch:
    """Samples a process's temporary bytes every few milliseconds, keeping the peak."""

    def __init__(self, pid: int, temp_dir: Path) -> None:
        self.peak = 0
        self._pid, self._temp_dir = pid, temp_dir
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TempWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, temp_bytes(self._pid, self._temp_dir))
            self._stop.wait(0.005)


Case = Callable[[Batchd], tuple[str, int]]
"""Runs a case against a server: what it answered, and the body bytes sent."""


def case_a(server: Batchd) -> tuple[str, int]:
    upload = multipart_upload(3 * GB // 2, purpose_first=False, chunked=True)
    status, sent = send(server.base_url, upload)
    return str(status), sent


def case_b(server: Batchd) -> tuple[str, int]:
    upload = multipart_upload(3 * GB // 2, purpose_first=True, chunked=False)
    status, sent = send(server.base_url, upload)
    return str(status), sent


def case_c(server: Batchd) -> tuple[str, int]:
    status, sent = send(server.base_url, json_body(500 * MB))
    return str(status), sent


def case_d(server: Batchd) -> tuple[str, int]:
    answers = [send(server.base_url, json_body(10 * MB)) for _ in range(10)]
    listed = server.http.get("/batches", params={"limit": 100}).status_code
    statuses = "/".join(sorted({str(status) for status, _ in answers}))
    return f"{statuses} x10, list {listed}", sum(sent for _, sent in answers)


RAISED = {"BATCHD_MAX_UPLOAD_BYTES": str(2 << 30), "BATCHD_MAX_BATCH_FILE_BYTES": str(2 << 30)}
CASES: dict[str, tuple[str, Case, dict[str, str]]] = {
    "a": ("a: chunked 1.5 GB upload past the limit", case_a, {}),
    "b": ("b: 1.5 GB upload, Content-Length, accepted", case_b, RAISED),
    "c": ("c: chunked 500 MB JSON to POST /v1/batches", case_c, {}),
    "d": ("d: 10x chunked 10 MB input_file_id, then list", case_d, {}),
}


def run(name: str, workdir: Path) -> Result:
    title, case, env = CASES[name]
    temp_dir = workdir / "tmp"
    temp_dir.mkdir()
    with batchd(workdir, NO_UPSTREAM, env={**env, "TMPDIR": str(temp_dir)}) as server:
        idle = server.peak_rss_mb()
        with TempWatch(server.process.pid, temp_dir) as watch:
            started = time.perf_counter()
            status, sent = case(server)
            seconds = time.perf_counter() - started
        return Result(
            title, status, sent / MB, idle, server.peak_rss_mb(), watch.peak / MB, seconds
        )


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hostile", description=__doc__)
    parser.add_argument("cases", nargs="*", default=list(CASES), help="some of a, b, c, d")
    args = parser.parse_args()
    results = []
    for name in args.cases:
        with tempfile.TemporaryDirectory(prefix=f"bench-hostile-{name}-") as work:
            results.append(run(name, Path(work)))
    _print(results)
    return 0


def _print(results: list[Result]) -> None:
    table = Table(title="batchd under hostile bodies: fresh server per case, SQLite")
    for column in (
        "case",
        "HTTP",
        "sent MB",
        "idle RSS MB",
        "peak RSS MB",
        "peak temp MB",
        "seconds",
    ):
        table.add_column(column)
    for r in results:
        table.add_row(
            r.case,
            r.status,
            f"{r.sent_mb:.0f}",
            f"{r.idle_rss_mb:.0f}",
            f"{r.peak_rss_mb:.0f}",
            f"{r.peak_temp_mb:.0f}",
            f"{r.seconds:.1f}",
        )
    Console(width=120).print(table)


if __name__ == "__main__":
    sys.exit(main())
