"""/v1/files: parse, call the Files use cases, render."""

from __future__ import annotations

from collections.abc import AsyncIterator

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from batchd.api.params import choice_param, int_param, project_of
from batchd.api.responses import JSONResponse
from batchd.api.schemas import deleted_file, file_object, list_page
from batchd.errors import InvalidRequest
from batchd.files import Files, Upload

_READ_CHUNK = 1 << 20


def _files(request: Request) -> Files:
    files: Files = request.app.state.files
    return files


MULTIPART_OVERHEAD = 1 << 20


async def upload(request: Request) -> Response:
    _refuse_oversized(request)
    async with request.form(max_files=1, max_fields=16) as form:
        file = form.get("file")
        purpose = form.get("purpose")
        if not isinstance(file, UploadFile):
            raise InvalidRequest(
                "Missing required parameter: 'file'.",
                code="missing_required_parameter",
                param="file",
            )
        if not isinstance(purpose, str):
            raise InvalidRequest(
                "Missing required parameter: 'purpose'.",
                code="missing_required_parameter",
                param="purpose",
            )
        stored = await _files(request).upload(
            Upload(
                project=project_of(request),
                purpose=purpose,
                filename=file.filename or "upload.jsonl",
                chunks=_chunks(file),
                expires_after_seconds=_expires_after(
                    form.get("expires_after[anchor]"), form.get("expires_after[seconds]")
                ),
            )
        )
    return JSONResponse(file_object(stored))


def _refuse_oversized(request: Request) -> None:
    """Refuse before reading a body that cannot fit, rather than spooling gigabytes first."""
    limit = request.app.state.files.max_upload_bytes + MULTIPART_OVERHEAD
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise InvalidRequest("File is too large.", code="file_too_large", param="file")


async def _chunks(file: UploadFile) -> AsyncIterator[bytes]:
    while chunk := await file.read(_READ_CHUNK):
        yield chunk


def _expires_after(anchor: object, seconds: object) -> int | None:
    if anchor is None and seconds is None:
        return None
    if anchor != "created_at":
        raise InvalidRequest(
            "Invalid 'expires_after[anchor]': must be 'created_at'.",
            code="invalid_value",
            param="expires_after[anchor]",
        )
    try:
        return int(str(seconds))
    except ValueError:
        raise InvalidRequest(
            "Invalid 'expires_after[seconds]': must be an integer.",
            code="invalid_type",
            param="expires_after[seconds]",
        ) from None


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
        headers={"content-length": str(file.bytes)},
    )


routes = [
    Route("/v1/files", upload, methods=["POST"]),
    Route("/v1/files", list_files, methods=["GET"]),
    Route("/v1/files/{file_id}", retrieve, methods=["GET"]),
    Route("/v1/files/{file_id}", delete, methods=["DELETE"]),
    Route("/v1/files/{file_id}/content", content, methods=["GET"]),
]
