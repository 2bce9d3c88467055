"""The lines of output and error files (SPEC §3), and the usage they carry.

An upstream's JSON body is spliced into the line as it came, not re-serialised: its line breaks
become spaces, and a body that is not a JSON object is wrapped as an error object.
"""

from __future__ import annotations

import codecs
from typing import Any

import msgspec
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
    """The line for an HTTP answer: its state (2xx succeeds), the line, and the usage it reports.

    A 2xx answer that cannot be kept as it came (not a JSON object, not UTF-8, token counts past
    what batchd can add up) fails its own line as ``invalid_response``: its neighbours go on."""
    succeeded = 200 <= status < 300
    try:
        _check_utf8(body)
        usage = _answer.decode(body).usage
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        # Not JSON, not an object, or nested too deep for any reader of the output file.
        if succeeded:
            kind = "UTF-8" if isinstance(exc, UnicodeDecodeError) else "a JSON object"
            if isinstance(exc, RecursionError):
                kind = "a JSON object of a depth batchd can read back"
            return _invalid(custom_id, status, f"its body is not {kind}: {_excerpt(body)}")
        usage = None
        body = orjson.dumps(
            {"error": {"message": body.decode("utf-8", "replace")[:2000], "type": "upstream_error"}}
        )
    else:
        if b"\n" in body or b"\r" in body:
            # Valid JSON holds line breaks only between tokens (in strings they are escaped),
            # so a pretty-printed body goes on one line as spaces, and keeps every value.
            body = body.replace(b"\r", b" ").replace(b"\n", b" ")
    counted = usage_of(usage) if succeeded else None
    if counted is not None and not _countable(counted):
        return _invalid(custom_id, status, f"its usage holds a token count past {MAX_TOKENS:,}")
    response = {
        "status_code": status,
        "request_id": request_id or ids.request_id(),
        "body": orjson.Fragment(body),
    }
    line = orjson.dumps(
        {"id": ids.batch_request_id(), "custom_id": custom_id, "response": response, "error": None}
    )
    state = RequestState.SUCCEEDED if succeeded else RequestState.FAILED
    return state, line, counted


MAX_TOKENS = 2**40
"""The most tokens one answer may report in any count. Far past any real request, and low enough
that a batch's sums stay well inside the store's 64-bit integers: a count past 2^63 - 1 made
every group commit that held it fail."""

UTF8_CHECK_CHUNK = 1 << 20
"""Bytes of an answer checked for UTF-8 at once: a whole 60 MB answer decoded in one go would
make a string of up to four times its size."""


def _check_utf8(body: bytes) -> None:
    """Raise UnicodeDecodeError unless ``body`` is UTF-8 (msgspec does not check the strings it
    skips), without holding more than a chunk of it decoded."""
    if body.isascii():
        return
    decoder = codecs.getincrementaldecoder("utf-8")()
    view = memoryview(body)
    for start in range(0, len(view), UTF8_CHECK_CHUNK):
        decoder.decode(view[start : start + UTF8_CHECK_CHUNK])
    decoder.decode(b"", final=True)


def _countable(usage: Usage) -> bool:
    return all(0 <= count <= MAX_TOKENS for count in msgspec.structs.astuple(usage))


def _invalid(custom_id: str, status: int, problem: str) -> tuple[RequestState, bytes, None]:
    message = f"The model server answered {status}, but {problem}."
    return RequestState.FAILED, unanswered_line(custom_id, "invalid_response", message), None


def _excerpt(body: bytes, limit: int = 200) -> str:
    text = body[:limit].decode("utf-8", "replace")
    return repr(text + "…" if len(body) > limit else text)


class _Answer(msgspec.Struct):
    """All of an answer that batchd reads: its usage. The rest of the body is checked to be JSON
    and skipped, not built: an embedding answer's floats cost 40 µs to parse (1,536 of them)
    and 15 µs to skip."""

    usage: Any = None


_answer = msgspec.json.Decoder(_Answer)


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


def usage_of(usage: object) -> Usage | None:
    """Token counts from the ``usage`` of a chat/completions/embeddings (``prompt_tokens``…) or
    responses (``input_tokens``…) answer."""
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
