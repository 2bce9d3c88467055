"""A fake OpenAI-compatible model server with latency and fault injection.

A real HTTP server (aiohttp) used by batchd's end-to-end tests, crash tests and
benchmarks. It runs in-process (``running_model_server``) or as its own process
(``python -m tests.fakes.model_server`` / ``start_model_server_process``).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import functools
import gc
import gzip
import hashlib
import math
import os
import re
import secrets
import signal
import struct
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal, NoReturn, TypedDict, cast, get_args

import orjson
from aiohttp import web

CUSTOM_ID_HEADER = "x-batchd-custom-id"
BATCH_ID_HEADER = "x-batchd-batch-id"
REQUEST_ID_HEADER = "x-request-id"
DEFAULT_EMBEDDING_DIMENSIONS = 8
DEFAULT_MODERATION_MODEL = "omni-moderation-latest"
MODEL_OWNER = "batchd-fake"

JsonObject = dict[str, Any]
FaultKind = Literal["status", "hang", "reset", "latency", "large"]
FAULT_KINDS: frozenset[str] = frozenset(get_args(FaultKind))
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_REPO_ROOT = Path(__file__).resolve().parents[2]
_JSON_HEADERS = {"Content-Type": "application/json"}


# ---------------------------------------------------------------- configuration


def _checked_keys(cls: type[Any], data: Mapping[str, Any]) -> dict[str, Any]:
    allowed = {f.name for f in fields(cls) if f.init}
    unknown = set(data) - allowed
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s): {sorted(unknown)}")
    return dict(data)


def _init_fields_as_dict(instance: Any) -> JsonObject:
    return {f.name: getattr(instance, f.name) for f in fields(instance) if f.init}


@dataclass(frozen=True)
class FaultRule:
    """One fault-injection rule; the first rule matching a request wins."""

    fault: FaultKind
    custom_id: str | None = None
    model: str | None = None
    status: int = 500
    body: Any = None
    retry_after: float | None = None
    retry_after_ms: int | None = None
    latency_ms: float = 0.0
    times: int | None = None
    size: int = 0
    """``large``: a 200 chat completion padded to this many bytes…"""
    gzip: bool = False
    """…sent gzip-compressed (a long run of one letter: a few hundred bytes a megabyte)."""
    custom_id_pattern: re.Pattern[str] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.fault not in FAULT_KINDS:
            raise ValueError(f"fault must be one of {sorted(FAULT_KINDS)}, got {self.fault!r}")
        if self.times is not None and self.times < 0:
            raise ValueError("times must be >= 0 or null")
        object.__setattr__(self, "custom_id_pattern", _compile(self.custom_id))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FaultRule:
        return cls(**_checked_keys(cls, data))

    def to_dict(self) -> JsonObject:
        return _init_fields_as_dict(self)

    def matches(self, custom_id: str, model: object) -> bool:
        if self.model is not None and self.model != model:
            return False
        pattern = self.custom_id_pattern
        return pattern is None or pattern.search(custom_id) is not None


def _compile(pattern: str | None) -> re.Pattern[str] | None:
    if pattern is None:
        return None
    try:
        return re.compile(pattern)
    except re.error as error:
        raise ValueError(f"invalid custom_id regex {pattern!r}: {error}") from error


@dataclass(frozen=True)
class FaultConfig:
    """The whole fault configuration; replaced as a unit by ``set_faults``."""

    latency_ms: float = 0.0
    capacity: int | None = None
    knee: int | None = None
    """Requests served at full speed at once: past it ``latency_ms`` grows in proportion to the
    requests in flight (``latency_ms * in_flight / knee``), as a GPU server's does once its batch
    is full and requests queue; ``capacity`` still refuses past its own count with 429s."""
    retry_after: float = 1.0
    down: bool = False
    rules: Sequence[FaultRule] = ()
    record_arrivals: bool = False
    """Keep when each request arrived, per custom_id (``arrivals`` in the stats)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "rules", tuple(self.rules))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FaultConfig:
        values = _checked_keys(cls, data)
        values["rules"] = [FaultRule.from_dict(rule) for rule in values.get("rules") or ()]
        return cls(**values)

    def to_dict(self) -> JsonObject:
        values = _init_fields_as_dict(self)
        values["rules"] = [rule.to_dict() for rule in self.rules]
        return values


def loaded_latency_ms(faults: FaultConfig, in_flight: int) -> float:
    """The latency of a request that finds ``in_flight`` requests in the server, itself
    included: ``latency_ms``, stretched past the ``knee``."""
    if faults.knee is None:
        return faults.latency_ms
    return faults.latency_ms * max(1.0, in_flight / faults.knee)


def _as_fault_config(faults: FaultConfig | Mapping[str, Any] | None) -> FaultConfig:
    if faults is None:
        return FaultConfig()
    if isinstance(faults, FaultConfig):
        return faults
    return FaultConfig.from_dict(faults)


# ---------------------------------------------------------------- statistics


class StatsSnapshot(TypedDict):
    received: dict[str, int]
    received_by_batch: dict[str, int]
    total: int
    responses_by_status: dict[str, int]
    faults_injected: dict[str, int]
    in_flight: int
    peak_in_flight: int
    arrivals: dict[str, list[float]]


StatsPredicate = Callable[[StatsSnapshot], bool]


@dataclass
class _Counters:
    received: Counter[str] = field(default_factory=Counter)
    received_by_batch: Counter[str] = field(default_factory=Counter)
    total: int = 0
    responses_by_status: Counter[str] = field(default_factory=Counter)
    faults_injected: Counter[str] = field(default_factory=Counter)
    in_flight: int = 0
    peak_in_flight: int = 0
    arrivals: dict[str, list[float]] = field(default_factory=dict)

    def snapshot(self) -> StatsSnapshot:
        return StatsSnapshot(
            received=dict(self.received),
            received_by_batch=dict(self.received_by_batch),
            total=self.total,
            responses_by_status=dict(self.responses_by_status),
            faults_injected=dict(self.faults_injected),
            in_flight=self.in_flight,
            peak_in_flight=self.peak_in_flight,
            arrivals={custom_id: list(times) for custom_id, times in self.arrivals.items()},
        )

    def cleared(self) -> _Counters:
        # Requests still being served will decrement in_flight when they finish,
        # so the live count must survive a reset.
        return _Counters(in_flight=self.in_flight, peak_in_flight=self.in_flight)


class _StatsWatchers:
    """Futures waiting for the stats to satisfy a predicate."""

    def __init__(self) -> None:
        self._waiting: list[tuple[StatsPredicate, asyncio.Future[None]]] = []

    def __bool__(self) -> bool:
        return bool(self._waiting)

    def add(self, predicate: StatsPredicate) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((predicate, future))
        return future

    def notify(self, snapshot: StatsSnapshot) -> None:
        still_waiting = []
        for predicate, future in self._waiting:
            if future.done():
                continue
            if predicate(snapshot):
                future.set_result(None)
            else:
                still_waiting.append((predicate, future))
        self._waiting = still_waiting


# ---------------------------------------------------------------- responses


class ApiError(Exception):
    """An error answered with the OpenAI error envelope."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        error_type: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.error_type = error_type or _error_type_for_status(status)

    def envelope(self) -> JsonObject:
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }

    def to_response(self, headers: Mapping[str, str] | None = None) -> web.Response:
        return json_response(self.envelope(), status=self.status, headers=headers)


def _error_type_for_status(status: int) -> str:
    if status == 401:
        return "authentication_error"
    if status == 403:
        return "permission_error"
    if status == 429:
        return "rate_limit_error"
    if status >= 500:
        return "server_error"
    return "invalid_request_error"


def json_response(
    payload: object, *, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    all_headers = {**_JSON_HEADERS, **headers} if headers else _JSON_HEADERS
    return web.Response(body=orjson.dumps(payload), status=status, headers=all_headers)


def _retry_headers(retry_after: float | None, retry_after_ms: int | None = None) -> dict[str, str]:
    headers = {}
    if retry_after is not None:
        headers["Retry-After"] = f"{retry_after:g}"
    if retry_after_ms is not None:
        headers["retry-after-ms"] = str(retry_after_ms)
    return headers


def _rate_limited_response(retry_after: float) -> web.Response:
    error = ApiError(
        429,
        "Rate limit reached: the fake model server is at capacity.",
        code="rate_limit_exceeded",
    )
    return error.to_response(_retry_headers(retry_after))


def _down_response() -> web.Response:
    return ApiError(503, "The fake model server is down.").to_response()


def _status_fault_response(rule: FaultRule) -> web.Response:
    headers = _retry_headers(rule.retry_after, rule.retry_after_ms)
    if rule.body is None:
        error = ApiError(rule.status, f"Injected fault: HTTP {rule.status}.")
        return error.to_response(headers)
    if isinstance(rule.body, str):
        return web.Response(text=rule.body, status=rule.status, headers=headers)
    return json_response(rule.body, status=rule.status, headers=headers)


@functools.lru_cache(maxsize=4)
def _large_body(size: int, compressed: bool) -> bytes:
    head = b'{"object": "chat.completion", "choices": [], "pad": "'
    body = head + b"a" * max(0, size - len(head) - 2) + b'"}'
    return gzip.compress(body, compresslevel=1) if compressed else body


def _large_response(size: int, compressed: bool) -> web.Response:
    headers = {**_JSON_HEADERS, "Content-Encoding": "gzip"} if compressed else _JSON_HEADERS
    return web.Response(body=_large_body(size, compressed), headers=headers)


async def _add_request_id(_request: web.Request, response: web.StreamResponse) -> None:
    response.headers.setdefault(REQUEST_ID_HEADER, "req_" + secrets.token_hex(16))


# ---------------------------------------------------------------- request parsing


def _parse_json_object(raw: bytes) -> JsonObject | None:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return body if isinstance(body, dict) else None


def _require_body(body: JsonObject | None) -> JsonObject:
    if body is None:
        raise ApiError(400, "The request body must be a JSON object.")
    return body


def _require(body: JsonObject, name: str) -> Any:
    value = body.get(name)
    if value is None:
        raise ApiError(
            400,
            f"Missing required parameter: '{name}'.",
            param=name,
            code="missing_required_parameter",
        )
    return value


def _invalid_type(name: str, expected: str) -> ApiError:
    return ApiError(
        400, f"Invalid type for '{name}': expected {expected}.", param=name, code="invalid_type"
    )


def _count_tokens(text: str) -> int:
    # Word counts stand in for tokens: deterministic and cheap.
    return len(text.split())


def _content_text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = (part.get("text") for part in content if isinstance(part, dict))
        return " ".join(text for text in parts if isinstance(text, str))
    return ""


def _messages_texts(messages: list[Any], name: str) -> list[tuple[str, str]]:
    role_and_text = []
    for message in messages:
        if not isinstance(message, dict):
            raise _invalid_type(name, "a list of message objects")
        role_and_text.append(
            (str(message.get("role", "user")), _content_text(message.get("content")))
        )
    return role_and_text


def _last_user_text(role_and_text: list[tuple[str, str]]) -> str:
    for role, text in reversed(role_and_text):
        if role == "user":
            return text
    return role_and_text[-1][1] if role_and_text else ""


def _texts_of_input(value: object, name: str) -> list[str]:
    """Normalise a string / list of strings / token list / list of token lists."""
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not value:
        raise _invalid_type(name, "a string, an array of strings or token arrays")
    if all(isinstance(token, int) for token in value):
        return [_tokens_as_text(value)]
    return [_text_of_input_item(item, name) for item in value]


def _text_of_input_item(item: object, name: str) -> str:
    if isinstance(item, str):
        return item
    if isinstance(item, list) and all(isinstance(token, int) for token in item):
        return _tokens_as_text(item)
    raise _invalid_type(name, "a string, an array of strings or token arrays")


def _tokens_as_text(tokens: list[int]) -> str:
    return " ".join(map(str, tokens))


# ---------------------------------------------------------------- endpoint bodies


def _random_id(prefix: str) -> str:
    return prefix + secrets.token_hex(12)


def _echo(text: str) -> str:
    return "echo: " + text


def chat_completion(body: JsonObject) -> JsonObject:
    messages = _require(body, "messages")
    if not isinstance(messages, list) or not messages:
        raise _invalid_type("messages", "a non-empty array")
    role_and_text = _messages_texts(messages, "messages")
    reply = _echo(_last_user_text(role_and_text))
    choice_count = body.get("n") or 1
    if not isinstance(choice_count, int) or choice_count < 1:
        raise _invalid_type("n", "a positive integer")
    prompt_tokens = sum(_count_tokens(text) for _, text in role_and_text)
    completion_tokens = _count_tokens(reply) * choice_count
    return {
        "id": _random_id("chatcmpl-"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body["model"],
        "choices": [_chat_choice(index, reply) for index in range(choice_count)],
        "usage": _completion_usage(prompt_tokens, completion_tokens),
        "service_tier": "default",
        "system_fingerprint": "fp_batchd_fake",
    }


def _chat_choice(index: int, reply: str) -> JsonObject:
    return {
        "index": index,
        "message": {"role": "assistant", "content": reply, "refusal": None, "annotations": []},
        "finish_reason": "stop",
        "logprobs": None,
    }


def _completion_usage(prompt_tokens: int, completion_tokens: int) -> JsonObject:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
    }


def text_completion(body: JsonObject) -> JsonObject:
    prompts = _texts_of_input(_require(body, "prompt"), "prompt")
    replies = [_echo(prompt) for prompt in prompts]
    prompt_tokens = sum(map(_count_tokens, prompts))
    completion_tokens = sum(map(_count_tokens, replies))
    return {
        "id": _random_id("cmpl-"),
        "object": "text_completion",
        "created": int(time.time()),
        "model": body["model"],
        "choices": [
            {"text": reply, "index": index, "logprobs": None, "finish_reason": "stop"}
            for index, reply in enumerate(replies)
        ],
        "usage": _completion_usage(prompt_tokens, completion_tokens),
        "system_fingerprint": "fp_batchd_fake",
    }


def embedding_vector_bytes(text: str, dimensions: int = DEFAULT_EMBEDDING_DIMENSIONS) -> bytes:
    """A unit-length little-endian float32 vector derived from the text's hash."""
    digest = hashlib.shake_256(text.encode()).digest(4 * dimensions)
    raw = [word / 2**31 - 1.0 for word in struct.unpack(f"<{dimensions}I", digest)]
    norm = math.sqrt(sum(value * value for value in raw)) or 1.0
    return struct.pack(f"<{dimensions}f", *(value / norm for value in raw))


def embedding_vector(text: str, dimensions: int = DEFAULT_EMBEDDING_DIMENSIONS) -> list[float]:
    packed = embedding_vector_bytes(text, dimensions)
    return list(struct.unpack(f"<{dimensions}f", packed))


def embeddings(body: JsonObject) -> JsonObject:
    texts = _texts_of_input(_require(body, "input"), "input")
    dimensions = body.get("dimensions") or DEFAULT_EMBEDDING_DIMENSIONS
    if not isinstance(dimensions, int) or dimensions < 1:
        raise _invalid_type("dimensions", "a positive integer")
    as_base64 = body.get("encoding_format") == "base64"
    prompt_tokens = sum(map(_count_tokens, texts))
    return {
        "object": "list",
        "data": [
            {
                "object": "embedding",
                "index": index,
                "embedding": _encoded_embedding(text, dimensions, as_base64),
            }
            for index, text in enumerate(texts)
        ],
        "model": body["model"],
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }


def _encoded_embedding(text: str, dimensions: int, as_base64: bool) -> list[float] | str:
    if as_base64:
        return base64.b64encode(embedding_vector_bytes(text, dimensions)).decode("ascii")
    return embedding_vector(text, dimensions)


def response_object(body: JsonObject) -> JsonObject:
    role_and_text = _response_input_texts(_require(body, "input"))
    reply = _echo(_last_user_text(role_and_text))
    input_tokens = sum(_count_tokens(text) for _, text in role_and_text)
    output_tokens = _count_tokens(reply)
    return {
        "id": _random_id("resp_"),
        "object": "response",
        "created_at": int(time.time()),
        "status": "completed",
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": body["model"],
        "output": [_response_output_message(reply)],
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": _response_usage(input_tokens, output_tokens),
        "metadata": body.get("metadata") or {},
    }


def _response_input_texts(value: object) -> list[tuple[str, str]]:
    if isinstance(value, str):
        return [("user", value)]
    if not isinstance(value, list) or not value:
        raise _invalid_type("input", "a string or a non-empty array of input items")
    return _messages_texts(value, "input")


def _response_output_message(reply: str) -> JsonObject:
    return {
        "type": "message",
        "id": _random_id("msg_"),
        "status": "completed",
        "role": "assistant",
        "content": [{"type": "output_text", "text": reply, "annotations": [], "logprobs": []}],
    }


def _response_usage(input_tokens: int, output_tokens: int) -> JsonObject:
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input_tokens + output_tokens,
    }


_MODERATION_CATEGORIES = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/instructions",
    "self-harm/intent",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)
_UNFLAGGED_MODERATION_RESULT: JsonObject = {
    "flagged": False,
    "categories": dict.fromkeys(_MODERATION_CATEGORIES, False),
    "category_scores": dict.fromkeys(_MODERATION_CATEGORIES, 1e-06),
    "category_applied_input_types": {category: ["text"] for category in _MODERATION_CATEGORIES},
}


def moderation(body: JsonObject) -> JsonObject:
    value = _require(body, "input")
    input_count = len(value) if isinstance(value, list) and not _is_multimodal(value) else 1
    return {
        "id": _random_id("modr-"),
        "model": body.get("model") or DEFAULT_MODERATION_MODEL,
        "results": [_UNFLAGGED_MODERATION_RESULT] * input_count,
    }


_ONE_PIXEL_PNG = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5E"
    "rkJggg=="
)
IMAGE_OUTPUT_TOKENS = 272
"""What gpt-image-1 charges for one low-quality square image."""


def image_generation(body: JsonObject) -> JsonObject:
    """gpt-image-1's answer: ``n`` tiny images, and usage in the responses API's shape."""
    prompt = _require(body, "prompt")
    count = body.get("n", 1) if isinstance(body.get("n", 1), int) else 1
    input_tokens = _count_tokens(prompt if isinstance(prompt, str) else "")
    output_tokens = IMAGE_OUTPUT_TOKENS * count
    return {
        "created": int(time.time()),
        "data": [{"b64_json": _ONE_PIXEL_PNG}] * count,
        "usage": {
            "input_tokens": input_tokens,
            "input_tokens_details": {"text_tokens": input_tokens, "image_tokens": 0},
            "output_tokens": output_tokens,
            "total_tokens": input_tokens + output_tokens,
        },
    }


def _is_multimodal(items: list[Any]) -> bool:
    return any(isinstance(item, dict) for item in items)


@dataclass(frozen=True)
class Endpoint:
    path: str
    build: Callable[[JsonObject], JsonObject]
    requires_model: bool = True


ENDPOINTS = (
    Endpoint("/v1/chat/completions", chat_completion),
    Endpoint("/v1/completions", text_completion),
    Endpoint("/v1/embeddings", embeddings),
    Endpoint("/v1/responses", response_object),
    Endpoint("/v1/moderations", moderation, requires_model=False),
    Endpoint("/v1/images/generations", image_generation),
    Endpoint("/v1/images/edits", image_generation),
)


# ---------------------------------------------------------------- the server


class FakeModelServer:
    """The aiohttp application plus its counters and fault configuration."""

    def __init__(
        self,
        faults: FaultConfig | Mapping[str, Any] | None = None,
        *,
        models: Sequence[str] | None = None,
    ) -> None:
        self._initial_faults = _as_fault_config(faults)
        self._faults = self._initial_faults
        self._models = frozenset(models) if models is not None else None
        self._model_list = list(models or ())
        self._counters = _Counters()
        self._watchers = _StatsWatchers()
        self._rule_hits: Counter[tuple[int, str]] = Counter()
        self._stopping = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._host = "127.0.0.1"
        self._port: int | None = None
        self.app = self._build_app()

    # -- lifecycle

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        # handler_cancellation makes aiohttp cancel a handler whose client went
        # away, which is what ends "hang" and "reset" faults.
        runner = web.AppRunner(
            self.app, access_log=None, handler_cancellation=True, shutdown_timeout=2.0
        )
        self._stopping.clear()
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        self._runner = runner
        self._host = host
        self._port = _bound_port(runner)

    async def stop(self) -> None:
        self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the server is not started")
        return self._port

    @property
    def root_url(self) -> str:
        return f"http://{self._host}:{self.port}"

    @property
    def base_url(self) -> str:
        return self.root_url + "/v1"

    # -- observation and control

    def stats(self) -> StatsSnapshot:
        return self._counters.snapshot()

    async def wait_for_stats(
        self, predicate: StatsPredicate, within_seconds: float = 5.0
    ) -> StatsSnapshot:
        """Wait until the stats satisfy ``predicate``; raise TimeoutError otherwise."""
        if not predicate(self.stats()):
            async with asyncio.timeout(within_seconds):
                await self._watchers.add(predicate)
        return self.stats()

    @property
    def faults(self) -> FaultConfig:
        return self._faults

    def set_faults(self, faults: FaultConfig | Mapping[str, Any] | None) -> None:
        self._faults = _as_fault_config(faults)
        self._rule_hits.clear()

    def reset(self) -> None:
        """Clear counters and restore the fault config the server started with."""
        self._counters = self._counters.cleared()
        self.set_faults(self._initial_faults)
        self._changed()

    def _changed(self) -> None:
        if self._watchers:
            self._watchers.notify(self._counters.snapshot())

    # -- routing

    def _build_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024**2)
        app.on_response_prepare.append(_add_request_id)
        for endpoint in ENDPOINTS:
            app.router.add_post(endpoint.path, self._api_handler(endpoint))
        app.router.add_get("/v1/models", self._list_models)
        app.router.add_get("/v1/models/{model}", self._retrieve_model)
        app.router.add_route("*", "/v1/{tail:.*}", _unknown_url)
        app.router.add_get("/_stats", self._handle_stats)
        app.router.add_post("/_reset", self._handle_reset)
        app.router.add_get("/_faults", self._handle_get_faults)
        app.router.add_post("/_faults", self._handle_set_faults)
        return app

    def _api_handler(self, endpoint: Endpoint) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            return await self._serve(request, endpoint)

        return handle

    # -- the request pipeline

    async def _serve(self, request: web.Request, endpoint: Endpoint) -> web.StreamResponse:
        custom_id = request.headers.get(CUSTOM_ID_HEADER)
        self._record_received(custom_id, request.headers.get(BATCH_ID_HEADER))
        raw_body = await request.read()
        response = await self._admit(request, endpoint, custom_id or "", raw_body)
        self._counters.responses_by_status[str(response.status)] += 1
        self._changed()
        return response

    def _record_received(self, custom_id: str | None, batch_id: str | None) -> None:
        counters = self._counters
        counters.total += 1
        if custom_id is not None:
            counters.received[custom_id] += 1
            if self._faults.record_arrivals:
                counters.arrivals.setdefault(custom_id, []).append(time.monotonic())
        if batch_id is not None:
            counters.received_by_batch[batch_id] += 1

    async def _admit(
        self, request: web.Request, endpoint: Endpoint, custom_id: str, raw_body: bytes
    ) -> web.StreamResponse:
        faults = self._faults
        if faults.down:
            return _down_response()
        if faults.capacity is not None and self._counters.in_flight >= faults.capacity:
            return _rate_limited_response(faults.retry_after)
        self._enter()
        try:
            return await self._process(request, endpoint, custom_id, raw_body, faults)
        finally:
            self._leave()

    def _enter(self) -> None:
        counters = self._counters
        counters.in_flight += 1
        counters.peak_in_flight = max(counters.peak_in_flight, counters.in_flight)
        self._changed()

    def _leave(self) -> None:
        self._counters.in_flight -= 1
        self._changed()

    async def _process(
        self,
        request: web.Request,
        endpoint: Endpoint,
        custom_id: str,
        raw_body: bytes,
        faults: FaultConfig,
    ) -> web.StreamResponse:
        body = _parse_json_object(raw_body)
        rule = self._claim_rule(faults, custom_id, body.get("model") if body else None)
        if rule is not None and rule.fault == "hang":
            await self._stopping.wait()
            _abort_connection(request)
        # The answer is made before the wait, not after: the waits of a burst of requests end
        # together, and each answer made after its wait held up the next, so under load the
        # latency ran ~3 ms over what was asked (~1.5 ms with the answer made first).
        if rule is not None and rule.fault == "status":
            response = _status_fault_response(rule)
        elif rule is not None and rule.fault == "large":
            response = _large_response(rule.size, rule.gzip)
        else:
            response = self._answer(endpoint, body)
        delay_ms = self._base_latency_ms(faults) + (rule.latency_ms if rule is not None else 0.0)
        if delay_ms > 0:
            await asyncio.sleep(delay_ms / 1000)
        if rule is not None and rule.fault == "reset":
            _abort_connection(request)
        return response

    def _base_latency_ms(self, faults: FaultConfig) -> float:
        return loaded_latency_ms(faults, self._counters.in_flight)

    def _claim_rule(self, faults: FaultConfig, custom_id: str, model: object) -> FaultRule | None:
        for index, rule in enumerate(faults.rules):
            if not rule.matches(custom_id, model):
                continue
            if rule.times is not None:
                key = (index, custom_id)
                if self._rule_hits[key] >= rule.times:
                    continue
                self._rule_hits[key] += 1
            self._counters.faults_injected[rule.fault] += 1
            return rule
        return None

    def _answer(self, endpoint: Endpoint, body: JsonObject | None) -> web.Response:
        try:
            checked = _require_body(body)
            if endpoint.requires_model:
                self._check_model(_require(checked, "model"))
            elif checked.get("model") is not None:
                self._check_model(checked["model"])
            return json_response(endpoint.build(checked))
        except ApiError as error:
            return error.to_response()

    def _check_model(self, model: object) -> None:
        if self._models is not None and model not in self._models:
            raise ApiError(
                404,
                f"The model `{model}` does not exist or you do not have access to it.",
                code="model_not_found",
            )

    # -- other handlers

    async def _list_models(self, _request: web.Request) -> web.Response:
        if self._faults.down:
            return _down_response()
        return json_response(
            {"object": "list", "data": [_model_object(m) for m in self._model_list]}
        )

    async def _retrieve_model(self, request: web.Request) -> web.Response:
        model = request.match_info["model"]
        try:
            self._check_model(model)
        except ApiError as error:
            return error.to_response()
        return json_response(_model_object(model))

    async def _handle_stats(self, _request: web.Request) -> web.Response:
        return json_response(self.stats())

    async def _handle_reset(self, _request: web.Request) -> web.Response:
        self.reset()
        return json_response({"ok": True})

    async def _handle_get_faults(self, _request: web.Request) -> web.Response:
        return json_response(self._faults.to_dict())

    async def _handle_set_faults(self, request: web.Request) -> web.Response:
        try:
            config = FaultConfig.from_dict(_require_body(_parse_json_object(await request.read())))
        except (ValueError, TypeError) as error:
            return ApiError(400, f"Invalid fault config: {error}").to_response()
        except ApiError as error:
            return error.to_response()
        self.set_faults(config)
        return json_response(config.to_dict())


def _abort_connection(request: web.Request) -> NoReturn:
    transport = request.transport
    if transport is not None:
        transport.abort()
    # The handler is cancelled by aiohttp once it notices the lost connection;
    # raising here also stops it from writing a response on a dead socket.
    raise asyncio.CancelledError


async def _unknown_url(request: web.Request) -> web.Response:
    error = ApiError(
        404, f"Unknown request URL: {request.method} {request.path}.", code="unknown_url"
    )
    return error.to_response()


def _model_object(model: str) -> JsonObject:
    return {"id": model, "object": "model", "created": 0, "owned_by": MODEL_OWNER}


def _bound_port(runner: web.AppRunner) -> int:
    return cast(int, runner.addresses[0][1])


@asynccontextmanager
async def running_model_server(
    config: FaultConfig | Mapping[str, Any] | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    models: Sequence[str] | None = None,
) -> AsyncIterator[FakeModelServer]:
    server = FakeModelServer(config, models=models)
    await server.start(host, port)
    try:
        yield server
    finally:
        await server.stop()


# ---------------------------------------------------------------- separate process


def start_model_server_process(
    tmp_path: Path,
    *,
    latency_ms: float | None = None,
    capacity: int | None = None,
    retry_after: float | None = None,
    models: Sequence[str] | None = None,
    faults: FaultConfig | Mapping[str, Any] | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    startup_timeout: float = 15.0,
) -> tuple[subprocess.Popen[bytes], str]:
    """Run the fake in its own process; return it and its base URL once it listens."""
    port_file = Path(tmp_path) / f"model-server-{uuid.uuid4().hex}.port"
    command = [sys.executable, "-m", "tests.fakes.model_server", "--host", host]
    command += ["--port", str(port), "--port-file", str(port_file)]
    command += _optional_flags(latency_ms, capacity, retry_after, models, faults)
    process = subprocess.Popen(command, cwd=_REPO_ROOT, stdout=subprocess.DEVNULL)
    try:
        bound_port = _wait_for_port_file(process, port_file, startup_timeout)
    except BaseException:
        stop_model_server_process(process)
        raise
    return process, f"http://{host}:{bound_port}/v1"


def _optional_flags(
    latency_ms: float | None,
    capacity: int | None,
    retry_after: float | None,
    models: Sequence[str] | None,
    faults: FaultConfig | Mapping[str, Any] | None,
) -> list[str]:
    flags = []
    if latency_ms is not None:
        flags += ["--latency-ms", str(latency_ms)]
    if capacity is not None:
        flags += ["--capacity", str(capacity)]
    if retry_after is not None:
        flags += ["--retry-after", str(retry_after)]
    if models is not None:
        flags += ["--models", ",".join(models)]
    if faults is not None:
        flags += ["--faults", orjson.dumps(_as_fault_config(faults).to_dict()).decode()]
    return flags


def _wait_for_port_file(process: subprocess.Popen[bytes], port_file: Path, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_file.exists():
            return int(port_file.read_text())
        if process.poll() is not None:
            raise RuntimeError(f"fake model server exited early with code {process.returncode}")
        time.sleep(0.01)
    raise TimeoutError(f"fake model server did not listen within {timeout} s")


def stop_model_server_process(process: subprocess.Popen[bytes], timeout: float = 5.0) -> int:
    """Terminate the process (SIGTERM, then SIGKILL after ``timeout``); return its exit code."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait()


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency-ms", type=float, default=None)
    parser.add_argument("--capacity", type=int, default=None)
    parser.add_argument("--retry-after", type=float, default=None)
    parser.add_argument("--models", default=None, help="comma-separated served models")
    parser.add_argument("--faults", default=None, help="a fault config as JSON")
    parser.add_argument("--port-file", type=Path, default=None)
    return parser.parse_args(argv)


def _fault_config_from_args(args: argparse.Namespace) -> FaultConfig:
    config = FaultConfig.from_dict(orjson.loads(args.faults)) if args.faults else FaultConfig()
    overrides: dict[str, Any] = {}
    if args.latency_ms is not None:
        overrides["latency_ms"] = args.latency_ms
    if args.capacity is not None:
        overrides["capacity"] = args.capacity
    if args.retry_after is not None:
        overrides["retry_after"] = args.retry_after
    return replace(config, **overrides)


def _models_from_args(args: argparse.Namespace) -> list[str] | None:
    if args.models is None:
        return None
    return [model for model in args.models.split(",") if model]


def _announce_port(port: int, port_file: Path | None) -> None:
    print(port, flush=True)
    if port_file is not None:
        # Written then renamed so a poller never reads a half-written file.
        partial = port_file.with_name(port_file.name + ".partial")
        partial.write_text(str(port))
        os.replace(partial, port_file)


async def _wait_for_termination_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()


async def _serve_until_terminated(args: argparse.Namespace) -> None:
    server = FakeModelServer(_fault_config_from_args(args), models=_models_from_args(args))
    await server.start(args.host, args.port)
    _tune_collector()
    try:
        _announce_port(server.port, args.port_file)
        await _wait_for_termination_signal()
    finally:
        await server.stop()


def _tune_collector() -> None:
    """As batchd and the benchmark's bare loop tune theirs (``batchd.heap``): with CPython's
    defaults the collector walks every imported module's objects every hundred collections or
    so, a pause of tens of ms that holds up every answer in flight, which a real model server's
    latency does not have."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(5_000, 10, 10)


def _event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def main(argv: Sequence[str] | None = None) -> None:
    args = _parse_args(argv)
    with asyncio.Runner(loop_factory=_event_loop_factory()) as runner:
        runner.run(_serve_until_terminated(args))


if __name__ == "__main__":
    main()
