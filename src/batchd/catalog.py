"""The models batchd serves, for ``GET /v1/models``: each upstream's named models, and what an
upstream that serves any model lists at its own ``GET /models``, asked at most once a minute."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from batchd.clock import Clock
from batchd.errors import UpstreamError
from batchd.upstreams import Upstream, UpstreamRouter

LISTS_KEPT_FOR = 60.0
"""Seconds a model server's own list is reused before it is asked again."""
FAILURES_KEPT_FOR = 10.0

log = logging.getLogger("batchd.catalog")


@dataclass(frozen=True)
class ServedModel:
    id: str
    upstream: str


class Catalog:
    def __init__(self, router: UpstreamRouter, clock: Clock) -> None:
        self._router = router
        self._clock = clock
        self._lists: dict[str, tuple[float, list[str]]] = {}
        """By upstream: until when its list is good, and the list."""

    async def models(self) -> list[ServedModel]:
        """Every model served, once, with the upstream its requests go to (routing order)."""
        served: dict[str, ServedModel] = {}
        for upstream in self._router.upstreams:
            for model in await self._listed(upstream):
                served.setdefault(model, ServedModel(model, upstream.name))
        return list(served.values())

    async def find(self, model: str) -> ServedModel | None:
        return next((served for served in await self.models() if served.id == model), None)

    async def _listed(self, upstream: Upstream) -> list[str]:
        now = self._clock.now()
        good_until, listed = self._lists.get(upstream.name, (0.0, []))
        if now < good_until:
            return listed
        try:
            listed, good_until = await upstream.list_models(), now + LISTS_KEPT_FOR
        except UpstreamError as exc:
            log.warning(
                "upstream_models_unavailable", extra={"upstream": upstream.name, "error": str(exc)}
            )
            listed, good_until = [], now + FAILURES_KEPT_FOR
        self._lists[upstream.name] = (good_until, listed)
        return listed
