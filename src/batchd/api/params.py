"""Reading request parameters, with the OpenAI error for each mistake."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request

from batchd.errors import InvalidRequest


def project_of(request: Request) -> str:
    project: str = request.state.project
    return project


def int_param(request: Request, name: str, *, default: int, low: int, high: int) -> int:
    text = request.query_params.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        value = low - 1
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
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        body = None
    if not isinstance(body, dict):
        raise InvalidRequest(
            "We could not parse the JSON body of your request. The body must be a JSON object.",
            code="invalid_json",
        )
    return body
