"""The models served: named ones as configured, a catch-all upstream's as it lists them, each
list reused for a minute, and a model server that cannot list costing nothing but its list."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from batchd.catalog import FAILURES_KEPT_FOR, LISTS_KEPT_FOR, Catalog, ServedModel
from batchd.errors import UpstreamError
from batchd.upstreams import Upstream, UpstreamResponse, UpstreamRouter

pytestmark = pytest.mark.anyio


class Clock:
    def __init__(self) -> None:
        self.time = 1_000.0

    def now(self) -> float:
        return self.time


class Listing(Upstream):
    """Serves any model, and lists ``listed`` (or fails to) when asked."""

    def __init__(self, name: str, listed: list[str] | None, models: frozenset[str] = frozenset()):
        self.name, self.models, self.max_concurrency = name, models, 1
        self.listed = listed
        self.asked = 0

    async def list_models(self) -> list[str]:
        if self.models:
            return sorted(self.models)
        self.asked += 1
        if self.listed is None:
            raise UpstreamError("no list")
        return self.listed

    async def send(
        self, endpoint: str, body: bytes, headers: Mapping[str, str]
    ) -> UpstreamResponse:
        raise NotImplementedError


async def test_each_model_is_served_by_the_first_upstream_that_has_it() -> None:
    """Models come in routing order, each once, with the upstream its lines go to."""
    named = Listing("named", None, frozenset({"b", "a"}))
    anything = Listing("any", ["a", "c"])
    catalog = Catalog(UpstreamRouter([named, anything]), Clock())

    assert await catalog.models() == [
        ServedModel("a", "named"),
        ServedModel("b", "named"),
        ServedModel("c", "any"),
    ]


async def test_a_catch_all_list_is_asked_for_once_a_minute() -> None:
    """The model server's own list is reused until it is LISTS_KEPT_FOR old."""
    anything = Listing("any", ["x"])
    clock = Clock()
    catalog = Catalog(UpstreamRouter([anything]), clock)

    await catalog.models()
    clock.time += LISTS_KEPT_FOR - 1
    await catalog.find("x")
    assert anything.asked == 1
    clock.time += 1
    await catalog.models()
    assert anything.asked == 2


async def test_a_server_that_cannot_list_lists_nothing_and_is_asked_again_soon() -> None:
    """A failed list costs only that upstream's models, and is retried after a short while."""
    broken = Listing("broken", None)
    named = Listing("named", None, frozenset({"n"}))
    clock = Clock()
    catalog = Catalog(UpstreamRouter([broken, named]), clock)

    assert [m.id for m in await catalog.models()] == ["n"]
    broken.listed = ["late"]
    clock.time += FAILURES_KEPT_FOR
    assert await catalog.find("late") == ServedModel("late", "broken")
