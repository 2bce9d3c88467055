"""batchd's HTTP/1.1 client against a raw TCP server that answers with scripted bytes."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import shutil
import socket
import ssl
import struct
import subprocess
import zlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from batchd.errors import (
    ResponseTooLarge,
    UpstreamDisconnected,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from batchd.upstreams.connections import (
    KEEPALIVE,
    AnswerTooLarge,
    ConnectionLost,
    ConnectionPool,
    ProtocolError,
)
from batchd.upstreams.http import HttpUpstream
from tests.support.ports import free_port

pytestmark = pytest.mark.anyio


@pytest.fixture(
    params=[
        pytest.param(("asyncio", {"use_uvloop": False}), id="asyncio"),
        pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop"),  # as batchd runs
    ]
)
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, bool]]:
    backend: tuple[str, dict[str, bool]] = request.param
    return backend


@dataclass(frozen=True)
class Reply:
    data: bytes = b""
    then_close: bool = False
    then_reset: bool = False
    """Close with a TCP reset (RST) rather than an orderly close (FIN)."""
    never: bool = False
    delay: float = 0.0
    stray: bytes = b""
    """Bytes sent after the reply, before any request asks for them."""


OK = Reply(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}")
HANG = Reply(never=True)
CLOSE = Reply(then_close=True)
"""Close the connection instead of answering."""


def ok(data: bytes) -> Reply:
    return Reply(data)


class ScriptedServer:
    """Answers the n-th request it reads with ``replies[n]``, on whatever connection it came."""

    def __init__(self, replies: list[Reply]) -> None:
        self.replies = list(replies)
        self.requests: list[bytes] = []
        self.connections = 0
        self.dropped = 0
        """Connections the client closed while a reply was held back."""
        self.ended = 0
        """Connections the client closed between requests."""
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    self.ended += 1
                    break
                length = int(_header(head, b"content-length") or 0)
                self.requests.append(head + await reader.readexactly(length))
                reply = self.replies.pop(0)
                if reply.never:
                    await reader.read()  # until the client gives up on this connection
                    self.dropped += 1
                    break
                await asyncio.sleep(reply.delay)
                writer.write(reply.data + reply.stray)
                await writer.drain()
                if reply.then_reset:
                    sock = writer.get_extra_info("socket")
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    writer.transport.abort()
                    break
                if reply.then_close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def _header(head: bytes, name: bytes) -> bytes | None:
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name:
            return value.strip()
    return None


@asynccontextmanager
async def scripted(
    replies: list[Reply], ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[ScriptedServer]:
    server = ScriptedServer(replies)
    listening = await asyncio.start_server(server.handle, "127.0.0.1", 0, ssl=ssl_context)
    server.port = listening.sockets[0].getsockname()[1]
    async with listening:
        yield server


def pool_for(
    server: ScriptedServer | int,
    *,
    scheme: str = "http",
    timeout: float = 5.0,
    max_idle: int = 8,
    keepalive: float = KEEPALIVE,
    max_body: int = 64 << 20,
) -> ConnectionPool:
    """A pool for a scripted server, or for any port on 127.0.0.1."""
    port = server if isinstance(server, int) else server.port
    return ConnectionPool(
        f"{scheme}://127.0.0.1:{port}/v1",
        headers={"content-type": "application/json", "authorization": "Bearer sk-test"},
        connect_timeout=5.0,
        request_timeout=timeout,
        max_idle=max_idle,
        keepalive=keepalive,
        max_body=max_body,
    )


async def test_an_answer_comes_back_with_its_status_headers_and_body() -> None:
    reply = b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 3\r\nX-Request-Id: r1\r\n"
    reply += b"Vary: a\r\nvary: b\r\n"
    async with scripted([ok(reply + b"content-length: 5\r\n\r\nslow!")]) as server:
        answer = await pool_for(server).post("/chat/completions", b'{"a":1}', {"x-id": "c1"})
    assert (answer.status, answer.body) == (429, b"slow!")
    assert answer.headers["retry-after"] == "3"
    assert answer.headers["x-request-id"] == "r1"
    assert answer.headers["vary"] == "a, b"


async def test_the_request_carries_the_base_path_host_length_and_every_header() -> None:
    async with scripted([OK]) as server:
        await pool_for(server).post("/chat/completions", b'{"a":1}', {"x-batchd-custom-id": "c1"})
    head, _, body = server.requests[0].partition(b"\r\n\r\n")
    assert head.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
    assert _header(head, b"host") == f"127.0.0.1:{server.port}".encode()
    assert _header(head, b"content-length") == b"7"
    assert _header(head, b"authorization") == b"Bearer sk-test"
    assert _header(head, b"x-batchd-custom-id") == b"c1"
    assert body == b'{"a":1}'


async def test_credentials_in_the_url_are_sent_as_basic_authorization() -> None:
    async with scripted([OK, OK]) as server:
        url = f"http://user:s%40cret@127.0.0.1:{server.port}/v1"
        for headers in ({}, {"Authorization": "Bearer sk-key"}):
            pool = ConnectionPool(
                url,
                headers=headers,
                connect_timeout=5,
                request_timeout=5,
                max_idle=1,
                max_body=1024,
            )
            await pool.post("/x", b"{}", {})
    with_url_only, with_key = (_header(request, b"authorization") for request in server.requests)
    assert with_url_only == b"Basic " + base64.b64encode(b"user:s@cret")
    assert with_key == b"Bearer sk-key"  # the upstream's API key wins
    assert _header(server.requests[0], b"host") == f"127.0.0.1:{server.port}".encode()


async def test_an_interim_answer_then_a_lost_connection_is_connection_lost() -> None:
    async with scripted([Reply(b"HTTP/1.1 100 Continue\r\n\r\n", then_close=True)]) as server:
        with pytest.raises(ConnectionLost):
            await pool_for(server).post("/x", b"{}", {})


async def test_one_connection_carries_requests_one_after_another() -> None:
    async with scripted([OK, OK, OK]) as server:
        pool = pool_for(server)
        for _ in range(3):
            assert (await pool.post("/x", b"{}", {})).status == 200
    assert server.connections == 1


async def test_requests_at_once_each_get_a_connection_and_at_most_max_idle_are_kept() -> None:
    async with scripted([OK] * 8) as server:
        pool = pool_for(server, max_idle=2)
        await asyncio.gather(*(pool.post("/x", b"{}", {}) for _ in range(4)))
        assert server.connections == 4
        await asyncio.gather(*(pool.post("/x", b"{}", {}) for _ in range(4)))
    assert server.connections == 6  # two kept from the first four, two more opened


async def test_a_chunked_answer_is_joined() -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    )
    async with scripted([ok(chunked), OK]) as server:
        pool = pool_for(server)
        assert (await pool.post("/x", b"{}", {})).body == b"abcde"
        assert (await pool.post("/x", b"{}", {})).body == b"{}"
    assert server.connections == 1


async def test_an_answer_without_a_length_ends_when_the_server_closes() -> None:
    until_close = b'HTTP/1.0 200 OK\r\ncontent-type: application/json\r\n\r\n{"whole": true}'
    async with scripted([Reply(until_close, then_close=True), OK]) as server:
        pool = pool_for(server)
        assert (await pool.post("/x", b"{}", {})).body == b'{"whole": true}'
        assert (await pool.post("/x", b"{}", {})).body == b"{}"
    assert server.connections == 2


@pytest.mark.parametrize(
    ("encoding", "encode"),
    [
        ("gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("deflate", lambda data: zlib.compress(data, wbits=-zlib.MAX_WBITS)),
    ],
)
async def test_a_compressed_answer_is_decoded(
    encoding: str, encode: Callable[[bytes], bytes]
) -> None:
    body = encode(b'{"choices": []}')
    head = f"HTTP/1.1 200 OK\r\ncontent-encoding: {encoding}\r\ncontent-length: {len(body)}\r\n\r\n"
    async with scripted([ok(head.encode() + body)]) as server:
        answer = await pool_for(server).post("/x", b"{}", {})
    assert answer.body == b'{"choices": []}'


@pytest.mark.parametrize(
    ("body", "decoded"),
    [
        (gzip.compress(b'{"a": ') + gzip.compress(b"1}"), b'{"a": 1}'),
        (gzip.compress(b'{"a": 1}')[:-6], None),
    ],
    ids=["two members", "cut short"],
)
async def test_every_gzip_member_is_decoded_and_a_cut_one_is_an_error(
    body: bytes, decoded: bytes | None
) -> None:
    head = f"HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ncontent-length: {len(body)}\r\n\r\n"
    async with scripted([ok(head.encode() + body)]) as server:
        pool = pool_for(server)
        if decoded is None:
            with pytest.raises(ProtocolError, match="cut short"):
                await pool.post("/x", b"{}", {})
        else:
            assert (await pool.post("/x", b"{}", {})).body == decoded


LIMIT = 64 * 1024


def chunked(body: bytes, size: int = 8192) -> bytes:
    pieces = [body[i : i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces) + b"0\r\n\r\n"


@pytest.mark.parametrize(
    "reply",
    [
        b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % (LIMIT + 1) + b"x" * (LIMIT + 1),
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + chunked(b"x" * (LIMIT + 1)),
        b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n" + b"x" * (LIMIT + 1),
    ],
    ids=["content-length", "chunked", "until close"],
)
async def test_an_answer_past_the_limit_is_refused_and_its_connection_dropped(
    reply: bytes,
) -> None:
    """Counted as it arrives, whatever says where it ends; the connection, with the rest of the
    answer still on it, is not reused."""
    async with scripted([Reply(reply, then_close=True), OK]) as server:
        pool = pool_for(server, max_body=LIMIT)
        with pytest.raises(AnswerTooLarge):
            await pool.post("/x", b"{}", {})
        assert (await pool.post("/x", b"{}", {})).body == b"{}"
    assert server.connections == 2


async def test_an_answer_at_the_limit_is_kept() -> None:
    body = b"x" * LIMIT
    reply = b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
    async with scripted([ok(reply)]) as server:
        assert (await pool_for(server, max_body=LIMIT).post("/x", b"{}", {})).body == body


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_a_compressed_answer_is_bounded_as_it_inflates(encoding: str) -> None:
    """A small body that inflates past the limit (a "zip bomb": 8 MB of zeros in ~8 KB) is
    refused without ever being inflated whole."""
    inflated = bytes(8 << 20)
    body = gzip.compress(inflated) if encoding == "gzip" else zlib.compress(inflated)
    assert len(body) < LIMIT
    head = f"HTTP/1.1 200 OK\r\ncontent-encoding: {encoding}\r\ncontent-length: {len(body)}\r\n\r\n"
    async with scripted([ok(head.encode() + body)]) as server:
        with pytest.raises(AnswerTooLarge):
            await pool_for(server, max_body=LIMIT).post("/x", b"{}", {})


async def test_a_compressed_answer_in_many_chunks_is_decoded_whole() -> None:
    """Decoding as the bytes come: members and chunk edges anywhere."""
    text = b'{"text": "' + b"abc" * 20_000 + b'"}'
    body = gzip.compress(text[:1000]) + gzip.compress(text[1000:])
    head = b"HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ntransfer-encoding: chunked\r\n\r\n"
    async with scripted([ok(head + chunked(body, size=97))]) as server:
        assert (await pool_for(server).post("/x", b"{}", {})).body == text


async def test_the_upstream_fails_a_too_large_answer_as_response_too_large() -> None:
    reply = b"HTTP/1.1 200 OK\r\ncontent-length: 9999999\r\n\r\n"
    async with scripted([Reply(reply, then_close=True)]) as server:
        upstream = upstream_for(server.port, max_response_bytes=LIMIT)
        with pytest.raises(ResponseTooLarge, match="max_response_bytes"):
            await upstream.send("/v1/chat/completions", b"{}", {})
        await upstream.close()


async def test_an_encoding_that_was_not_asked_for_is_a_protocol_error() -> None:
    reply = b"HTTP/1.1 200 OK\r\ncontent-encoding: br\r\ncontent-length: 2\r\n\r\nzz"
    async with scripted([ok(reply)]) as server:
        with pytest.raises(ProtocolError, match="br"):
            await pool_for(server).post("/x", b"{}", {})


async def test_an_interim_answer_is_skipped() -> None:
    async with scripted([ok(b"HTTP/1.1 100 Continue\r\n\r\n" + OK.data)]) as server:
        answer = await pool_for(server).post("/x", b"{}", {})
    assert (answer.status, answer.body) == (200, b"{}")


async def test_an_answer_that_says_close_leaves_its_connection_unused() -> None:
    closing = b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\n{}"
    async with scripted([ok(closing), OK]) as server:
        pool = pool_for(server)
        await pool.post("/x", b"{}", {})
        await pool.post("/x", b"{}", {})
    assert server.connections == 2


async def test_a_connection_the_server_closed_while_idle_is_not_used_again() -> None:
    async with scripted([Reply(OK.data, then_close=True), OK]) as server:
        pool = pool_for(server)
        await pool.post("/x", b"{}", {})
        await asyncio.sleep(0.1)  # as a server's keep-alive timeout would, between requests
        assert (await pool.post("/x", b"{}", {})).status == 200
    assert server.connections == 2


async def test_a_connection_closing_before_its_protocol_heard_of_it_is_not_taken() -> None:
    async with scripted([OK, OK]) as server:
        pool = pool_for(server)
        await pool.post("/x", b"{}", {})
        idle = pool._idle[-1]
        assert idle._transport is not None
        idle._transport.close()  # its connection_lost comes on a later turn of the loop
        assert (await pool.post("/x", b"{}", {})).status == 200
    assert server.connections == 2


async def test_a_connection_idle_longer_than_the_keepalive_is_not_used_again() -> None:
    async with scripted([OK, OK, OK]) as server:
        pool = pool_for(server, keepalive=0.2)
        await pool.post("/x", b"{}", {})
        await pool.post("/x", b"{}", {})
        assert server.connections == 1
        await asyncio.sleep(0.3)  # a firewall may have dropped it without a word by now
        await pool.post("/x", b"{}", {})
    assert server.connections == 2


TOO_LARGE = b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 2\r\n\r\n{}"


@pytest.mark.parametrize("scheme", ["http", "https"])
async def test_a_connection_answered_before_its_request_had_all_left_is_not_used_again(
    scheme: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    server_side = None
    if scheme == "https":
        cert, key = request.getfixturevalue("certificate")
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        server_side = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_side.load_cert_chain(cert, key)
    opened, closed = 0, asyncio.Semaphore(0)

    async def answer_at_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal opened
        opened += 1
        await reader.readuntil(b"\r\n\r\n")
        writer.write(TOO_LARGE)  # before reading the body, as a server refusing it does
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await reader.read()
        writer.close()
        closed.release()

    listening = await asyncio.start_server(answer_at_once, "127.0.0.1", 0, ssl=server_side)
    async with listening:
        port = listening.sockets[0].getsockname()[1]
        pool = pool_for(port, scheme=scheme, timeout=2)
        big = b"x" * (64 << 20)  # more than the sockets' buffers hold, so some of it is unsent
        assert (await pool.post("/x", big, {})).status == 413
        assert (await pool.post("/x", b"{}", {})).status == 413  # on a new connection
        await pool.close()
        for _ in range(opened):
            await asyncio.wait_for(closed.acquire(), 5)
    assert opened == 2


async def test_bytes_that_come_while_a_connection_is_idle_put_it_out_of_use() -> None:
    stray = b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\n{"  # the start of no one's answer
    async with scripted(
        [Reply(OK.data, stray=stray), ok(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\n[2]")]
    ) as server:
        pool = pool_for(server)
        await pool.post("/x", b"{}", {})
        await asyncio.sleep(0.1)
        assert (await pool.post("/x", b"{}", {})).body == b"[2]"  # not b'{HTTP/'
    assert server.connections == 2


async def test_a_pool_closed_with_requests_in_flight_keeps_none_of_their_connections() -> None:
    async with scripted([Reply(OK.data, delay=0.2)]) as server:
        pool = pool_for(server)
        request = asyncio.create_task(pool.post("/x", b"{}", {}))
        await asyncio.sleep(0.1)
        await pool.close()
        assert (await request).status == 200
        await asyncio.sleep(0.1)
        assert server.ended == 1  # closed once its answer was in


async def test_a_server_that_closes_instead_of_answering_is_connection_lost() -> None:
    async with scripted([OK, CLOSE, OK]) as server:
        pool = pool_for(server)
        await pool.post("/x", b"{}", {})
        with pytest.raises(ConnectionLost):
            await pool.post("/x", b"{}", {})
        assert (await pool.post("/x", b"{}", {})).status == 200
    assert server.connections == 2


async def test_a_reset_in_an_answer_without_a_length_is_connection_lost_not_its_end() -> None:
    cut = b'HTTP/1.0 200 OK\r\ncontent-type: application/json\r\n\r\n{"choices": [{"te'
    async with scripted([Reply(cut, then_reset=True)]) as server:
        with pytest.raises(ConnectionLost):
            await pool_for(server).post("/x", b"{}", {})


async def test_a_switch_of_protocols_is_a_protocol_error() -> None:
    upgrade = (
        b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n"
    )
    async with scripted([ok(upgrade)]) as server:
        with pytest.raises(ProtocolError):
            await pool_for(server).post("/x", b"{}", {})


async def test_a_connection_lost_in_the_middle_of_an_answer_is_connection_lost() -> None:
    cut = b'HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{"half'
    async with scripted([Reply(cut, then_close=True)]) as server:
        with pytest.raises(ConnectionLost):
            await pool_for(server).post("/x", b"{}", {})


async def test_bytes_that_are_not_http_are_a_protocol_error() -> None:
    async with scripted([ok(b"SSH-2.0-OpenSSH_9.2\r\n\r\n"), OK]) as server:
        pool = pool_for(server)
        with pytest.raises(ProtocolError):
            await pool.post("/x", b"{}", {})
        assert (await pool.post("/x", b"{}", {})).status == 200
    assert server.connections == 2


async def test_no_answer_in_time_is_a_timeout_and_the_late_answer_is_never_read() -> None:
    async with scripted([HANG, OK]) as server:
        pool = pool_for(server, timeout=0.2)
        with pytest.raises(TimeoutError):
            await pool.post("/x", b"{}", {})
        assert (await pool.post("/x", b"{}", {})).status == 200
        assert server.dropped == 1  # closed, not left open for an answer nobody reads
    assert server.connections == 2


async def test_a_cancelled_request_takes_its_connection_with_it() -> None:
    async with scripted([HANG, OK]) as server:
        pool = pool_for(server)
        task = asyncio.create_task(pool.post("/x", b"{}", {}))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert (await pool.post("/x", b"{}", {})).status == 200
        assert server.dropped == 1
    assert server.connections == 2


async def test_a_refused_connection_is_an_os_error() -> None:
    async with scripted([]) as server:
        port = server.port
    with pytest.raises(ConnectionRefusedError):
        await pool_for(port).post("/x", b"{}", {})


async def test_a_header_with_a_line_break_is_refused_before_anything_is_sent() -> None:
    async with scripted([OK]) as server:
        with pytest.raises(ValueError, match="line break"):
            await pool_for(server).post("/x", b"{}", {"x-id": "a\r\nx-injected: 1"})
    assert server.connections == 0


@pytest.mark.parametrize("url", ["ftp://example.com", "example.com:8000", "http://"])
def test_a_url_that_is_not_http_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="not an http"):
        ConnectionPool(
            url, headers={}, connect_timeout=1, request_timeout=1, max_idle=1, max_body=1
        )


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (made by the openssl command)."""
    openssl = shutil.which("openssl")
    assert openssl, "the openssl command is needed (Debian package openssl)"
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    command = [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
    command += ["-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"]
    command += ["-addext", "subjectAltName=IP:127.0.0.1"]
    subprocess.run(command, check=True, capture_output=True)
    return cert, key


async def test_https_trusts_what_ssl_cert_file_names(
    certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = certificate
    server_side = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_side.load_cert_chain(cert, key)
    async with scripted([OK, OK], ssl_context=server_side) as server:
        with pytest.raises(ssl.SSLCertVerificationError):
            await pool_for(server, scheme="https").post("/x", b"{}", {})
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        answer = await pool_for(server, scheme="https").post("/x", b"{}", {})
    assert answer.status == 200


def upstream_for(
    port: int, timeout: float = 5.0, max_response_bytes: int = 64 << 20
) -> HttpUpstream:
    return HttpUpstream(
        name="test",
        base_url=f"http://127.0.0.1:{port}/v1",
        models=frozenset(),
        max_concurrency=4,
        api_key="sk-test",
        request_timeout=timeout,
        connect_timeout=5.0,
        max_response_bytes=max_response_bytes,
    )


async def test_the_upstream_names_what_went_wrong_in_batchds_terms() -> None:
    garbage = b"not http at all\r\n\r\n"
    async with scripted([HANG, CLOSE, ok(garbage)]) as server:
        upstream = upstream_for(server.port, timeout=0.2)
        with pytest.raises(UpstreamTimeout):
            await upstream.send("/v1/chat/completions", b"{}", {})
        with pytest.raises(UpstreamDisconnected, match="before its whole answer"):
            await upstream.send("/v1/chat/completions", b"{}", {})
        with pytest.raises(UpstreamDisconnected, match="could not be read"):
            await upstream.send("/v1/chat/completions", b"{}", {})
        port = server.port
    with pytest.raises(UpstreamUnreachable, match="could not be reached"):
        await upstream_for(port).send("/v1/chat/completions", b"{}", {})


async def test_the_upstream_passes_on_the_request_id() -> None:
    reply = b"HTTP/1.1 200 OK\r\nx-request-id: req_9\r\ncontent-length: 2\r\n\r\n{}"
    async with scripted([ok(reply)]) as server:
        response = await upstream_for(server.port).send("/v1/embeddings", b"{}", {})
    assert (response.status, response.request_id, response.body) == (200, "req_9", b"{}")
    assert server.requests[0].startswith(b"POST /v1/embeddings HTTP/1.1\r\n")


# -- against uvicorn, the server in front of vLLM and SGLang -----------------------------------


async def _openai_shaped(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A tiny ASGI app: ``/v1/json`` answers with a length, ``/v1/stream`` in chunks."""
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    answer = b'{"object": "chat.completion", "echo": ' + body + b"}"
    if scope["path"] == "/v1/stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for part in (answer[:10], answer[10:]):
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    headers = [(b"content-type", b"application/json"), (b"x-request-id", b"req_u")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": answer})


@asynccontextmanager
async def uvicorn_serving(http: str, keep_alive: float) -> AsyncIterator[int]:
    config = uvicorn.Config(
        _openai_shaped,
        host="127.0.0.1",
        port=0,
        http=http,
        timeout_keep_alive=keep_alive,
        log_level="warning",
        lifespan="off",
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn has no event for it
        await asyncio.sleep(0.01)
    try:
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        await serving


@pytest.mark.parametrize("http", ["h11", "httptools"])
async def test_uvicorn_answers_with_a_length_and_in_chunks(http: str) -> None:
    async with uvicorn_serving(http, keep_alive=5) as port:
        upstream = upstream_for(port)
        whole = await upstream.send("/v1/json", b'{"n": 1}', {"x-batchd-custom-id": "c"})
        chunked = await upstream.send("/v1/stream", b'{"n": 2}', {})
        await upstream.close()
    assert (whole.status, whole.request_id) == (200, "req_u")
    assert whole.body == b'{"object": "chat.completion", "echo": {"n": 1}}'
    assert chunked.body == b'{"object": "chat.completion", "echo": {"n": 2}}'


@pytest.mark.parametrize("http", ["h11", "httptools"])
async def test_uvicorn_closing_idle_connections_costs_no_request(http: str) -> None:
    async with uvicorn_serving(http, keep_alive=0.2) as port:
        upstream = upstream_for(port)
        for _ in range(3):
            assert (await upstream.send("/v1/json", b"{}", {})).status == 200
            await asyncio.sleep(0.4)  # past uvicorn's keep-alive: it closes the connection
        await upstream.close()


@pytest.mark.parametrize(
    ("status", "trouble"), [(200, False), (404, False), (401, True), (403, True), (502, True)]
)
async def test_the_check_at_start_asks_for_the_models(status: int, trouble: bool) -> None:
    """GET /models: a key refused or a server failing is trouble to warn of; a server that lists
    no models (404) is fine."""
    reply = b"HTTP/1.1 %d X\r\ncontent-length: 2\r\n\r\n{}" % status
    async with scripted([ok(reply)]) as server:
        upstream = upstream_for(server.port)
        if trouble:
            with pytest.raises(UpstreamError, match=f"answered {status} to GET /models"):
                await upstream.probe()
        else:
            await upstream.probe()
        await upstream.close()
    assert server.requests[0].startswith(b"GET /v1/models HTTP/1.1\r\n")


async def test_the_check_at_start_of_a_server_that_is_not_there() -> None:
    upstream = upstream_for(free_port())
    with pytest.raises(UpstreamUnreachable):
        await upstream.probe()
    await upstream.close()


@pytest.mark.parametrize("wbits", [zlib.MAX_WBITS, -zlib.MAX_WBITS], ids=["zlib", "raw"])
async def test_a_deflate_body_whose_first_chunk_is_one_byte_is_decoded(wbits: int) -> None:
    """The wrapping is told from the first two bytes, whichever chunks they come in."""
    text = b'{"text": "' + b"abc" * 1000 + b'"}'
    packer = zlib.compressobj(wbits=wbits)
    body = packer.compress(text) + packer.flush()
    head = b"HTTP/1.1 200 OK\r\ncontent-encoding: deflate\r\ntransfer-encoding: chunked\r\n\r\n"
    pieces = b"1\r\n%s\r\n" % body[:1] + chunked(body[1:])
    async with scripted([ok(head + pieces)]) as server:
        assert (await pool_for(server).post("/x", b"{}", {})).body == text


async def test_a_deflate_body_cut_short_is_an_error() -> None:
    body = zlib.compress(b'{"text": "' + b"abc" * 1000 + b'"}')[:-10]
    head = f"HTTP/1.1 200 OK\r\ncontent-encoding: deflate\r\ncontent-length: {len(body)}\r\n\r\n"
    async with scripted([ok(head.encode() + body)]) as server:
        with pytest.raises(ProtocolError, match="cut short"):
            await pool_for(server).post("/x", b"{}", {})
