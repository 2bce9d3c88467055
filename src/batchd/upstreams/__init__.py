"""Model servers, and the routing of a request to one by its model."""

from __future__ import annotations

from batchd.settings import Settings
from batchd.upstreams.base import Upstream, UpstreamResponse
from batchd.upstreams.http import HttpUpstream

__all__ = ["HttpUpstream", "Upstream", "UpstreamResponse", "UpstreamRouter", "build_upstreams"]


class UpstreamRouter:
    """The first upstream that names a model serves it; otherwise the first that serves any."""

    def __init__(self, upstreams: list[Upstream]) -> None:
        self.upstreams = upstreams

    def for_model(self, model: str) -> Upstream | None:
        named = next((u for u in self.upstreams if model in u.models), None)
        return named or next((u for u in self.upstreams if not u.models), None)

    def serves(self, model: str) -> bool:
        return self.for_model(model) is not None

    async def open(self) -> None:
        for upstream in self.upstreams:
            await upstream.open()

    async def close(self) -> None:
        for upstream in self.upstreams:
            await upstream.close()


def build_upstreams(settings: Settings) -> UpstreamRouter:
    upstreams: list[Upstream] = []
    for index, config in enumerate(settings.upstreams):
        upstreams.append(
            HttpUpstream(
                name=config.name or f"upstream-{index}",
                base_url=config.url,
                models=frozenset(config.models),
                max_concurrency=config.max_concurrency or settings.max_concurrency,
                api_key=config.api_key,
                request_timeout=settings.request_timeout,
                connect_timeout=settings.connect_timeout,
            )
        )
    return UpstreamRouter(upstreams)
