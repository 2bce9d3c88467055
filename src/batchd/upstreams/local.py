"""A sentence-embedding model run in this process, served as an OpenAI-compatible upstream.

Requests are queued and gathered into micro-batches: while the model runs one forward pass on its
own thread, the requests that arrive meanwhile wait for the next, up to ``batch_size`` inputs. The
event loop never runs the model, so the API and the dispatcher stay responsive.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import orjson

from batchd.upstreams.base import Upstream, UpstreamResponse
from batchd.upstreams.sentence import Embedder, Embeddings

log = logging.getLogger("batchd.local")

EMBEDDINGS = "/v1/embeddings"
ENCODING_FORMATS = ("float", "base64")
MAX_INPUTS_PER_REQUEST = 2048  # OpenAI's own limit for one embeddings request
_JSON = {"content-type": "application/json"}


class BadRequest(Exception):
    """A request the model cannot serve as asked: a 400 naming ``param``."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


@dataclass
class _Job:
    texts: list[str]
    done: asyncio.Future[Embeddings] = field(repr=False)


class LocalUpstream(Upstream):
    def __init__(
        self,
        *,
        name: str,
        models: frozenset[str],
        max_concurrency: int,
        batch_size: int,
        load_embedder: Callable[[], Embedder],
    ) -> None:
        self.name = name
        self.models = models
        self.max_concurrency = max_concurrency
        self.batch_size = batch_size
        self.forward_passes = 0
        self._load_embedder = load_embedder
        self._embedder: Embedder | None = None
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._batcher: asyncio.Task[None] | None = None
        # One thread: the model parallelises each pass itself; two passes at once only contend.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="batchd-model")

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        self._embedder = await loop.run_in_executor(self._executor, self._load_embedder)
        log.info(
            "local_model_loaded",
            extra={"upstream": self.name, "dimensions": self._embedder.dimensions},
        )
        self._batcher = asyncio.create_task(self._run_batches(), name=f"{self.name}-batcher")

    async def close(self) -> None:
        if self._batcher is not None:
            self._batcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._batcher
            self._batcher = None
        self._executor.shutdown(wait=True)

    async def send(
        self, endpoint: str, body: bytes, headers: Mapping[str, str]
    ) -> UpstreamResponse:
        if endpoint != EMBEDDINGS:
            return _error(404, f"The local model serves only {EMBEDDINGS}, not {endpoint}.")
        try:
            request = _EmbeddingsRequest.parse(body, self._dimensions)
        except BadRequest as exc:
            return _error(400, exc.message, exc.param)
        job = _Job(request.texts, asyncio.get_running_loop().create_future())
        self._queue.put_nowait(job)
        try:
            embeddings = await job.done
        except Exception as exc:
            log.exception("local_model_failed", extra={"upstream": self.name})
            return _error(
                500, f"The local model failed: {type(exc).__name__}: {exc}", kind="server_error"
            )
        return _ok(request.response(embeddings))

    @property
    def _dimensions(self) -> int:
        assert self._embedder is not None, "open() first"
        return self._embedder.dimensions

    async def _run_batches(self) -> None:
        assert self._embedder is not None
        loop = asyncio.get_running_loop()
        while True:
            jobs = await self._gather()
            texts = [text for job in jobs for text in job.texts]
            self.forward_passes += 1
            try:
                result = await loop.run_in_executor(self._executor, self._embedder.embed, texts)
            except Exception as exc:  # the model failed: every request of this pass fails
                for job in jobs:
                    if not job.done.done():
                        job.done.set_exception(exc)
                continue
            _hand_out(jobs, result)

    async def _gather(self) -> list[_Job]:
        """The next micro-batch: the oldest waiting request and whatever else is waiting."""
        jobs = [await self._queue.get()]
        inputs = len(jobs[0].texts)
        while inputs < self.batch_size and not self._queue.empty():
            job = self._queue.get_nowait()
            jobs.append(job)
            inputs += len(job.texts)
        return jobs


def _hand_out(jobs: Sequence[_Job], result: Embeddings) -> None:
    start = 0
    for job in jobs:
        end = start + len(job.texts)
        if not job.done.done():  # a cancelled request no longer waits for its share
            job.done.set_result(result.slice(start, end))
        start = end


@dataclass(frozen=True)
class _EmbeddingsRequest:
    model: str
    texts: list[str]
    encoding_format: str

    @classmethod
    def parse(cls, body: bytes, dimensions: int) -> _EmbeddingsRequest:
        try:
            request = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise BadRequest("The request body is not valid JSON.") from exc
        if not isinstance(request, dict):
            raise BadRequest("The request body must be a JSON object.")
        model = request.get("model")
        if not isinstance(model, str) or not model:
            raise BadRequest("'model' must be a non-empty string.", "model")
        encoding_format = request.get("encoding_format", "float")
        if encoding_format not in ENCODING_FORMATS:
            raise BadRequest(
                f"Invalid value for 'encoding_format': {encoding_format!r}. "
                "Supported values are: 'float', 'base64'.",
                "encoding_format",
            )
        wanted = request.get("dimensions")
        if wanted is not None and wanted != dimensions:
            raise BadRequest(
                f"The model {model!r} gives {dimensions}-dimensional embeddings only; "
                f"'dimensions' {wanted!r} is not supported.",
                "dimensions",
            )
        return cls(model, _texts(request.get("input")), encoding_format)

    def response(self, embeddings: Embeddings) -> dict[str, Any]:
        # A float vector stays a numpy row: orjson writes float32 values in their shortest form.
        as_base64 = self.encoding_format == "base64"
        data = [
            {"object": "embedding", "index": index, "embedding": _base64(v) if as_base64 else v}
            for index, v in enumerate(embeddings.vectors)
        ]
        tokens = sum(embeddings.token_counts)
        return {
            "object": "list",
            "data": data,
            "model": self.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }


def _texts(given: object) -> list[str]:
    texts = [given] if isinstance(given, str) else given
    if not isinstance(texts, list) or not texts:
        raise BadRequest(
            "'input' must be a non-empty string or a non-empty list of strings.", "input"
        )
    if len(texts) > MAX_INPUTS_PER_REQUEST:
        raise BadRequest(
            f"'input' has {len(texts)} items; at most {MAX_INPUTS_PER_REQUEST} are allowed.",
            "input",
        )
    for text in texts:
        if not isinstance(text, str):
            raise BadRequest(
                "The local model takes text input only; token arrays are not supported.", "input"
            )
        if not text:
            raise BadRequest("'input' cannot contain an empty string.", "input")
    return texts


def _base64(vector: Any) -> str:
    """OpenAI's base64 form: the little-endian float32 bytes of the vector."""
    return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")


def _ok(payload: dict[str, Any]) -> UpstreamResponse:
    body = orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)
    return UpstreamResponse(200, body, None, _JSON)


def _error(
    status: int, message: str, param: str | None = None, kind: str = "invalid_request_error"
) -> UpstreamResponse:
    envelope = {"error": {"message": message, "type": kind, "param": param, "code": None}}
    return UpstreamResponse(status, orjson.dumps(envelope), None, _JSON)
