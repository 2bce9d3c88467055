"""The streaming validator of batch input files, shared by the worker and ``batchd validate``.

It reads a line at a time and keeps only what it must (the custom_ids seen), so a file of any
size validates in bounded memory, and it reports every bad line rather than the first.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import orjson

from batchd.models import ENDPOINTS, IndexedLine, LineError
from batchd.text import MAX_CUSTOM_ID, storable

LineRun = tuple[int, int, list[bytes]]
"""Lines of a file in order: the number of the first, the byte offset where it starts, the lines."""

MAX_REPORTED_ERRORS = 1000
"""Enough to fix a file by; more would bloat every read of the batch object."""
MODELS_NAMED = 10
"""How many of the models served a ``model_not_found`` names."""

MAX_DEPTH = 512
"""How deeply a line may nest arrays and objects. msgspec, which the worker reads lines with,
raises RecursionError near 1,000 levels less the caller's stack (orjson refuses past 1,024): a
line deeper than this could pass validation and then fail every time the worker read it."""
ENVELOPE_FIELDS_IN_ORDER = ("custom_id", "method", "url", "body")
ENVELOPE_FIELDS = frozenset(ENVELOPE_FIELDS_IN_ORDER)


def _line_shape(endpoint: str) -> msgspec.json.Decoder[Any]:
    """A decoder that accepts exactly the lines whose envelope and body have every required field
    with the type the checks below want. It builds no Python objects for what it only checks is
    there (``Raw``), except embedding inputs, which are counted."""
    required_type: Any = Any if endpoint == "/v1/embeddings" else msgspec.Raw
    body = msgspec.defstruct(
        "Body",
        [
            ("model", str),
            *((name, required_type) for name in ENDPOINTS[endpoint] if name != "model"),
            ("stream", Any, None),
        ],
    )
    envelope = msgspec.defstruct(
        "Envelope", [("custom_id", str), ("method", str), ("url", str), ("body", body)]
    )
    return msgspec.json.Decoder(envelope)


@dataclass(frozen=True)
class Rules:
    endpoint: str
    max_requests: int
    max_embedding_inputs: int
    model_is_served: Callable[[str], bool]
    served_models: Sequence[str] = ()
    """Named in ``model_not_found``, when they are known."""


@dataclass
class Outcome:
    """What validation found: the lines to index, or the reasons the batch fails."""

    errors: list[LineError] = field(default_factory=list)
    model: str | None = None
    total: int = 0
    error_count: int = 0

    def report(self, error: LineError) -> None:
        self.error_count += 1
        if len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.append(error)


class LineValidator:
    """Feed it the lines of one input file, in order; read ``outcome`` at the end.

    A line is first decoded against the shape of a valid line, in C, and given a few checks of
    values (the fast path). Any line that does not pass them, and every line that is not ASCII, is
    then checked field by field (the slow path), which finds every fault and builds its message.

    The fast path checks the syntax of the values it skips but not their UTF-8 (hence ASCII lines
    only) and not the range of their numbers: a body holding ``1e400`` passes it, and the model
    server is the one to refuse it.
    """

    def __init__(self, rules: Rules) -> None:
        self.rules = rules
        self.outcome = Outcome()
        self._custom_ids: set[str] = set()
        self._embedding_inputs = 0
        self._model_served = False
        self._required = ENDPOINTS[rules.endpoint]
        self._counts_inputs = rules.endpoint == "/v1/embeddings"
        self._shape = _line_shape(rules.endpoint)

    def feed(self, number: int, offset: int, lines: list[bytes]) -> list[IndexedLine]:
        """A run of the file's lines, in order and without their newlines, blank ones included;
        the first is line ``number`` and starts at byte ``offset``. Returns the valid ones."""
        indexed: list[IndexedLine] = []
        outcome = self.outcome
        max_requests = self.rules.max_requests
        for line in lines:
            if line and not line.isspace():
                raw = line.rstrip(b"\r")
                fast = outcome.total < max_requests and raw.isascii()
                custom_id = self._fast_check(raw) if fast else None
                if custom_id is not None:
                    outcome.total += 1
                else:
                    custom_id = self._slow_check(number, raw)
                if custom_id is not None:
                    indexed.append(IndexedLine(number, custom_id, offset, len(raw)))
            number += 1
            offset += len(line) + 1
        return indexed

    def finish(self) -> Outcome:
        if self.outcome.total == 0 and self.outcome.error_count == 0:
            self.outcome.report(
                LineError(
                    "invalid_request", "The input file contains no requests.", "input_file_id"
                )
            )
        if self._embedding_inputs > self.rules.max_embedding_inputs:
            self.outcome.report(
                LineError(
                    "invalid_request",
                    f"The batch has {self._embedding_inputs} embedding inputs; the limit is "
                    f"{self.rules.max_embedding_inputs}.",
                )
            )
        return self.outcome

    def _slow_check(self, number: int, raw: bytes) -> str | None:
        """The line's custom_id if it is valid; else None, and every fault found reported."""
        errors_before = self.outcome.error_count
        custom_id = self._check(number, raw)
        return custom_id if self.outcome.error_count == errors_before else None

    def _fast_check(self, raw: bytes) -> str | None:
        """The line's custom_id if the line is certainly valid (and its custom_id now taken);
        None if the slow path must decide."""
        try:
            line = self._shape.decode(raw)
        except msgspec.DecodeError:  # its ValidationError too: a field missing or mistyped
            return None
        except RecursionError:  # nested deeper than msgspec goes: the slow path says
            return None
        body = line.body
        if (
            _may_nest_deeper(raw)
            or line.method != "POST"
            or line.url != self.rules.endpoint
            or body.model != self.outcome.model
            or not self._model_served
            or body.stream is True
        ):
            return None
        custom_id: str = line.custom_id
        if not storable(custom_id, MAX_CUSTOM_ID) or not self._is_new(custom_id):
            return None  # a custom_id the store cannot keep, or a duplicate: the slow path says
        if self._counts_inputs:
            self._embedding_inputs += _input_count(body.input)
        return custom_id

    def _fail(self, number: int, code: str, message: str, param: str | None = None) -> None:
        self.outcome.report(LineError(code, message, param, number))

    def _check(self, number: int, raw: bytes) -> str | None:
        self.outcome.total += 1
        if self.outcome.total > self.rules.max_requests:
            self._too_many(number)
        try:
            request = orjson.loads(raw)
        except orjson.JSONDecodeError:
            request = None
        if not isinstance(request, dict):
            self._fail(number, "invalid_json_line", "This line is not parseable as valid JSON.")
            return None
        if _may_nest_deeper(raw) and _depth(request) > MAX_DEPTH:
            self._fail(
                number, "invalid_json_line", f"This line nests more than {MAX_DEPTH} levels deep."
            )
            return None
        custom_id = self._check_envelope(number, request)
        body = request.get("body")
        if isinstance(body, dict):
            self._check_body(number, body)
        elif "body" in request:
            self._fail(number, "invalid_request", "body must be a JSON object.", "body")
        return custom_id

    def _too_many(self, number: int) -> None:
        if self.outcome.total == self.rules.max_requests + 1:  # reported once, at the first
            self._fail(
                number,
                "invalid_request",
                f"The input file has more than {self.rules.max_requests} requests, "
                "the limit for one batch.",
            )

    def _check_envelope(self, number: int, request: dict[str, Any]) -> str | None:
        if not ENVELOPE_FIELDS.issubset(request):
            self._report_missing(number, request)
        custom_id = request.get("custom_id")
        if not isinstance(custom_id, str):
            if "custom_id" in request:
                self._fail(number, "invalid_request", "custom_id must be a string.", "custom_id")
            custom_id = None
        elif not storable(custom_id, MAX_CUSTOM_ID):
            self._fail(
                number,
                "invalid_request",
                f"custom_id must be at most {MAX_CUSTOM_ID} characters of text, without NUL.",
                "custom_id",
            )
            custom_id = None
        else:
            self._check_unique(number, custom_id)
        if request.get("method", "POST") != "POST":
            self._fail(number, "invalid_request", "Only the POST method is supported.", "method")
        if request.get("url", self.rules.endpoint) != self.rules.endpoint:
            self._fail(
                number,
                "invalid_url",
                f"The url must match the batch endpoint '{self.rules.endpoint}'.",
                "url",
            )
        return custom_id

    def _report_missing(self, number: int, request: dict[str, Any]) -> None:
        for name in ENVELOPE_FIELDS_IN_ORDER:
            if name not in request:
                self._fail(
                    number,
                    "missing_required_parameter",
                    f"Missing required parameter: '{name}'.",
                    name,
                )

    def _is_new(self, custom_id: str) -> bool:
        """Take the custom_id; whether it was free. One hash lookup instead of "in" then "add"."""
        seen = len(self._custom_ids)
        self._custom_ids.add(custom_id)
        return len(self._custom_ids) != seen

    def _check_unique(self, number: int, custom_id: str) -> None:
        if not self._is_new(custom_id):
            self._fail(
                number,
                "duplicate_custom_id",
                f"The custom_id '{custom_id}' appears more than once in the file.",
                "custom_id",
            )

    def _check_body(self, number: int, body: dict[str, Any]) -> None:
        for name in self._required:
            if name not in body:
                self._fail(
                    number,
                    "invalid_request",
                    f"The request body is missing '{name}', which {self.rules.endpoint} requires.",
                    f"body.{name}",
                )
        if body.get("stream") is True:
            self._fail(
                number,
                "streaming_unsupported",
                "Streaming is not supported in batches.",
                "body.stream",
            )
        if self._counts_inputs:
            self._embedding_inputs += _input_count(body.get("input"))
        model = body.get("model")
        if isinstance(model, str):
            if model != self.outcome.model or not self._model_served:
                self._check_model(number, model)
        elif "model" in body:
            self._fail(number, "invalid_request", "model must be a string.", "body.model")

    def _check_model(self, number: int, model: str) -> None:
        if self.outcome.model is None:
            self.outcome.model = model
            self._model_served = self.rules.model_is_served(model)
        if model != self.outcome.model:
            self._fail(
                number,
                "mismatched_model",
                f"The model '{model}' differs from the model '{self.outcome.model}' of the "
                "earlier lines; a batch uses one model.",
                "body.model",
            )
        elif not self._model_served:
            self._fail(number, "model_not_found", self._unknown_model(model), "body.model")

    def _unknown_model(self, model: str) -> str:
        served = self.rules.served_models
        if not served:
            return f"The model '{model}' does not exist."
        named = ", ".join(served[:MODELS_NAMED])
        more = f" and {len(served) - MODELS_NAMED} more" if len(served) > MODELS_NAMED else ""
        return f"The model '{model}' does not exist. Models served: {named}{more}."


def _may_nest_deeper(raw: bytes) -> bool:
    """Whether ``raw`` has enough brackets to nest past ``MAX_DEPTH`` (counted in C; those in
    strings too, so a line that passes this may still be shallow)."""
    return raw.count(b"[") + raw.count(b"{") > MAX_DEPTH


def _depth(value: object) -> int:
    """How many levels of arrays and objects ``value`` nests, walked level by level rather than
    by recursion."""
    depth, level = 0, [value]
    while containers := [item for item in level if isinstance(item, dict | list)]:
        depth += 1
        level = [
            child
            for item in containers
            for child in (item.values() if isinstance(item, dict) else item)
        ]
    return depth


def _input_count(given: object) -> int:
    """How many embedding inputs: a list of strings or of token lists counts its items; a string
    or one token list counts one."""
    if isinstance(given, list) and given and not isinstance(given[0], int):
        return len(given)
    return 1


async def iter_line_runs(chunks: AsyncIterator[bytes]) -> AsyncIterator[LineRun]:
    """The lines of a byte stream, a run at a time (those each chunk completes), without their
    newlines and blank ones included, each run with the number and byte offset of its first
    line: what ``LineValidator.feed`` takes."""
    number, offset, carry = 1, 0, b""
    async for chunk in chunks:
        lines = (carry + chunk).split(b"\n")
        carry = lines.pop()  # the part after the last newline: the start of a line
        if lines:
            yield number, offset, lines
            number += len(lines)
            offset += sum(map(len, lines)) + len(lines)
    if carry:
        yield number, offset, [carry]
