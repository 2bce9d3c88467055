"""/v1/files: parse, call the Files use cases, render."""

from __future__ import annotations

from contextlib import aclosing
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from batchd.api.multipart import FilePart, FormField, read_form
from batchd.api.params import choice_param, decimal, int_param, project_of
from batchd.api.responses import JSONResponse
from batchd.api.schemas import deleted_file, file_object, list_page
from batchd.errors import InvalidRequest
from batchd.files import Files, IncomingFile, UploadDetails


def _files(request: Request) -> Files:
    files: Files = request.app.state.files
    return files


MULTIPART_OVERHEAD = 1 << 20


async def upload(request: Request) -> Response:
    """The file's bytes go to the blob store as they arrive; the fields may come before the file
    (the Python SDK) or after it (the Node SDK)."""
    _refuse_oversized(request)
    files = _files(request)
    form = _UploadForm(files)
    try:
        async with aclosing(
            read_form(
                request.headers.get("content-type"),
                request.stream(),
                max_body_bytes=files.max_upload_bytes + MULTIPART_OVERHEAD,
            )
        ) as parts:
            async for part in parts:
                await form.take(part)
        stored = await files.finish(form.incoming_file(), form.details(project_of(request)))
    except BaseException:
        await form.abort()
        raise
    return JSONResponse(file_object(stored))


class _UploadForm:
    """The fields of an upload form as they arrive, and its file, received as it arrives."""

    def __init__(self, files: Files) -> None:
        self._files = files
        self._fields: dict[str, str] = {}
        self._incoming: IncomingFile | None = None

    async def take(self, part: FormField | FilePart) -> None:
        if isinstance(part, FormField):
            self._fields[part.name] = part.value
            return
        if part.name != "file":
            raise _missing("file")
        filename = part.filename or "upload.jsonl"
        self._incoming = self._files.receive(filename, self._fields.get("purpose"))
        async for chunk in part.chunks:
            await self._incoming.write(chunk)

    def incoming_file(self) -> IncomingFile:
        if self._incoming is None:
            raise _missing("file")
        return self._incoming

    def details(self, project: str) -> UploadDetails:
        purpose = self._fields.get("purpose")
        if purpose is None:
            raise _missing("purpose")
        expires_after = _expires_after(
            self._fields.get("expires_after[anchor]"), self._fields.get("expires_after[seconds]")
        )
        return UploadDetails(project, purpose, expires_after)

    async def abort(self) -> None:
        if self._incoming is not None:
            await self._incoming.abort()


def _missing(param: str) -> InvalidRequest:
    return InvalidRequest(
        f"Missing required parameter: '{param}'.", code="missing_required_parameter", param=param
    )


def _refuse_oversized(request: Request) -> None:
    """Refuse before reading a body that cannot fit, rather than reading gigabytes first."""
    limit = _files(request).max_upload_bytes + MULTIPART_OVERHEAD
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise InvalidRequest("File is too large.", code="file_too_large", param="file")


def _expires_after(anchor: object, seconds: object) -> int | None:
    if anchor is None and seconds is None:
        return None
    if anchor != "created_at":
        raise InvalidRequest(
            "Invalid 'expires_after[anchor]': must be 'created_at'.",
            code="invalid_value",
            param="expires_after[anchor]",
        )
    value = decimal(seconds) if isinstance(seconds, str) else None
    if value is None:
        raise InvalidRequest(
            "Invalid 'expires_after[seconds]': must be an integer.",
            code="invalid_type",
            param="expires_after[seconds]",
        )
    return value


async def list_files(request: Request) -> Response:
    page = await _files(request).list(
        project_of(request),
        purpose=request.query_params.get("purpose"),
        limit=int_param(request, "limit", default=10_000, low=1, high=10_000),
        ascending=choice_param(request, "order", default="desc", choices=("asc", "desc")) == "asc",
        after=request.query_params.get("after"),
    )
    return JSONResponse(list_page(page.items, page.has_more, file_object))


async def retrieve(request: Request) -> Response:
    file = await _files(request).get(project_of(request), request.path_params["file_id"])
    return JSONResponse(file_object(file))


async def delete(request: Request) -> Response:
    file = await _files(request).delete(project_of(request), request.path_params["file_id"])
    return JSONResponse(deleted_file(file))


async def content(request: Request) -> Response:
    file, chunks = await _files(request).content(
        project_of(request), request.path_params["file_id"]
    )
    return StreamingResponse(
        chunks,
        media_type="application/octet-stream",
        headers={
            "content-length": str(file.bytes),
            "content-disposition": attachment(file.filename),
        },
    )


def attachment(filename: str) -> str:
    """``Content-Disposition`` naming the file (RFC 6266): an ASCII ``filename`` with anything
    that could break the header replaced, and the exact name in ``filename*``."""
    plain = "".join(
        c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in filename
    )
    return f"attachment; filename=\"{plain}\"; filename*=UTF-8''{quote(filename, safe='')}"


routes = [
    Route("/v1/files", upload, methods=["POST"]),
    Route("/v1/files", list_files, methods=["GET"]),
    Route("/v1/files/{file_id}", retrieve, methods=["GET"]),
    Route("/v1/files/{file_id}", delete, methods=["DELETE"]),
    Route("/v1/files/{file_id}/content", content, methods=["GET"]),
]
