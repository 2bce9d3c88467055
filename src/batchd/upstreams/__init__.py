"""Model servers, and the routing of a request to one by its model."""

from __future__ import annotations

import functools

from batchd.settings import Settings, UpstreamSettings
from batchd.upstreams.base import Upstream, UpstreamResponse
from batchd.upstreams.http import HttpUpstream
from batchd.upstreams.local import LocalUpstream
from batchd.upstreams.sentence import SentenceEmbedder, model_names

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

    def named_models(self) -> list[str]:
        """The models named in the upstreams' settings, in routing order, each once."""
        return list(dict.fromkeys(m for u in self.upstreams for m in sorted(u.models)))

    async def open(self) -> None:
        for upstream in self.upstreams:
            await upstream.open()

    async def close(self) -> None:
        for upstream in self.upstreams:
            await upstream.close()


def build_upstreams(settings: Settings) -> UpstreamRouter:
    return UpstreamRouter(
        [
            _build(config, f"upstream-{index}", settings)
            for index, config in enumerate(settings.upstreams)
        ]
    )


def _build(config: UpstreamSettings, default_name: str, settings: Settings) -> Upstream:
    assert config.max_concurrency is not None, "filled in by Settings"
    if config.is_local:
        path = config.local_model_path
        return LocalUpstream(
            name=config.name or "local",
            models=frozenset(config.models) or model_names(path),
            max_concurrency=config.max_concurrency,
            batch_size=settings.local_batch_size,
            load_embedder=functools.partial(SentenceEmbedder.load, path, settings.local_batch_size),
        )
    upstream = HttpUpstream(
        name=config.name or default_name,
        base_url=config.url,
        models=frozenset(config.models),
        max_concurrency=config.max_concurrency,
        api_key=config.api_key,
        request_timeout=settings.request_timeout,
        connect_timeout=settings.connect_timeout,
        max_response_bytes=settings.max_response_bytes,
    )
    upstream.adaptive_concurrency = bool(config.adaptive_concurrency)
    return upstream
