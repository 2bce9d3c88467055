"""The streaming validator of batch input files (SPEC §4, level 2) and the line splitter."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import orjson
import pytest

from batchd.models import IndexedLine, LineError
from batchd.validation import (
    MAX_DEPTH,
    MAX_REPORTED_ERRORS,
    LineValidator,
    Outcome,
    Rules,
    iter_line_runs,
)
from batchd.worker.feeder import _body_of

CHAT = "/v1/chat/completions"
SERVED = {"gpt-test", "other-model", "embed-test"}


def rules(endpoint: str = CHAT, **overrides: Any) -> Rules:
    values: dict[str, Any] = {
        "endpoint": endpoint,
        "max_requests": 50_000,
        "max_embedding_inputs": 50_000,
        "model_is_served": SERVED.__contains__,
    }
    return Rules(**{**values, **overrides})


def line(custom_id: str = "r1", endpoint: str = CHAT, **changes: Any) -> dict[str, Any]:
    bodies: dict[str, dict[str, Any]] = {
        "/v1/chat/completions": {
            "model": "gpt-test",
            "messages": [{"role": "user", "content": "hi"}],
        },
        "/v1/completions": {"model": "gpt-test", "prompt": "hi"},
        "/v1/embeddings": {"model": "embed-test", "input": "hi"},
        "/v1/responses": {"model": "gpt-test", "input": "hi"},
        "/v1/moderations": {"model": "gpt-test", "input": "hi"},
    }
    request = {"custom_id": custom_id, "method": "POST", "url": endpoint, "body": bodies[endpoint]}
    return {**request, **changes}


def encode(request: Any) -> bytes:
    return request if isinstance(request, bytes) else orjson.dumps(request)


def validate(lines: Iterable[Any], **rule_overrides: Any) -> Outcome:
    """Feed the lines numbered from 1, as the worker would."""
    validator = LineValidator(rules(**rule_overrides))
    offset = 0
    for number, request in enumerate(lines, start=1):
        raw = encode(request)
        validator.feed(number, offset, [raw])
        offset += len(raw) + 1
    return validator.finish()


def codes(outcome: Outcome) -> list[tuple[str, str | None, int | None]]:
    return [(e.code, e.param, e.line) for e in outcome.errors]


async def chunked(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def index(data: bytes, size: int) -> list[IndexedLine]:
    """What the worker indexes of ``data`` read ``size`` bytes at a time."""
    validator = LineValidator(rules())
    runs = iter_line_runs(chunked(data, size))
    return [line async for run in runs for line in validator.feed(*run)]


# -- lines of a stream -----------------------------------------------------------------------

A, B, C, D = (encode(line(custom_id)) for custom_id in "abcd")
SAMPLE = A + b"\r\n\n  \r\n" + B + b"\n" + C + b"\r\n\n" + D


@pytest.mark.anyio
@pytest.mark.parametrize("size", [1, 2, 3, 5, 8, 13, 1 << 20])
async def test_lines_are_numbered_at_any_chunking(size: int) -> None:
    """Lines are numbered the same whatever the chunk boundaries, blank lines counted but
    skipped."""
    found = await index(SAMPLE, size)
    assert [(n.line, n.custom_id) for n in found] == [(1, "a"), (4, "b"), (5, "c"), (7, "d")]


@pytest.mark.anyio
@pytest.mark.parametrize("size", [1, 4, 7, 1 << 20])
async def test_offsets_and_lengths_slice_the_original(size: int) -> None:
    """Each line's offset and length slice it back out of the original bytes, without CR/LF."""
    found = await index(SAMPLE, size)
    assert [SAMPLE[n.offset : n.offset + n.length] for n in found] == [A, B, C, D]


@pytest.mark.anyio
async def test_a_final_line_without_newline_counts() -> None:
    """A last line with no newline is still indexed, with its offset."""
    assert await index(A + b"\n" + B, 3) == [
        IndexedLine(1, "a", 0, len(A)),
        IndexedLine(2, "b", len(A) + 1, len(B)),
    ]


@pytest.mark.anyio
async def test_trailing_newlines_and_empty_input_add_no_lines() -> None:
    """Trailing newlines add no lines; empty or blank input has none."""
    assert await index(A + b"\n\n\n", 2) == [IndexedLine(1, "a", 0, len(A))]
    assert await index(b"", 4) == []
    assert await index(b"\n \r\n\t\n", 1) == []


@pytest.mark.anyio
async def test_multibyte_characters_across_chunks() -> None:
    """A UTF-8 character split across chunks arrives whole; offsets count bytes."""
    first, second = encode(line("é")), encode(line("日本"))
    found = await index(first + b"\n" + second + b"\n", 1)
    assert [(n.custom_id, n.offset) for n in found] == [("é", 0), ("日本", len(first) + 1)]


# -- valid input -----------------------------------------------------------------------------


def test_valid_lines_are_indexed() -> None:
    """A valid line is indexed with its number, custom_id, offset and length."""
    validator = LineValidator(rules())
    raw = encode(line("first"))
    assert validator.feed(3, 17, [raw]) == [IndexedLine(3, "first", 17, len(raw))]
    outcome = validator.finish()
    assert outcome.errors == []
    assert (outcome.model, outcome.total, outcome.error_count) == ("gpt-test", 1, 0)


@pytest.mark.parametrize(
    "endpoint",
    [
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
        "/v1/responses",
        "/v1/moderations",
    ],
)
def test_each_endpoint_accepts_its_body(endpoint: str) -> None:
    """Every supported endpoint accepts a body with the fields it needs."""
    outcome = validate([line("a", endpoint), line("b", endpoint)], endpoint=endpoint)
    assert outcome.errors == []
    assert outcome.total == 2


def test_stream_false_is_fine() -> None:
    """``stream: false`` is allowed."""
    request = line()
    request["body"] = {**request["body"], "stream": False}
    assert validate([request]).errors == []


# -- every error code ------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b'"a string"', b"42", b"null"])
def test_invalid_json_line(raw: bytes) -> None:
    """A line that is not a JSON object is invalid_json_line, with no param."""
    outcome = validate([line("ok"), raw])
    assert codes(outcome) == [("invalid_json_line", None, 2)]
    assert outcome.errors[0].message == "This line is not parseable as valid JSON."


@pytest.mark.parametrize("field", ["custom_id", "method", "url", "body"])
def test_missing_required_parameter(field: str) -> None:
    """Each missing envelope field is reported with that field as param."""
    request = line()
    del request[field]
    outcome = validate([request])
    assert codes(outcome) == [("missing_required_parameter", field, 1)]


def test_all_missing_fields_reported() -> None:
    """An empty object reports all four missing fields."""
    outcome = validate([{}])
    assert codes(outcome) == [
        ("missing_required_parameter", name, 1) for name in ("custom_id", "method", "url", "body")
    ]


def test_invalid_url() -> None:
    """A url other than the batch endpoint is invalid_url."""
    outcome = validate([line(url="/v1/embeddings")])
    assert codes(outcome) == [("invalid_url", "url", 1)]
    assert CHAT in outcome.errors[0].message


@pytest.mark.parametrize(
    ("endpoint", "field"),
    [
        ("/v1/chat/completions", "model"),
        ("/v1/chat/completions", "messages"),
        ("/v1/completions", "prompt"),
        ("/v1/embeddings", "input"),
        ("/v1/responses", "input"),
        ("/v1/moderations", "input"),
    ],
)
def test_body_missing_required_field(endpoint: str, field: str) -> None:
    """A body lacking what its endpoint needs is invalid_request with param body.<field>."""
    request = line("r", endpoint)
    request["body"] = {k: v for k, v in request["body"].items() if k != field}
    outcome = validate([request], endpoint=endpoint)
    assert codes(outcome) == [("invalid_request", f"body.{field}", 1)]


def test_streaming_unsupported() -> None:
    """``stream: true`` is streaming_unsupported."""
    request = line()
    request["body"] = {**request["body"], "stream": True}
    assert codes(validate([request])) == [("streaming_unsupported", "body.stream", 1)]


def test_duplicate_custom_id() -> None:
    """A repeated custom_id is reported at each repeat, not at its first use."""
    outcome = validate([line("a"), line("b"), line("a"), line("a")])
    assert codes(outcome) == [
        ("duplicate_custom_id", "custom_id", 3),
        ("duplicate_custom_id", "custom_id", 4),
    ]


def test_mismatched_model() -> None:
    """A line naming another model than the earlier lines is mismatched_model."""
    other = line("b")
    other["body"] = {**other["body"], "model": "other-model"}
    outcome = validate([line("a"), other, line("c")])
    assert codes(outcome) == [("mismatched_model", "body.model", 2)]
    assert outcome.model == "gpt-test"


def test_model_not_found_on_every_line() -> None:
    """An unserved model is model_not_found on every line that names it."""
    requests = [line(f"r{i}") for i in range(3)]
    outcome = validate(requests, model_is_served=lambda model: False)
    assert codes(outcome) == [("model_not_found", "body.model", n) for n in (1, 2, 3)]
    assert "gpt-test" in outcome.errors[0].message


def test_model_not_found_names_the_models_served() -> None:
    """``model_not_found`` names the models served, the first ten and how many more."""
    few = validate([line()], model_is_served=lambda model: False, served_models=("a", "b"))
    many = [f"m{i:02}" for i in range(13)]
    lots = validate([line()], model_is_served=lambda model: False, served_models=many)

    assert few.errors[0].message == "The model 'gpt-test' does not exist. Models served: a, b."
    assert lots.errors[0].message.endswith("m08, m09 and 3 more.")


def test_model_must_be_a_string() -> None:
    """A non-string model is invalid_request on body.model."""
    request = line()
    request["body"] = {**request["body"], "model": 5}
    assert codes(validate([request])) == [("invalid_request", "body.model", 1)]


def test_method_must_be_post() -> None:
    """Any method but POST is invalid_request on method."""
    assert codes(validate([line(method="GET")])) == [("invalid_request", "method", 1)]


@pytest.mark.parametrize("custom_id", [7, None, ["x"]])
def test_custom_id_must_be_a_string(custom_id: Any) -> None:
    """A custom_id that is not a string is invalid_request on custom_id."""
    assert codes(validate([line(custom_id=custom_id)])) == [("invalid_request", "custom_id", 1)]


@pytest.mark.parametrize("body", ["text", [1], 3, None])
def test_body_must_be_an_object(body: Any) -> None:
    """A body that is not an object is invalid_request on body."""
    assert codes(validate([line(body=body)])) == [("invalid_request", "body", 1)]


NOT_UTF8 = (
    b'{"custom_id": "later", "method": "POST", "url": "' + CHAT.encode() + b'", '
    b'"body": {"model": "gpt-test", "messages": ["\xff"]}}'
)


def _without(field: str) -> dict[str, Any]:
    return {k: v for k, v in line("later").items() if k != field}


def _with_body(**changes: Any) -> dict[str, Any]:
    request = line("later")
    request["body"] = {k: v for k, v in {**request["body"], **changes}.items() if v != "-"}
    return request


@pytest.mark.parametrize(
    ("bad", "code", "param"),
    [
        (_without("url"), "missing_required_parameter", "url"),
        (line("later", method="GET"), "invalid_request", "method"),
        (line("later", url="/v1/embeddings"), "invalid_url", "url"),
        (line(7), "invalid_request", "custom_id"),
        (line("later", body=[1]), "invalid_request", "body"),
        (line("ok"), "duplicate_custom_id", "custom_id"),
        (_with_body(messages="-"), "invalid_request", "body.messages"),
        (_with_body(model=5), "invalid_request", "body.model"),
        (_with_body(model="other-model"), "mismatched_model", "body.model"),
        (_with_body(stream=True), "streaming_unsupported", "body.stream"),
        (NOT_UTF8, "invalid_json_line", None),
    ],
)
def test_a_fault_after_valid_lines_is_found(bad: Any, code: str, param: str | None) -> None:
    """Lines after the first are checked first against the shape of a valid line; one that does
    not fit it is checked field by field, with the same errors as anywhere else."""
    assert codes(validate([line("ok"), line("ok2"), bad])) == [(code, param, 3)]


def _set_body(request: dict[str, Any], name: str, *choices: Any) -> Callable[[random.Random], None]:
    def change(rng: random.Random) -> None:
        if isinstance(request.get("body"), dict):
            value = rng.choice(choices)
            if value == "-":
                request["body"].pop(name, None)
            else:
                request["body"][name] = value

    return change


def _set(request: dict[str, Any], name: str, *choices: Any) -> Callable[[random.Random], None]:
    def change(rng: random.Random) -> None:
        value = rng.choice(choices)
        if value == "-":
            request.pop(name, None)
        else:
            request[name] = value

    return change


def _mutated(rng: random.Random, endpoint: str, number: int, earlier: list[str]) -> bytes:
    """A line of the endpoint, valid or broken in one or two of many ways."""
    request = line(f"r{number}", endpoint)
    request["body"] = dict(request["body"])
    changes = [
        _set(request, rng.choice(["custom_id", "method", "url", "body"]), "-"),
        _set(request, "method", "GET", 5, "post"),
        _set(request, "url", "/v1/embeddings", CHAT, "/v1/completions", None),
        _set(request, "custom_id", 7, None, f"é-{number}", *earlier[-3:]),
        _set(request, "body", ["x"], "text", None, 3),
        _set(request, "extra", {"nested": [1, 2.5, "ü"]}),
        _set_body(request, "model", "other-model", "unserved", 5, None, "-"),
        _set_body(request, rng.choice(["messages", "input", "prompt"]), "-", None),
        _set_body(request, "stream", True, False, "yes", 1, None),
        _set_body(request, "input", ["a", "b"], [[1, 2], [3]], [1, 2, 3], "x", []),
        _set_body(request, "messages", [{"role": "user", "content": "日本語"}]),
    ]
    for _ in range(rng.choice([0, 0, 1, 1, 2])):
        rng.choice(changes)(rng)
    raw = orjson.dumps(request)
    if rng.random() < 0.1:  # broken bytes: cut short, not UTF-8, a trailing comma
        raw = rng.choice([raw[: len(raw) // 2], raw.replace(b"r", b"\xff", 1), raw[:-1] + b",}"])
    return raw


@pytest.mark.parametrize("endpoint", [CHAT, "/v1/embeddings"])
@pytest.mark.parametrize("seed", range(20))
def test_the_fast_path_changes_no_outcome(
    endpoint: str, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever the lines, and however they come in runs, validating them finds the same errors,
    totals and indexed lines as the field-by-field checks alone."""
    rng = random.Random(seed)
    earlier: list[str] = []
    lines = []
    for number in range(1, 60):
        raw = _mutated(rng, endpoint, number, earlier)
        lines.append(rng.choice([raw + b"\r", b"", b"  "]) if rng.random() < 0.05 else raw)
        earlier.append(f"r{number}")
    runs = []
    while lines:
        size = rng.choice([1, 1, 2, 3, 8])
        runs.append(lines[:size])
        lines = lines[size:]

    def outcome() -> tuple[Outcome, list[IndexedLine]]:
        validator = LineValidator(rules(endpoint, max_requests=50, max_embedding_inputs=70))
        indexed: list[IndexedLine] = []
        number, offset = 1, 0
        for run in runs:
            indexed += validator.feed(number, offset, run)
            number += len(run)
            offset += sum(len(line) + 1 for line in run)
        return validator.finish(), indexed

    fast = outcome()
    monkeypatch.setattr(LineValidator, "_fast_check", lambda self, raw: None)
    assert fast == outcome()


def test_a_line_with_other_than_ascii_is_valid_when_it_is_utf8() -> None:
    """Text in any language passes (such lines take the field-by-field checks)."""
    request = line("naïve")
    request["body"] = {**request["body"], "messages": [{"role": "user", "content": "日本語"}]}
    outcome = validate([line("ok"), request])
    assert (outcome.errors, outcome.total) == ([], 2)


def test_too_many_requests() -> None:
    """Going over max_requests is reported once, at the first line over the limit."""
    outcome = validate([line(f"r{i}") for i in range(5)], max_requests=3)
    assert codes(outcome) == [("invalid_request", None, 4)]
    assert "3" in outcome.errors[0].message


def test_exactly_max_requests_is_fine() -> None:
    """A file of exactly max_requests lines passes."""
    assert validate([line(f"r{i}") for i in range(3)], max_requests=3).errors == []


def embedding(custom_id: str, given: Any) -> dict[str, Any]:
    request = line(custom_id, "/v1/embeddings")
    request["body"] = {"model": "embed-test", "input": given}
    return request


@pytest.mark.parametrize(
    ("inputs", "limit", "too_many"),
    [
        (["a", ["b", "c"]], 3, False),  # 1 + 2
        (["a", ["b", "c", "d"]], 3, True),  # 1 + 3
        ([[1, 2, 3], [1, 2]], 2, False),  # two token lists, one input each
        ([[[1, 2], [3]], "x"], 2, True),  # a list of token lists counts each
    ],
)
def test_too_many_embedding_inputs(inputs: list[Any], limit: int, too_many: bool) -> None:
    """Embedding inputs are counted across the file against max_embedding_inputs."""
    requests = [embedding(f"e{i}", given) for i, given in enumerate(inputs)]
    outcome = validate(requests, endpoint="/v1/embeddings", max_embedding_inputs=limit)
    assert codes(outcome) == ([("invalid_request", None, None)] if too_many else [])


def test_empty_file() -> None:
    """A file without lines fails with invalid_request on input_file_id."""
    outcome = LineValidator(rules()).finish()
    assert outcome.errors == [
        LineError("invalid_request", "The input file contains no requests.", "input_file_id")
    ]


# -- reporting -------------------------------------------------------------------------------


def test_every_bad_line_is_reported() -> None:
    """Every bad line is reported with its own 1-based line number, in order."""
    stream = line("s")
    stream["body"] = {**stream["body"], "stream": True}
    outcome = validate(
        [line("a"), b"oops", line("b", url="/v1/x"), line("c"), line("a"), stream, {}]
    )
    assert [(e.code, e.line) for e in outcome.errors] == [
        ("invalid_json_line", 2),
        ("invalid_url", 3),
        ("duplicate_custom_id", 5),
        ("streaming_unsupported", 6),
        ("missing_required_parameter", 7),
        ("missing_required_parameter", 7),
        ("missing_required_parameter", 7),
        ("missing_required_parameter", 7),
    ]
    assert outcome.error_count == len(outcome.errors)


def test_bad_lines_are_not_indexed() -> None:
    """feed returns the good lines of a run, not the bad ones."""
    lines = [b"oops", encode(line(method="PUT")), encode(line("ok"))]
    indexed = LineValidator(rules()).feed(1, 0, lines)
    assert [(n.line, n.custom_id) for n in indexed] == [(3, "ok")]


def test_reported_errors_are_capped() -> None:
    """At most MAX_REPORTED_ERRORS errors are kept; error_count keeps the true number."""
    outcome = validate([b"oops"] * (MAX_REPORTED_ERRORS + 25))
    assert len(outcome.errors) == MAX_REPORTED_ERRORS
    assert outcome.error_count == MAX_REPORTED_ERRORS + 25
    assert outcome.errors[-1].line == MAX_REPORTED_ERRORS


@pytest.mark.anyio
async def test_validating_a_stream_end_to_end() -> None:
    """Lines split from a chunked stream validate with their physical line numbers."""
    data = b"\n".join([encode(line("a")), b"", encode(line("b")), b"bad", encode(line("a"))])
    validator = LineValidator(rules())
    indexed = []
    async for number, offset, lines in iter_line_runs(chunked(data + b"\r\n", 7)):
        indexed += validator.feed(number, offset, lines)
    outcome = validator.finish()
    assert [(i.line, i.custom_id) for i in indexed] == [(1, "a"), (3, "b")]
    assert codes(outcome) == [
        ("invalid_json_line", None, 4),
        ("duplicate_custom_id", "custom_id", 5),
    ]
    for item in indexed:
        assert (
            orjson.loads(data[item.offset : item.offset + item.length])["custom_id"]
            == item.custom_id
        )


@pytest.mark.parametrize("custom_id", ["a\u0000b", "c" * 513])
def test_a_custom_id_the_store_cannot_keep_is_an_invalid_line(custom_id: str) -> None:
    """A NUL (PostgreSQL refuses it in text) or more than 512 characters: the line is invalid,
    whether it came down the fast path or the slow one; the lines around it are fine."""
    outcome = validate([line("r1"), line(custom_id), line("r3")])
    assert codes(outcome) == [("invalid_request", "custom_id", 2)]


def test_a_custom_id_of_512_characters_is_fine() -> None:
    assert validate([line("c" * 512)]).error_count == 0


def nested(depth: int) -> bytes:
    """A valid chat line whose body holds arrays ``depth`` deep."""
    head = encode(line("deep"))[:-2]  # without the closing braces of body and line
    return head + b', "nested": ' + b"[" * depth + b"]" * depth + b"}}"


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 1_010, 2_000, 100_000])
def test_a_line_nested_too_deep_is_invalid_json_not_a_crash(depth: int) -> None:
    """Past MAX_DEPTH a line is invalid_json_line. (msgspec raised RecursionError from about
    1,000 levels, which escaped the fast path and stopped the worker's validation task each time
    it was retried; up to orjson's 1,024 a line passed and then failed the worker's reads.)"""
    assert codes(validate([line("ok"), nested(depth)])) == [("invalid_json_line", None, 2)]


def test_a_line_at_the_depth_limit_is_valid_and_forwarded() -> None:
    """Nested exactly MAX_DEPTH levels (the line, its body and the arrays): valid, and the worker
    reads the body it forwards."""
    raw = nested(MAX_DEPTH - 2)
    validator = LineValidator(rules())
    assert [n.custom_id for n in validator.feed(1, 0, [raw])] == ["deep"]
    assert validator.finish().errors == []
    body = _body_of(raw)
    assert body is not None and orjson.loads(body) == orjson.loads(raw)["body"]
