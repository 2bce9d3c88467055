"""The lines of output and error files (SPEC §3), and the usage they carry.

An upstream's JSON body is spliced into the line as it came, not re-serialised, unless it is not a
single-line JSON object (then it is parsed and written again, or wrapped as an error object).
"""

from __future__ import annotations

from typing import Any

import orjson

from batchd import ids
from batchd.models import RequestState, Usage

BATCH_EXPIRED = (
    "batch_expired",
    "This request could not be executed before the completion window expired.",
)
BATCH_CANCELLED = (
    "batch_cancelled",
    "This request was not executed because the batch was cancelled.",
)


def answered_line(
    custom_id: str, status: int, request_id: str | None, body: bytes
) -> tuple[RequestState, bytes, Usage | None]:
    """The line for an HTTP answer: its state (2xx succeeds), the line, and the usage it reports."""
    parsed = _parse_object(body)
    if parsed is None:
        parsed = {
            "error": {"message": body.decode("utf-8", "replace")[:2000], "type": "upstream_error"}
        }
        body = orjson.dumps(parsed)
    elif b"\n" in body or b"\r" in body:
        body = orjson.dumps(parsed)
    succeeded = 200 <= status < 300
    response = {
        "status_code": status,
        "request_id": request_id or ids.request_id(),
        "body": orjson.Fragment(body),
    }
    line = orjson.dumps(
        {"id": ids.batch_request_id(), "custom_id": custom_id, "response": response, "error": None}
    )
    state = RequestState.SUCCEEDED if succeeded else RequestState.FAILED
    return state, line, usage_of(parsed) if succeeded else None


def unanswered_line(custom_id: str, code: str, message: str) -> bytes:
    """The line for a request that never got an HTTP answer."""
    return orjson.dumps(
        {
            "id": ids.batch_request_id(),
            "custom_id": custom_id,
            "response": None,
            "error": {"code": code, "message": message},
        }
    )


def skipped_line(custom_id: str, state: RequestState) -> bytes:
    code, message = BATCH_EXPIRED if state is RequestState.EXPIRED else BATCH_CANCELLED
    return unanswered_line(custom_id, code, message)


def usage_of(body: dict[str, Any]) -> Usage | None:
    """Token counts from a chat/completions/embeddings (``prompt_tokens``…) or responses
    (``input_tokens``…) answer."""
    usage = body.get("usage")
    if not isinstance(usage, dict):
        return None
    input_tokens = _int(_either(usage, "prompt_tokens", "input_tokens"))
    output_tokens = _int(_either(usage, "completion_tokens", "output_tokens"))
    return Usage(
        input_tokens=input_tokens,
        cached_tokens=_detail(
            usage, "prompt_tokens_details", "input_tokens_details", "cached_tokens"
        ),
        output_tokens=output_tokens,
        reasoning_tokens=_detail(
            usage, "completion_tokens_details", "output_tokens_details", "reasoning_tokens"
        ),
        total_tokens=_int(usage.get("total_tokens", input_tokens + output_tokens)),
    )


def _either(usage: dict[str, Any], name: str, other: str) -> object:
    """``name`` when present (even if null), else ``other``."""
    return usage[name] if name in usage else usage.get(other)


def _detail(usage: dict[str, Any], name: str, other: str, count: str) -> int:
    """``count`` from the first of ``name``, ``other`` that holds an object; servers differ in
    which they send."""
    details = usage.get(name)
    if not isinstance(details, dict):
        details = usage.get(other)
        if not isinstance(details, dict):
            return 0
    return _int(details.get(count))


def _int(value: object) -> int:
    return value if isinstance(value, int) else 0


def _parse_object(body: bytes) -> dict[str, Any] | None:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return parsed if isinstance(parsed, dict) else None
