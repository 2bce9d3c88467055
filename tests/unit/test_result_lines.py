"""Output and error lines (SPEC §3) and the usage they carry."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from openai.types.chat import ChatCompletion

from batchd.models import RequestState, Usage
from batchd.result_lines import (
    BATCH_CANCELLED,
    BATCH_EXPIRED,
    answered_line,
    skipped_line,
    unanswered_line,
    usage_of,
)

CHAT_COMPLETION: dict[str, Any] = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1_700_000_000,
    "model": "gpt-test",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello!"},
            "finish_reason": "stop",
            "logprobs": None,
        }
    ],
    "usage": {
        "prompt_tokens": 12,
        "completion_tokens": 5,
        "total_tokens": 17,
        "prompt_tokens_details": {"cached_tokens": 4},
        "completion_tokens_details": {"reasoning_tokens": 2},
    },
}

RESPONSES_USAGE: dict[str, Any] = {
    "input_tokens": 30,
    "input_tokens_details": {"cached_tokens": 10},
    "output_tokens": 20,
    "output_tokens_details": {"reasoning_tokens": 8},
    "total_tokens": 50,
}

UPSTREAM_ERROR: dict[str, Any] = {
    "error": {
        "message": "Invalid model",
        "type": "invalid_request_error",
        "param": "model",
        "code": None,
    }
}


def assert_line_shape(line: bytes) -> dict[str, Any]:
    """One JSON object on one line with exactly the SPEC §3 keys; the parsed line."""
    assert b"\n" not in line
    assert b"\r" not in line
    parsed = orjson.loads(line)
    assert set(parsed) == {"id", "custom_id", "response", "error"}
    assert parsed["id"].startswith("batch_req_")
    assert isinstance(parsed["custom_id"], str)
    if parsed["response"] is None:
        assert set(parsed["error"]) == {"code", "message"}
        assert all(isinstance(v, str) for v in parsed["error"].values())
    else:
        assert parsed["error"] is None
        assert set(parsed["response"]) == {"status_code", "request_id", "body"}
        assert isinstance(parsed["response"]["status_code"], int)
        assert isinstance(parsed["response"]["request_id"], str)
        assert isinstance(parsed["response"]["body"], dict)
    return parsed


def test_answered_200_chat() -> None:
    """A 2xx answer succeeds, its body is spliced as an object, its usage extracted."""
    body = orjson.dumps(CHAT_COMPLETION)
    state, line, usage = answered_line("req-1", 200, "req_upstream", body)
    parsed = assert_line_shape(line)
    assert state is RequestState.SUCCEEDED
    assert parsed["custom_id"] == "req-1"
    assert parsed["response"]["status_code"] == 200
    assert parsed["response"]["request_id"] == "req_upstream"
    assert parsed["response"]["body"] == CHAT_COMPLETION
    assert body in line  # spliced as it came, not re-serialised
    completion = ChatCompletion.model_validate(parsed["response"]["body"])
    assert completion.choices[0].message.content == "Hello!"
    assert usage == Usage(
        input_tokens=12, cached_tokens=4, output_tokens=5, reasoning_tokens=2, total_tokens=17
    )


def test_answered_200_responses_usage() -> None:
    """Responses-style usage (input/output tokens) is extracted too."""
    body = orjson.dumps({"id": "resp_1", "object": "response", "usage": RESPONSES_USAGE})
    state, _, usage = answered_line("r", 200, None, body)
    assert state is RequestState.SUCCEEDED
    assert usage == Usage(
        input_tokens=30, cached_tokens=10, output_tokens=20, reasoning_tokens=8, total_tokens=50
    )


def test_answered_without_request_id_gets_one() -> None:
    """A missing upstream request id is replaced by a generated one."""
    _, line, _ = answered_line("r", 200, None, b"{}")
    assert orjson.loads(line)["response"]["request_id"].startswith("req_")


@pytest.mark.parametrize("status", [400, 404, 422, 429, 500])
def test_answered_error_status(status: int) -> None:
    """A non-2xx answer fails, keeps its status and error body, and reports no usage."""
    body = orjson.dumps({**UPSTREAM_ERROR, "usage": {"prompt_tokens": 3}})
    state, line, usage = answered_line("r", status, "req_x", body)
    parsed = assert_line_shape(line)
    assert state is RequestState.FAILED
    assert parsed["response"]["status_code"] == status
    assert parsed["response"]["body"]["error"] == UPSTREAM_ERROR["error"]
    assert usage is None


@pytest.mark.parametrize(
    "body", [b"Bad Gateway", b"<html>oops</html>", b"", b"[1, 2]", b'"text"', b"\xff\xfe"]
)
def test_answered_non_object_body_is_wrapped(body: bytes) -> None:
    """A body that is not a JSON object becomes an error object holding the text."""
    state, line, usage = answered_line("r", 502, None, body)
    parsed = assert_line_shape(line)
    assert state is RequestState.FAILED
    error = parsed["response"]["body"]["error"]
    assert error["type"] == "upstream_error"
    assert error["message"] == body.decode("utf-8", "replace")
    assert usage is None


def test_a_deeply_nested_error_answer_is_kept_as_its_text() -> None:
    """A 4xx nested past what a reader can parse is wrapped as text, not a RecursionError."""
    body = b'{"error": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    state, line, _ = answered_line("r", 400, None, body)

    assert state is RequestState.FAILED
    assert assert_line_shape(line)["response"]["body"]["error"]["type"] == "upstream_error"


def test_answered_long_text_body_is_truncated() -> None:
    """A huge non-JSON body is cut to 2000 characters in the wrapped message."""
    _, line, _ = answered_line("r", 500, None, b"x" * 10_000)
    assert len(orjson.loads(line)["response"]["body"]["error"]["message"]) == 2000


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"OK", "is not a JSON object: 'OK'"),
        (b"[1, 2]", "is not a JSON object"),
        (b'{"a": "\x00"}', "is not a JSON object"),  # a raw NUL: not JSON
        (b'{"object": "list", "note": "\xff"}', "is not UTF-8"),
        (b'{"usage": {"prompt_tokens": "\xff"}}', "is not UTF-8"),
        (b'{"x": ' + b"[" * 5000 + b"]" * 5000 + b"}", "of a depth batchd can read back"),
    ],
)
def test_a_2xx_answer_that_cannot_be_kept_fails_its_line(body: bytes, problem: str) -> None:
    """A 2xx whose body is not a UTF-8 JSON object is the line's error, not an output line that
    would break every reader of the output file."""
    state, line, usage = answered_line("r", 200, None, body)
    line.decode("utf-8")
    parsed = assert_line_shape(line)
    assert (state, usage) == (RequestState.FAILED, None)
    assert parsed["response"] is None
    assert parsed["error"]["code"] == "invalid_response"
    assert parsed["error"]["message"].startswith("The model server answered 200, but its body")
    assert problem in parsed["error"]["message"]


@pytest.mark.parametrize(
    "usage",
    [
        {"prompt_tokens": 2**63},
        {"prompt_tokens": 1, "completion_tokens": 2**64 + 5},
        {"input_tokens": 3, "total_tokens": 2**41},
        {"prompt_tokens": 1, "prompt_tokens_details": {"cached_tokens": 2**63 - 1}},
        {"prompt_tokens": -5},
    ],
)
def test_a_token_count_the_store_cannot_add_up_fails_its_line(usage: dict[str, Any]) -> None:
    """Counts past 2^40 (or below zero) would overflow a batch's 64-bit sums: the line fails as
    ``invalid_response``, and no usage is counted."""
    state, line, counted = answered_line("r", 200, "req_1", json.dumps({"usage": usage}).encode())
    parsed = assert_line_shape(line)
    assert (state, counted) == (RequestState.FAILED, None)
    assert parsed["error"]["code"] == "invalid_response"
    assert "token count past 1,099,511,627,776" in parsed["error"]["message"]


def test_a_large_count_within_bounds_is_kept() -> None:
    state, _, counted = answered_line(
        "r", 200, None, orjson.dumps({"usage": {"total_tokens": 2**40}})
    )
    assert state is RequestState.SUCCEEDED
    assert counted is not None and counted.total_tokens == 2**40


def test_utf8_is_checked_across_chunk_boundaries() -> None:
    """A long answer is checked in chunks: a character split between two is still whole, and a
    broken one at the very end is still found."""
    text = ("é" * (1 << 20)).encode()  # two bytes each: chunk edges fall inside characters
    body = b'{"text": "' + text + b'"}'
    assert answered_line("r", 200, None, body)[0] is RequestState.SUCCEEDED
    assert answered_line("r", 200, None, body[:-2] + b'\xc3"}')[0] is RequestState.FAILED


def test_an_answer_in_utf8_beyond_ascii_is_spliced_as_it_came() -> None:
    body = '{"choices": [{"text": "naïve café ☕"}], "usage": {"prompt_tokens": 3}}'.encode()
    _, line, usage = answered_line("r", 200, None, body)
    assert body in line
    assert usage is not None and usage.input_tokens == 3


def test_an_embedding_answer_gives_its_usage() -> None:
    body = orjson.dumps(
        {
            "object": "list",
            "data": [{"object": "embedding", "index": 0, "embedding": [0.25] * 1536}],
            "usage": {"prompt_tokens": 8, "total_tokens": 8},
        }
    )
    _, line, usage = answered_line("r", 200, None, body)
    assert body in line
    assert usage == Usage(input_tokens=8, total_tokens=8)


@pytest.mark.parametrize("separator", [b"\n", b"\r\n", b"\r"])
def test_answered_multiline_body_is_reserialised(separator: bytes) -> None:
    """A pretty-printed body is written again on one line, with the same content."""
    body = orjson.dumps(CHAT_COMPLETION, option=orjson.OPT_INDENT_2).replace(b"\n", separator)
    body += separator
    _, line, usage = answered_line("r", 200, None, body)
    parsed = assert_line_shape(line)
    assert parsed["response"]["body"] == CHAT_COMPLETION
    assert usage is not None
    assert usage.total_tokens == 17


def test_answered_custom_id_is_escaped() -> None:
    """A custom_id with quotes, newlines and non-ASCII survives as a JSON string."""
    custom_id = 'a"b\nc\\d é'
    _, line, _ = answered_line(custom_id, 200, None, b"{}")
    assert assert_line_shape(line)["custom_id"] == custom_id


def test_lines_have_unique_ids() -> None:
    """Each line gets a fresh batch_req_ id."""
    ids = {orjson.loads(answered_line("r", 200, None, b"{}")[1])["id"] for _ in range(50)}
    assert len(ids) == 50


def test_unanswered_line() -> None:
    """A request without an HTTP answer has response null and the error code and message."""
    line = unanswered_line("r9", "request_timeout", "No answer in time.")
    parsed = assert_line_shape(line)
    assert parsed["custom_id"] == "r9"
    assert parsed["response"] is None
    assert parsed["error"] == {"code": "request_timeout", "message": "No answer in time."}


@pytest.mark.parametrize(
    ("state", "expected"),
    [(RequestState.EXPIRED, BATCH_EXPIRED), (RequestState.CANCELLED, BATCH_CANCELLED)],
)
def test_skipped_line(state: RequestState, expected: tuple[str, str]) -> None:
    """Lines closed by expiry or cancel carry batch_expired or batch_cancelled."""
    parsed = assert_line_shape(skipped_line("r", state))
    assert parsed["response"] is None
    assert (parsed["error"]["code"], parsed["error"]["message"]) == expected


def test_batch_expired_message_matches_openai() -> None:
    """The batch_expired message is the one OpenAI sends."""
    assert BATCH_EXPIRED == (
        "batch_expired",
        "This request could not be executed before the completion window expired.",
    )


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({}, None),
        ({"usage": None}, None),
        ({"usage": "lots"}, None),
        ({"usage": {"prompt_tokens": 8, "total_tokens": 8}}, Usage(8, 0, 0, 0, 8)),
        ({"usage": {"prompt_tokens": 3, "completion_tokens": 4}}, Usage(3, 0, 4, 0, 7)),
        (
            {"usage": {"prompt_tokens": 3, "prompt_tokens_details": None, "total_tokens": 3}},
            Usage(3, 0, 0, 0, 3),
        ),
        ({"usage": {"prompt_tokens": "many", "total_tokens": 1.5}}, Usage(0, 0, 0, 0, 0)),
    ],
)
def test_usage_of(body: dict[str, Any], expected: Usage | None) -> None:
    """Usage is read leniently: missing or non-integer counts are zero, totals derived."""
    assert usage_of(body.get("usage")) == expected


@pytest.mark.parametrize(
    "usage",
    [
        {"prompt_tokens": 3, "prompt_tokens_details": 5},
        {"completion_tokens": 3, "completion_tokens_details": ["x"]},
    ],
)
def test_answered_line_tolerates_odd_token_details(usage: dict[str, Any]) -> None:
    """Token-detail fields that are not objects count as zero instead of failing the line."""
    state, line, _ = answered_line("r", 200, None, orjson.dumps({"usage": usage}))
    assert state is RequestState.SUCCEEDED
    assert_line_shape(line)
