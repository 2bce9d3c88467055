"""Hypothesis over the line validator (SPEC §4, level 2): whatever the bytes, it only ever
answers with its outcome, and every line it accepts is one the contract allows and the worker
forwards as it was checked.

What an accepted line satisfies, read from ``validation.py``: it is a JSON object (as orjson, the
slow path's parser, reads it) whose ``custom_id`` is a string the store can hold (at most
``MAX_CUSTOM_ID`` characters, valid UTF-8, no NUL) and unique in the file, ``method`` is
``POST``, ``url`` is the batch's endpoint, ``body`` is an object with every field the endpoint
requires, a string ``model`` that is the file's one model and is served, and no ``stream: true``;
its number, offset and length slice it back out of the file; and the body the worker forwards
(``feeder._body_of``, msgspec) is that same body. A file with no error has every non-blank line
accepted, at most ``max_requests`` of them, and at least one.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchd.models import ENDPOINTS, IndexedLine
from batchd.text import MAX_CUSTOM_ID, storable
from batchd.validation import (
    MAX_REPORTED_ERRORS,
    LineValidator,
    Outcome,
    Rules,
    iter_line_runs,
)
from batchd.worker.feeder import _body_of
from tests.support.hostile import hostile_bytes, hostile_text, json_values

SERVED = frozenset({"gpt-test", "embed-test"})
FUZZ = settings(
    max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)


# -- strategies ------------------------------------------------------------------------------


@st.composite
def rules(draw: st.DrawFn) -> Rules:
    return Rules(
        endpoint=draw(st.sampled_from(list(ENDPOINTS))),
        max_requests=draw(st.sampled_from((1, 2, 3, 50_000))),
        max_embedding_inputs=draw(st.sampled_from((1, 5, 50_000))),
        model_is_served=SERVED.__contains__,
    )


def scalars() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=5),
    )


@st.composite
def request_pairs(draw: st.DrawFn, endpoint: str) -> list[tuple[str, Any]]:
    """A request as (key, value) pairs: mostly right, with fields dropped, doubled, given the
    wrong type or a hostile value, so that both paths and every error are reached."""
    models = st.one_of(st.sampled_from(sorted(SERVED | {"not-served"})), json_values(scalars()))
    body: dict[str, Any] = {"model": draw(models)}
    for name in ENDPOINTS[endpoint][1:]:
        body[name] = draw(st.one_of(st.just("hi"), st.just(["a", "b"]), json_values(scalars())))
    if draw(st.booleans()):
        body["stream"] = draw(st.one_of(st.booleans(), json_values(scalars())))
    pairs: list[tuple[str, Any]] = [
        ("custom_id", draw(st.one_of(st.sampled_from("abc"), hostile_text(), json_values()))),
        ("method", draw(st.sampled_from(("POST", "POST", "GET", "post", 1)))),
        ("url", draw(st.sampled_from((endpoint, endpoint, "/v1/other", "", None)))),
        ("body", draw(st.one_of(st.just(body), st.just(body), json_values()))),
    ]
    pairs = draw(st.permutations(pairs))
    dropped = draw(st.sets(st.integers(0, 3), max_size=2)) if draw(st.booleans()) else set()
    pairs = [pair for i, pair in enumerate(pairs) if i not in dropped]
    if pairs and draw(st.integers(0, 4)) == 0:  # a key given twice: the last one counts
        pairs.append((draw(st.sampled_from(pairs))[0], draw(json_values())))
    return pairs


def render(pairs: list[tuple[str, Any]], style: str) -> bytes:
    """A JSON object from pairs, keys repeated as given. ``ascii`` escapes lone surrogates
    (``\\ud800``), ``raw`` writes them as the bytes UTF-8 forbids."""
    ascii_only = style == "ascii"
    members = [f"{json.dumps(k)}:{json.dumps(v, ensure_ascii=ascii_only)}" for k, v in pairs]
    return ("{" + ",".join(members) + "}").encode("utf-8", "surrogatepass")


def deep(endpoint: str, depth: int) -> bytes:
    """A valid line whose body holds arrays nested ``depth`` deep."""
    fields = {name: "x" for name in ENDPOINTS[endpoint]}
    fields["model"] = "gpt-test"
    head = json.dumps({"custom_id": f"deep{depth}", "method": "POST", "url": endpoint})
    body = json.dumps(fields)[:-1] + ', "nested": ' + "[" * depth + "]" * depth + "}"
    return f'{head[:-1]}, "body": {body}}}'.encode()


@st.composite
def input_files(draw: st.DrawFn, endpoint: str) -> list[bytes]:
    """Lines (without newlines): requests in every spelling, raw hostile bytes, blank lines,
    deep nesting, numbers past any range."""
    line = st.one_of(
        st.builds(render, request_pairs(endpoint), st.sampled_from(("ascii", "raw"))),
        hostile_bytes().map(lambda raw: raw.replace(b"\n", b"")),
        st.sampled_from((b"", b"   ", b"\r", b"\t\r", b"1e400", b"-0", b"[]", b"{}", b"null")),
        st.sampled_from((10, 509, 510, 1_010, 5_000)).map(lambda depth: deep(endpoint, depth)),
    )
    return draw(st.lists(line, max_size=8))


# -- the invariants --------------------------------------------------------------------------


def run(rules: Rules, lines: list[bytes]) -> tuple[list[IndexedLine], Outcome]:
    validator = LineValidator(rules)
    accepted, offset = [], 0
    for number, raw in enumerate(lines, start=1):
        accepted += validator.feed(number, offset, [raw])
        offset += len(raw) + 1
    return accepted, validator.finish()


def assert_allowed(
    rules: Rules, accepted: list[IndexedLine], outcome: Outcome, file: bytes
) -> None:
    """Each accepted line is one the contract allows, and is sent as it was checked."""
    for indexed in accepted:
        raw = file[indexed.offset : indexed.offset + indexed.length]
        request = orjson.loads(raw)
        custom_id, body = request["custom_id"], request["body"]
        assert custom_id == indexed.custom_id
        assert isinstance(custom_id, str) and storable(custom_id, MAX_CUSTOM_ID)
        assert request["method"] == "POST" and request["url"] == rules.endpoint
        assert isinstance(body, dict) and set(ENDPOINTS[rules.endpoint]) <= set(body)
        assert body["model"] == outcome.model and body["model"] in SERVED
        assert body.get("stream") is not True
        forwarded = _body_of(raw)
        assert forwarded is not None and orjson.loads(forwarded) == body
    assert len({indexed.custom_id for indexed in accepted}) == len(accepted)


def assert_accounted(lines: list[bytes], accepted: list[IndexedLine], outcome: Outcome) -> None:
    """Every non-blank line is counted, and either accepted or reported (unless the report was
    cut at its limit); a file without errors has all its lines accepted."""
    requests = [n for n, raw in enumerate(lines, start=1) if raw.strip()]
    assert outcome.total == len(requests)
    assert len(outcome.errors) == min(outcome.error_count, MAX_REPORTED_ERRORS)
    numbers = {indexed.line for indexed in accepted}
    assert numbers <= set(requests)
    reported = {error.line for error in outcome.errors}
    if outcome.error_count == len(outcome.errors):
        assert set(requests) <= numbers | reported
    if outcome.error_count == 0:
        assert numbers == set(requests) and requests


@FUZZ
@given(data=st.data())
def test_whatever_the_lines_only_allowed_ones_are_accepted(data: st.DataObject) -> None:
    """No exception escapes, and what is accepted is allowed and accounted for."""
    chosen = data.draw(rules())
    lines = data.draw(input_files(chosen.endpoint))
    accepted, outcome = run(chosen, lines)
    file = b"\n".join(lines)
    assert_allowed(chosen, accepted, outcome, file)
    assert_accounted(lines, accepted, outcome)
    if outcome.error_count == 0:
        assert outcome.total <= chosen.max_requests


@FUZZ
@given(data=st.data())
def test_the_fast_path_agrees_with_the_slow_one(data: st.DataObject) -> None:
    """The fast path only skips work: with it turned off, the same lines are accepted and the
    same errors reported."""
    chosen = data.draw(rules())
    lines = data.draw(input_files(chosen.endpoint))
    slow = LineValidator(chosen)
    slow._fast_check = lambda raw: None  # type: ignore[method-assign]
    accepted, outcome = run(chosen, lines)
    slow_accepted, offset = [], 0
    for number, raw in enumerate(lines, start=1):
        slow_accepted += slow.feed(number, offset, [raw])
        offset += len(raw) + 1
    assert accepted == slow_accepted
    assert outcome == slow.finish()


@FUZZ
@given(
    file=st.lists(st.one_of(hostile_bytes(), st.sampled_from((b"\n", b"\r\n", b"\n\n")))).map(
        b"".join
    ),
    sizes=st.lists(st.integers(1, 64), min_size=1, max_size=8),
)
def test_lines_split_the_same_at_any_chunking(file: bytes, sizes: list[int]) -> None:
    """``iter_line_runs`` gives every line of a byte stream with its number and offset, whatever
    the chunk boundaries."""

    async def chunks() -> AsyncIterator[bytes]:
        start, turn = 0, 0
        while start < len(file):
            size = sizes[turn % len(sizes)]
            yield file[start : start + size]
            start, turn = start + size, turn + 1

    async def split() -> list[tuple[int, int, bytes]]:
        found = []
        async for number, offset, lines in iter_line_runs(chunks()):
            for i, line in enumerate(lines):
                found.append((number + i, offset, line))
                offset += len(line) + 1
        return found

    expected, offset = [], 0
    parts = file.split(b"\n")
    if parts and parts[-1] == b"":
        parts.pop()
    for number, line in enumerate(parts, start=1):
        expected.append((number, offset, line))
        offset += len(line) + 1
    assert anyio.run(split) == expected
