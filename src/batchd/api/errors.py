"""The one place where exceptions become responses, always in the OpenAI error envelope."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route

from batchd.api.schemas import error_body
from batchd.errors import ApiError

log = logging.getLogger("batchd.api")

_HTTP_MESSAGES = {404: "Unknown request URL.", 405: "Method not allowed for this URL."}


def envelope(
    status: int,
    message: str,
    type_: str,
    *,
    param: str | None = None,
    code: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    return Response(
        orjson.dumps(error_body(message, type_, param, code)),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


async def api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return envelope(
        exc.status_code, exc.message, exc.type, param=exc.param, code=exc.code, headers=exc.headers
    )


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = _HTTP_MESSAGES.get(exc.status_code, exc.detail)
    headers = exc.headers
    if exc.status_code == 405:
        headers = {**(headers or {}), "Allow": _allowed_methods(request)}
    return envelope(exc.status_code, message, "invalid_request_error", headers=headers)


def _allowed_methods(request: Request) -> str:
    """Every method the URL answers. Starlette's own ``Allow`` names only those of the first
    route whose path matched, and a URL such as ``/v1/files`` has a route per method."""
    methods: set[str] = set()
    for route in request.app.routes:
        if isinstance(route, Route) and route.matches(request.scope)[0] is not Match.NONE:
            methods |= route.methods or set()
    return ", ".join(sorted(methods))


async def unexpected_error(request: Request, exc: Exception) -> Response:
    log.error("unhandled_error", exc_info=exc, extra={"path": request.url.path})
    return envelope(500, "The server had an error while processing your request.", "server_error")


EXCEPTION_HANDLERS = {
    ApiError: api_error,
    HTTPException: http_error,
    Exception: unexpected_error,
}
