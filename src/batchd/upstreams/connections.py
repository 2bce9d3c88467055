"""HTTP/1.1 to one model server: kept-alive connections, one request on each at a time.

batchd's own client rather than aiohttp's: the hot path only ever POSTs a body it already holds
and reads the whole answer, so a protocol that hands bytes to llhttp (``httptools``) and back
costs about a third of aiohttp's CPU per request (23 against 69 µs, docs/performance.md), and
the HTTP client was most of what batchd's event loop spent per request.

What it does: http and https (the system's trust store, so ``SSL_CERT_FILE`` works), Basic
credentials in the URL, keep-alive with idle connections reused newest first, chunked and
close-delimited bodies, gzip and deflate answers. What it does not: proxies, redirects, HTTP/2
(aiohttp's session, used before, did none of these either).
"""

from __future__ import annotations

import asyncio
import base64
import ssl
import time
import zlib
from collections import deque
from collections.abc import Mapping
from typing import Any, cast
from urllib.parse import SplitResult, unquote, urlsplit

import httptools
import msgspec

from batchd import __version__


class ProtocolError(Exception):
    """The server's bytes are not an HTTP/1.1 answer batchd can read."""


class ConnectionLost(Exception):
    """The connection closed before the whole answer came."""


class AnswerTooLarge(Exception):
    """The answer's body, decoded, is larger than the pool takes."""


class Answer(msgspec.Struct, gc=False):
    """One HTTP answer: its status, its headers (names in lower case) and its whole body. One is
    made per request: a Struct, built in C (see ``batchd.models``)."""

    status: int
    headers: dict[str, str]
    body: bytes


EARLY_ANSWER_BYTES = 64 * 1024
"""A request larger than this may still be on its way when an error answer comes (a request
smaller fits in the sockets' buffers whole)."""

KEEPALIVE = 15.0
"""Seconds an idle connection is kept for reuse (aiohttp's default too). Longer, and one that a
firewall or load balancer dropped without a word would be found out only when a request on it
timed out."""


class ConnectionPool:
    """Connections to the server at ``base_url``, opened as needed and kept while idle (at most
    ``max_idle``, for at most ``keepalive`` seconds). ``post`` sends to a path under the base
    URL's path."""

    def __init__(
        self,
        base_url: str,
        *,
        headers: Mapping[str, str],
        connect_timeout: float,
        request_timeout: float,
        max_idle: int,
        max_body: int,
        keepalive: float = KEEPALIVE,
    ) -> None:
        url = urlsplit(base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"{base_url!r} is not an http:// or https:// URL.")
        self._host = url.hostname
        self._port = url.port or (443 if url.scheme == "https" else 80)
        self._ssl = ssl.create_default_context() if url.scheme == "https" else None
        self._path_prefix = url.path.rstrip("/").encode()
        fixed = {
            "host": url.netloc.rpartition("@")[2],
            "user-agent": f"batchd/{__version__}",
            "accept-encoding": "gzip, deflate",
            **_basic_auth(url),
            **{name.lower(): value for name, value in headers.items()},  # an API key wins
        }
        self._fixed_headers = _header_block(fixed)
        self._connect_timeout = connect_timeout
        self._request_timeout = request_timeout
        self._max_idle = max_idle
        self._max_body = max_body
        self._keepalive = keepalive
        self._idle: deque[_Connection] = deque()
        """Newest on the right."""
        self._closed = False

    async def post(self, path: str, body: bytes, headers: Mapping[str, str]) -> Answer:
        """POST ``body`` to the base URL's path + ``path``. Raises TimeoutError, ConnectionLost,
        ProtocolError, AnswerTooLarge, or OSError (no connection could be made)."""
        return await self.request(b"POST", path, body, headers)

    async def get(self, path: str) -> Answer:
        """GET the base URL's path + ``path``; raises as ``post``."""
        return await self.request(b"GET", path, b"", {})

    async def request(
        self, method: bytes, path: str, body: bytes, headers: Mapping[str, str]
    ) -> Answer:
        head = b"%s %s%s HTTP/1.1\r\n%scontent-length: %d\r\n%s\r\n" % (
            method,
            self._path_prefix,
            path.encode(),
            self._fixed_headers,
            len(body),
            _header_block(headers),
        )
        connection = self._idle_connection() or await self._connect()
        request = head + body
        timer = None
        try:
            answer = connection.send(request)
            timer = asyncio.get_running_loop().call_later(self._request_timeout, _expire, answer)
            result = await answer
        except BaseException:
            connection.close()  # whatever state it was left in, it cannot carry another request
            raise
        finally:
            if timer is not None:
                timer.cancel()
        if self._keeps(connection, result, len(request)):
            connection.idle_since = time.monotonic()
            self._idle.append(connection)
        else:
            connection.close()
        return result

    async def close(self) -> None:
        """Close the idle connections, and each busy one once its answer is in."""
        self._closed = True
        while self._idle:
            self._idle.pop().close()

    def _keeps(self, connection: _Connection, answer: Answer, sent: int) -> bool:
        """Whether a connection goes back to the pool after its answer. Not if the server may
        have answered before the whole request had left: over https the transport cannot tell
        (TLS hands every byte on at once to the TCP transport below it, out of sight), so an
        error answer to a large request is taken for one."""
        early = self._ssl is not None and answer.status >= 400 and sent > EARLY_ANSWER_BYTES
        return (
            connection.reusable
            and connection.sent_whole
            and not early
            and not self._closed
            and len(self._idle) < self._max_idle
        )

    def _idle_connection(self) -> _Connection | None:
        """The most recently used idle connection, unless the server has closed it or it has
        been idle too long (then so have all older ones: they are closed on the way)."""
        fresh_since = time.monotonic() - self._keepalive
        while self._idle:
            connection = self._idle.pop()
            if connection.usable and connection.idle_since > fresh_since:
                return connection
            connection.close()
        return None

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        max_body = self._max_body
        connecting = loop.create_connection(
            lambda: _Connection(max_body),
            self._host,
            self._port,
            ssl=self._ssl,
            server_hostname=self._host if self._ssl else None,
        )
        async with asyncio.timeout(self._connect_timeout):
            _, connection = await connecting
        return connection


def _basic_auth(url: SplitResult) -> dict[str, str]:
    """Credentials in the URL (``https://user:secret@host/v1``) as Basic authorization."""
    if url.username is None:
        return {}
    pair = f"{unquote(url.username)}:{unquote(url.password or '')}"
    return {"authorization": "Basic " + base64.b64encode(pair.encode()).decode()}


def _header_block(headers: Mapping[str, str]) -> bytes:
    text = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    if text.count("\n") != len(headers) or text.count("\r") != len(headers):
        raise ValueError("A header name or value holds a line break.")
    return text.encode()


class _Connection(asyncio.Protocol):
    """One connection, carrying one request at a time."""

    def __init__(self, max_body: int) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._answer: asyncio.Future[Answer] | None = None
        self._headers: dict[str, str] = {}
        self._max_body = max_body
        self._body: list[bytes] = []
        self._size = 0  # of the body so far, decoded
        self._inflater: _Inflater | None = None
        self._headers_done = False
        self.reusable = True
        self.idle_since = 0.0

    def send(self, request: bytes) -> asyncio.Future[Answer]:
        """Write ``request``; the future is its answer."""
        assert self._answer is None, "one request at a time"
        if not self.usable:  # closed before the request could go (an answer at connect…)
            raise ConnectionLost()
        assert self._transport is not None
        answer = self._answer = asyncio.get_running_loop().create_future()
        self._transport.write(request)
        return answer

    @property
    def usable(self) -> bool:
        """Open, and fit to carry a request. The transport may be closing before the protocol
        hears of it (``connection_lost`` comes on a later turn of the loop)."""
        return self.reusable and self._transport is not None and not self._transport.is_closing()

    @property
    def sent_whole(self) -> bool:
        """The whole request has left (a server may answer before it has read all of it)."""
        return self._transport is not None and not self._transport.get_write_buffer_size()

    def close(self) -> None:
        self.reusable = False
        if self._transport is not None:
            self._transport.abort()  # an unread answer or a half-sent request: nothing to flush

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self._fail(ProtocolError(f"it is not HTTP/1.1 ({exc})"))
            self.close()

    def eof_received(self) -> None:
        self.reusable = False  # the server is done with this connection: let the transport close

    def connection_lost(self, exc: Exception | None) -> None:
        self.reusable = False
        if exc is None and self._headers_done and self._ends_at_close():
            self._complete()
        else:
            self._fail(ConnectionLost())

    # httptools' callbacks

    def on_message_begin(self) -> None:
        if self._answer is None:
            raise ProtocolError("an answer nobody asked for")  # out of step: data_received closes
        self._headers = {}
        self._headers_done = False

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        previous = self._headers.get(key)
        self._headers[key] = text if previous is None else f"{previous}, {text}"

    def on_headers_complete(self) -> None:
        self._headers_done = True
        self._body, self._size = [], 0
        length = self._headers.get("content-length")
        try:
            if length is not None and length.isdigit() and int(length) > self._max_body:
                raise AnswerTooLarge(int(length))
            self._inflater = _inflater_for(self._headers.get("content-encoding"), self._max_body)
        except (AnswerTooLarge, ProtocolError) as exc:
            self._refuse(exc)

    def on_body(self, body: bytes) -> None:
        if self._answer is None:
            return  # refused: the rest of what came is dropped with the connection
        try:
            if self._inflater is not None:
                body = self._inflater.inflate(body, self._max_body - self._size)
            self._keep(body)
        except (AnswerTooLarge, zlib.error) as exc:
            self._refuse(exc)

    def _keep(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > self._max_body:
            raise AnswerTooLarge(self._size)
        self._body.append(body)

    def on_message_complete(self) -> None:
        if 100 <= self._parser.get_status_code() < 200:
            self._headers_done = False
            return  # an interim answer (100 Continue, 103 Early Hints): the real one follows
        if not self._parser.should_keep_alive():
            self.reusable = False
        self._complete()

    def _complete(self) -> None:
        self._headers_done = False
        answer, self._answer = self._answer, None
        if answer is None:
            self.close()  # an answer nobody asked for: the connection is out of step
            return
        if answer.done():
            return
        try:
            if self._inflater is not None:
                self._keep(self._inflater.finish())
        except (AnswerTooLarge, zlib.error) as exc:
            answer.set_exception(_decoding_error(exc))
            return
        body, self._body = b"".join(self._body), []  # the connection outlives the answer
        answer.set_result(Answer(self._parser.get_status_code(), self._headers, body))

    def _refuse(self, error: Exception) -> None:
        """Fail the answer now, and drop the connection with whatever of it is still coming."""
        self._fail(_decoding_error(error))
        self.close()

    def _ends_at_close(self) -> bool:
        """The answer has neither a length nor chunks: its body is whatever comes until the
        server closes the connection."""
        return "content-length" not in self._headers and "transfer-encoding" not in self._headers

    def _fail(self, error: Exception) -> None:
        answer, self._answer = self._answer, None
        if answer is not None and not answer.done():
            answer.set_exception(error)


def _decoding_error(error: Exception) -> Exception:
    if isinstance(error, zlib.error):
        return ProtocolError(f"its body cannot be decoded ({error})")
    return error


def _inflater_for(encoding: str | None, limit: int) -> _Inflater | None:
    if encoding is None or (encoding := encoding.strip().lower()) == "identity":
        return None
    if encoding not in ("gzip", "x-gzip", "deflate"):
        raise ProtocolError(f"content-encoding {encoding!r} was not asked for")
    return _Inflater(gzip=encoding != "deflate", limit=limit)


class _Inflater:
    """A gzip or deflate body inflated as it arrives, never further than the room left: a small
    body may inflate to gigabytes. Several gzip members are inflated one after the other; a
    deflate body is read with zlib's header if it starts with one, else raw (some servers)."""

    def __init__(self, *, gzip: bool, limit: int) -> None:
        self._gzip = gzip
        self._limit = limit
        self._received = 0
        self._inflater: Any = self._gzip_member() if gzip else None
        self._head = b""  # deflate: the first bytes, until there are two to tell the wrapping by

    def inflate(self, data: bytes, room: int) -> bytes:
        """What ``data`` inflates to; AnswerTooLarge if past ``room`` bytes."""
        self._received += len(data)
        if self._received > self._limit:
            raise AnswerTooLarge(self._received)
        if self._inflater is None:
            data = self._head + data
            if len(data) < 2:
                self._head = data
                return b""
            return self._first_deflate(data, room)
        return self._inflate(data, room)

    def finish(self) -> bytes:
        """The rest, once the whole body has come."""
        if self._inflater is None:
            if self._head:
                raise zlib.error("the deflate body is cut short")
            return b""
        if self._received and not self._inflater.eof:
            raise zlib.error(f"the {'gzip' if self._gzip else 'deflate'} body is cut short")
        rest: bytes = self._inflater.flush()
        return rest

    def _first_deflate(self, data: bytes, room: int) -> bytes:
        wrapped = data[0] & 0x0F == 8 and ((data[0] << 8) | data[1]) % 31 == 0
        self._inflater = zlib.decompressobj(zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS)
        try:
            return self._inflate(data, room)
        except zlib.error:
            if not wrapped:
                raise
        self._inflater = zlib.decompressobj(-zlib.MAX_WBITS)  # raw after all
        return self._inflate(data, room)

    def _inflate(self, data: bytes, room: int) -> bytes:
        pieces = []
        while data:
            inflater = self._inflater
            pieces.append(inflater.decompress(data, room + 1))
            room -= len(pieces[-1])
            if room < 0 or inflater.unconsumed_tail:  # stopped past the room: too large
                raise AnswerTooLarge(self._limit)
            data = inflater.unused_data if inflater.eof else b""
            if data and self._gzip:  # the next member of a multi-member gzip body
                self._inflater = self._gzip_member()
            elif data:
                break  # bytes after a deflate stream's end: not part of the body
        return b"".join(pieces)

    @staticmethod
    def _gzip_member() -> Any:
        return zlib.decompressobj(wbits=zlib.MAX_WBITS | 16)


def _expire(answer: asyncio.Future[Any]) -> None:
    if not answer.done():
        answer.set_exception(TimeoutError())
