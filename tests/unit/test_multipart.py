"""The streaming multipart reader: fields and the one file in arrival order, the file's bytes
handed on as they come, every bound refused with a 400 as soon as it is passed."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass

import pytest
from starlette.requests import ClientDisconnect

from batchd.api import multipart
from batchd.api.multipart import FilePart, FormField, read_form
from batchd.errors import InvalidRequest

pytestmark = pytest.mark.anyio

CONTENT_TYPE = "multipart/form-data; boundary=XyZ"
FILE = b'{"custom_id": "a"}\n' * 50 + b"\r\n--Xy is close to the boundary\r\n--XyQ\r\n"


def field(name: str, value: str | bytes) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return (
        f'--XyZ\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode() + data + b"\r\n"
    )


def file(content: bytes, name: str = "file", filename: str = "in.jsonl") -> bytes:
    head = (
        f'--XyZ\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
        "Content-Type: application/jsonl\r\n\r\n"
    )
    return head.encode() + content + b"\r\n"


def form(*parts: bytes) -> bytes:
    return b"".join(parts) + b"--XyZ--\r\n"


async def stream(body: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


@dataclass
class Read:
    fields: list[tuple[str, str]]
    files: list[tuple[str, str, bytes]]
    order: list[str]
    largest_chunk: int = 0


async def read(
    body: bytes | AsyncIterator[bytes],
    *,
    chunk: int = 1 << 16,
    content_type: str | None = CONTENT_TYPE,
    max_body_bytes: int = 1 << 20,
) -> Read:
    source = stream(body, chunk) if isinstance(body, bytes) else body
    result = Read([], [], [])
    async for part in read_form(content_type, source, max_body_bytes=max_body_bytes):
        result.order.append(part.name)
        if isinstance(part, FormField):
            result.fields.append((part.name, part.value))
            continue
        content = bytearray()
        async for piece in part.chunks:
            result.largest_chunk = max(result.largest_chunk, len(piece))
            content += piece
        result.files.append((part.name, part.filename, bytes(content)))
    return result


async def refused(body: bytes | AsyncIterator[bytes], **options: object) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        await read(body, **options)  # type: ignore[arg-type]
    assert caught.value.status_code == 400
    return caught.value


@pytest.mark.parametrize("chunk", [1, 7, 64, 1 << 16])
async def test_fields_before_the_file_come_first(chunk: int) -> None:
    """Fields sent before the file are read before it, whatever the chunking of the body."""
    body = form(field("purpose", "batch"), file(FILE))
    got = await read(body, chunk=chunk)
    assert got.order == ["purpose", "file"]
    assert got.fields == [("purpose", "batch")]
    assert got.files == [("file", "in.jsonl", FILE)]


@pytest.mark.parametrize("chunk", [1, 5, 1 << 16])
async def test_fields_after_the_file_come_after_it(chunk: int) -> None:
    """Fields sent after the file (as the Node SDK does) follow it, split anywhere."""
    body = form(file(FILE), field("purpose", "batch"), field("expires_after[seconds]", "3600"))
    got = await read(body, chunk=chunk)
    assert got.order == ["file", "purpose", "expires_after[seconds]"]
    assert got.fields == [("purpose", "batch"), ("expires_after[seconds]", "3600")]
    assert got.files == [("file", "in.jsonl", FILE)]


async def test_the_file_is_handed_on_a_network_chunk_at_a_time() -> None:
    """No piece of the file handed on is larger than the chunk it arrived in."""
    body = form(field("purpose", "batch"), file(FILE * 100))
    got = await read(body, chunk=1000)
    assert got.files[0][2] == FILE * 100
    assert got.largest_chunk <= 1000


async def test_an_unread_file_is_skipped_to_the_next_part() -> None:
    """A caller that does not read the file still gets the fields after it."""
    body = form(file(FILE), field("purpose", "batch"))
    parts = [
        part async for part in read_form(CONTENT_TYPE, stream(body, 10), max_body_bytes=1 << 20)
    ]
    assert [part.name for part in parts] == ["file", "purpose"]
    assert isinstance(parts[0], FilePart)


async def test_too_many_parts_are_refused() -> None:
    """More parts than the bound is a 400."""
    body = form(*(field(f"f{i}", "x") for i in range(multipart.MAX_PARTS + 1)))
    assert "parts" in (await refused(body)).message


async def test_an_oversized_field_is_refused() -> None:
    """A text field past its bound is a 400, refused before the rest of it is read."""
    body = form(field("purpose", "b" * (multipart.MAX_FIELD_BYTES + 1)), file(FILE))
    assert "too large" in (await refused(body, chunk=1)).message


async def test_an_oversized_header_is_refused() -> None:
    """A part header line past its bound is a 400."""
    body = form(file(FILE, filename="f" * (multipart.MAX_HEADER_BYTES + 1)))
    await refused(body)


async def test_two_files_are_refused() -> None:
    """A form may hold one file only."""
    body = form(file(FILE), file(FILE, name="file2"))
    assert "more than one file" in (await refused(body)).message


async def test_a_body_past_the_limit_is_refused_as_it_arrives() -> None:
    """The body is counted as it arrives: the bytes past the limit are never read."""
    sent = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal sent
        yield file(b"")[:-2]
        while True:
            sent += 1000
            yield b"x" * 1000

    error = await refused(endless(), max_body_bytes=10_000)
    assert error.code == "file_too_large"
    assert sent <= 10_000


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "application/json",
        "multipart/form-data",
        "multipart/form-data; boundary=",
        "multipart/form-data; boundary=" + "b" * 71,
    ],
)
async def test_a_missing_or_bad_boundary_is_refused(content_type: str | None) -> None:
    """No multipart content type, or no usable boundary, is a 400 before any byte is read."""
    await refused(form(file(FILE)), content_type=content_type)


async def test_a_body_not_in_the_declared_boundary_is_refused() -> None:
    """A body whose parts do not use the declared boundary is a 400."""
    await refused(form(file(FILE)), content_type="multipart/form-data; boundary=Other")


@pytest.mark.parametrize("cut", [10, 60, 200, -12])
async def test_a_truncated_body_is_refused(cut: int) -> None:
    """A body that ends before the closing boundary is a 400, wherever it is cut."""
    body = form(field("purpose", "batch"), file(FILE))
    await refused(body[:cut], chunk=3)


async def test_a_client_that_goes_away_is_a_truncated_body() -> None:
    """A disconnect mid-file ends the reading with a 400, not a server error."""

    async def disconnecting() -> AsyncIterator[bytes]:
        yield file(FILE)
        raise ClientDisconnect()

    await refused(disconnecting())


def _chunks(body: bytes, sizes: Iterable[int]) -> list[bytes]:
    pieces, start = [], 0
    for size in sizes:
        pieces.append(body[start : start + size])
        start += size
    return [*pieces, body[start:]]


async def test_a_boundary_split_across_chunks_is_still_found() -> None:
    """The file ends at its boundary even when the boundary is split over two chunks."""
    body = form(file(FILE), field("purpose", "batch"))
    split = body.index(b"\r\n--XyZ\r\n", len(file(b""))) + 4

    async def two() -> AsyncIterator[bytes]:
        for piece in _chunks(body, [split]):
            yield piece

    got = await read(two())
    assert got.files == [("file", "in.jsonl", FILE)]
    assert got.fields == [("purpose", "batch")]
