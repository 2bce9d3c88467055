"""An OpenAI-compatible model server over HTTP/1.1 (``batchd.upstreams.connections``)."""

from __future__ import annotations

from collections.abc import Awaitable, Mapping

import msgspec

from batchd.errors import (
    ResponseTooLarge,
    UpstreamDisconnected,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from batchd.upstreams.base import Upstream, UpstreamResponse
from batchd.upstreams.connections import (
    Answer,
    AnswerTooLarge,
    ConnectionLost,
    ConnectionPool,
    ProtocolError,
)


class HttpUpstream(Upstream):
    def __init__(
        self,
        *,
        name: str,
        base_url: str,
        models: frozenset[str],
        max_concurrency: int,
        api_key: str | None,
        request_timeout: float,
        connect_timeout: float,
        max_response_bytes: int,
    ) -> None:
        self.name = name
        self.models = models
        self.max_concurrency = max_concurrency
        headers = {"content-type": "application/json"}
        if api_key:
            headers["authorization"] = f"Bearer {api_key}"
        self._connections = ConnectionPool(
            base_url.rstrip("/"),
            headers=headers,
            connect_timeout=connect_timeout,
            request_timeout=request_timeout,
            max_idle=max_concurrency,
            max_body=max_response_bytes,
        )
        self._max_response_bytes = max_response_bytes

    async def close(self) -> None:
        await self._connections.close()

    async def send(
        self, endpoint: str, body: bytes, headers: Mapping[str, str]
    ) -> UpstreamResponse:
        """``endpoint`` ``/v1/chat/completions`` goes to ``{base_url}/chat/completions``: the
        base URL ends in /v1."""
        answer = await self._asking(
            self._connections.post(endpoint.removeprefix("/v1"), body, headers)
        )
        return UpstreamResponse(
            answer.status, answer.body, answer.headers.get("x-request-id"), answer.headers
        )

    async def list_models(self) -> list[str]:
        """Its named models or, serving any, the ids its ``GET /models`` lists."""
        if self.models:
            return sorted(self.models)
        answer = await self._asking(self._connections.get("/models"))
        if answer.status != 200:
            raise UpstreamError(f"The model server answered {answer.status} to GET /models.")
        try:
            listed = msgspec.json.decode(answer.body, type=_ModelList)
        except msgspec.DecodeError as exc:
            message = f"The model server's list of models could not be read: {exc}."
            raise UpstreamError(message) from exc
        return sorted({model.id for model in listed.data})

    async def probe(self) -> None:
        """``GET /models``: raise UpstreamError if the server does not answer, refuses the key
        (401, 403) or fails (5xx). Any other answer will do: not every server lists models."""
        answer = await self._asking(self._connections.get("/models"))
        if answer.status in (401, 403) or answer.status >= 500:
            raise UpstreamError(f"The model server answered {answer.status} to GET /models.")

    async def _asking(self, asking: Awaitable[Answer]) -> Answer:
        """The answer, or the UpstreamError that says why none came."""
        try:
            return await asking
        except TimeoutError as exc:
            raise UpstreamTimeout() from exc
        except ConnectionLost as exc:
            raise UpstreamDisconnected(
                "The model server closed the connection before its whole answer came."
            ) from exc
        except ProtocolError as exc:
            message = f"The model server's answer could not be read: {exc}."
            raise UpstreamDisconnected(message) from exc
        except AnswerTooLarge as exc:
            raise ResponseTooLarge(
                f"The model server's answer is larger than max_response_bytes "
                f"({self._max_response_bytes:,} bytes), counted after decompression."
            ) from exc
        except OSError as exc:
            raise UpstreamUnreachable(
                f"The model server could not be reached ({type(exc).__name__}: {exc})."
            ) from exc


class _ListedModel(msgspec.Struct):
    id: str


class _ModelList(msgspec.Struct):
    data: list[_ListedModel]
