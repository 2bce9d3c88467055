"""The seam between the engine and a model server."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping

import msgspec


class UpstreamResponse(msgspec.Struct, gc=False):
    """One is made per request: a Struct, built in C (see ``batchd.models``)."""

    status: int
    body: bytes
    request_id: str | None
    headers: Mapping[str, str]


class Upstream(ABC):
    """An OpenAI-compatible model server (or a model in this process).

    ``send`` raises UpstreamTimeout or UpstreamUnreachable when no HTTP answer came.
    """

    name: str
    models: frozenset[str]
    max_concurrency: int
    adaptive_concurrency: bool = False
    """Whether ``max_concurrency`` is a ceiling the worker's limiter moves under, not a cap."""

    @abstractmethod
    async def send(
        self, endpoint: str, body: bytes, headers: Mapping[str, str]
    ) -> UpstreamResponse: ...

    async def list_models(self) -> list[str]:
        """The models it serves: those named in its settings, else those it lists itself.
        Raises UpstreamError when it was asked and gave no list."""
        return sorted(self.models)

    async def probe(self) -> None:  # noqa: B027 - a model in this process is always there
        """Raise UpstreamError unless the model server answers (checked at start)."""

    async def open(self) -> None:  # noqa: B027 - most upstreams need no set-up
        """Acquire what sending needs."""

    async def close(self) -> None:  # noqa: B027
        """Release what sending needed."""
