"""A streaming reader of multipart/form-data bodies: small text fields, and one file whose bytes
are handed on as they arrive, never spooled. Every part of the body is bounded (parts, a field's
size, headers, the whole body), each as it arrives, and a body past a bound is a 400."""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect

from batchd.errors import InvalidRequest

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

MAX_PARTS = 16
MAX_FIELD_BYTES = 4 * 1024
MAX_HEADER_BYTES = 1024
MAX_HEADERS = 8


@dataclass(frozen=True)
class FormField:
    name: str
    value: str


@dataclass(frozen=True)
class FilePart:
    """The one file of the form. Its ``chunks`` must be read to the end (or the reading given
    up) before the next part is asked for."""

    name: str
    filename: str
    chunks: AsyncIterator[bytes]


class MultipartError(InvalidRequest):
    """The multipart body is malformed."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="invalid_multipart")


class BodyTooLarge(InvalidRequest):
    """The request body is too large."""

    def __init__(self) -> None:
        super().__init__("File is too large.", code="file_too_large", param="file")


@dataclass(frozen=True)
class _FileStart:
    name: str
    filename: str


class _PartEnd:
    pass


_PART_END = _PartEnd()
_Event = FormField | _FileStart | bytes | _PartEnd


def boundary_of(content_type: str | None) -> bytes:
    kind, options = parse_options_header(content_type)
    if kind != b"multipart/form-data":
        raise MultipartError("The request body must be multipart/form-data.")
    boundary = options.get(b"boundary", b"")
    if not 1 <= len(boundary) <= 70:  # RFC 2046's bound
        raise MultipartError("The multipart body has a missing or invalid boundary.")
    return boundary


async def read_form(
    content_type: str | None, body: AsyncIterator[bytes], *, max_body_bytes: int
) -> AsyncGenerator[FormField | FilePart, None]:
    """The form's text fields and its one file, in the order they arrive."""
    reader = _Reader(boundary_of(content_type), body, max_body_bytes)
    while (event := await reader.next_event()) is not None:
        if isinstance(event, FormField):
            yield event
        elif isinstance(event, _FileStart):
            chunks = reader.file_chunks()
            yield FilePart(event.name, event.filename, chunks)
            async for _ in chunks:  # whatever the caller left unread
                pass


class _Reader:
    """Feeds the body to the parser a network chunk at a time, and only when the events of the
    last chunk (a field, or pieces of the file no larger than that chunk) have all been taken:
    so at most one chunk of the file is ever held."""

    def __init__(self, boundary: bytes, body: AsyncIterator[bytes], max_body_bytes: int) -> None:
        self._body = body
        self._max_body_bytes = max_body_bytes
        self._received = 0
        self._events: deque[_Event] = deque()
        self._parts = _Parts(self._events.append)
        self._parser = MultipartParser(
            boundary,
            self._parts.callbacks(),
            max_header_count=MAX_HEADERS,
            max_header_size=MAX_HEADER_BYTES,
        )

    async def next_event(self) -> _Event | None:
        """The next event, reading more of the body as needed; None once the body has ended."""
        while not self._events:
            chunk = await self._next_chunk()
            if chunk is None:
                if not self._parts.ended:
                    raise MultipartError("The request body ended before the multipart form did.")
                return None
            try:
                self._parser.write(chunk)
            except FormParserError as exc:
                raise MultipartError("The multipart body is malformed.") from exc
        return self._events.popleft()

    async def file_chunks(self) -> AsyncIterator[bytes]:
        while True:
            event = await self.next_event()
            if isinstance(event, bytes):
                yield event
            elif isinstance(event, _PartEnd):
                return
            else:  # pragma: no cover - the parser ends a part before it starts another
                raise MultipartError("The multipart body is malformed.")

    async def _next_chunk(self) -> bytes | None:
        try:
            chunk = await anext(self._body, None)
        except ClientDisconnect:
            raise MultipartError("The request body ended before the multipart form did.") from None
        if chunk is not None:
            self._received += len(chunk)
            if self._received > self._max_body_bytes:
                raise BodyTooLarge()
        return chunk


class _Parts:
    """The parser's callbacks: turn its pieces into events, each part checked against the
    bounds as its pieces arrive."""

    def __init__(self, emit: Callable[[_Event], None]) -> None:
        self.ended = False
        self._emit = emit
        self._count = 0
        self._files = 0
        self._header_name = b""
        self._header_value = b""
        self._disposition = b""
        self._field: bytearray | None = None
        self._name = ""

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self._on_part_begin,
            "on_header_field": self._on_header_field,
            "on_header_value": self._on_header_value,
            "on_header_end": self._on_header_end,
            "on_headers_finished": self._on_headers_finished,
            "on_part_data": self._on_part_data,
            "on_part_end": self._on_part_end,
            "on_end": self._on_end,
        }

    def _on_part_begin(self) -> None:
        self._count += 1
        if self._count > MAX_PARTS:
            raise MultipartError(f"The form has more than {MAX_PARTS} parts.")
        self._disposition = b""
        self._field = None

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _on_header_end(self) -> None:
        if self._header_name.strip().lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_name = self._header_value = b""

    def _on_headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        if b"name" not in options:
            raise MultipartError("A part of the form has no name.")
        self._name = _decode(options[b"name"])
        if b"filename" not in options:
            self._field = bytearray()
            return
        self._files += 1
        if self._files > 1:
            raise MultipartError("The form has more than one file.")
        self._emit(_FileStart(self._name, _decode(options[b"filename"])))

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._field is None:
            self._emit(data[start:end])
            return
        self._field += data[start:end]
        if len(self._field) > MAX_FIELD_BYTES:
            raise MultipartError(f"The form field '{self._name[:64]}' is too large.")

    def _on_part_end(self) -> None:
        if self._field is None:
            self._emit(_PART_END)
        else:
            self._emit(FormField(self._name, _decode(bytes(self._field))))

    def _on_end(self) -> None:
        self.ended = True


def _decode(value: bytes) -> str:
    try:
        return value.decode()
    except UnicodeDecodeError:
        return value.decode("latin-1")
