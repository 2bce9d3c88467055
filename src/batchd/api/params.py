"""Reading request parameters, with the OpenAI error for each mistake."""

from __future__ import annotations

import re
from typing import Any, NamedTuple

import orjson
from starlette.requests import Request

from batchd.errors import InvalidRequest, RequestTooLarge

_DECIMAL = re.compile(r"-?[0-9]{1,18}")
"""An integer as a query spells it: not ``1_0``, `` 5``, ``+5`` or Arabic-Indic digits, which
int() takes. More digits are past every range here (and int() refuses past 4,300)."""


class Bounds(NamedTuple):
    """An integer query parameter's default and its inclusive range."""

    default: int
    low: int
    high: int


def project_of(request: Request) -> str:
    project: str = request.state.project
    return project


def decimal(text: str) -> int | None:
    """The integer ``text`` spells in plain decimal digits, or None."""
    return int(text) if _DECIMAL.fullmatch(text) else None


def int_param(request: Request, name: str, *, default: int, low: int, high: int) -> int:
    text = request.query_params.get(name)
    if text is None:
        return default
    value = decimal(text)
    value = low - 1 if value is None else value
    if not low <= value <= high:
        raise InvalidRequest(
            f"Invalid '{name}': must be an integer from {low} to {high}.",
            code="invalid_value",
            param=name,
        )
    return value


def choice_param(request: Request, name: str, *, default: str, choices: tuple[str, ...]) -> str:
    value = request.query_params.get(name, default)
    if value not in choices:
        raise InvalidRequest(
            f"Invalid '{name}': must be one of {', '.join(choices)}.",
            code="invalid_value",
            param=name,
        )
    return value


async def json_object(request: Request) -> dict[str, Any]:
    try:
        body = orjson.loads(await _capped_body(request))
    except orjson.JSONDecodeError:
        body = None
    if not isinstance(body, dict):
        raise InvalidRequest(
            "We could not parse the JSON body of your request. The body must be a JSON object.",
            code="invalid_json",
        )
    return body


async def _capped_body(request: Request) -> bytes:
    """The body, refused as soon as it is known to be past ``max_request_bytes``: from its
    Content-Length before a byte is read, else as the bytes arrive."""
    limit: int = request.app.state.settings.max_request_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> RequestTooLarge:
    return RequestTooLarge(
        f"The request body is larger than {limit:,} bytes (max_request_bytes).",
        code="request_too_large",
    )
