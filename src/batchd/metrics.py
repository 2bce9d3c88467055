"""Prometheus metrics, in a registry owned by one app or worker (never the global one).

The dispatcher counts what it sends in plain ints and floats, in one ``ModelMetrics`` per
(upstream, model) and one ``UpstreamMetrics`` per upstream: a prometheus_client child costs a
lock and some checks per update, and a request makes several. ``_Collector`` turns those
counts into metric families when scraped. The store-wide gauges (batches by status, lines
waiting) are read from the store when scraped.

A standalone worker has no API to serve ``/metrics`` from: with ``metrics_port`` set it serves
them itself (``MetricsServer``).
"""

from __future__ import annotations

import logging
import time
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from itertools import accumulate

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from batchd.models import BatchStatus, Usage
from batchd.store import SqlStore

log = logging.getLogger("batchd.metrics")

LATENCY_BUCKETS = (
    *(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5),
    *(1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0),
)
"""5 ms (an embedding on a local GPU) to 10 min (the default request timeout)."""
_BUCKET_NAMES = (*(repr(bound) for bound in LATENCY_BUCKETS), "+Inf")
"""The ``le`` labels, written as prometheus_client writes them ("600.0", not "600")."""

MAX_MODELS_PER_UPSTREAM = 100
"""An upstream that serves any model takes any name a batch gives: past this many distinct
names, further ones are counted as ``other`` so a typo-laden caller cannot blow up the series."""
OTHER_MODEL = "other"

REQUESTS_HELP = (
    "Requests sent to upstreams, by the answer's HTTP status, or timeout, unreachable, "
    "disconnected when none came."
)
LATENCY_HELP = "Time from sending a request to an upstream until its answer (or failure)."
IN_FLIGHT_HELP = "Requests sent to an upstream and not yet answered."
LIMIT_HELP = (
    "The adaptive concurrency limit of an upstream: requests it may have in flight now "
    "(only for upstreams with adaptive_concurrency)."
)
RETRIES_HELP = (
    "Requests put back to be tried again, by reason: the HTTP status, or timeout, "
    "unreachable, disconnected."
)
INPUT_TOKENS_HELP = "Input (prompt) tokens of answered requests, from their usage."
OUTPUT_TOKENS_HELP = "Output (completion) tokens of answered requests, from their usage."


class Metrics:
    """Every metric batchd exports, registered in ``self.registry``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._upstreams: dict[str, UpstreamMetrics] = {}
        self.registry.register(_Collector(self._upstreams))
        self.batches = Gauge(
            "batchd_batches",
            "Batches in the store, by status (read from the store when scraped).",
            ["status"],
            registry=self.registry,
        )
        self.lines_waiting = Gauge(
            "batchd_lines_waiting",
            "Lines of running batches neither finished nor claimed: waiting to be sent or retried.",
            registry=self.registry,
        )
        self.webhook_deliveries = Counter(
            "batchd_webhook_deliveries",
            "Webhook deliveries tried by this process, by outcome: delivered (a 2xx answer), "
            "failed (to be tried again), gave_up (a day after the event).",
            ["outcome"],
            registry=self.registry,
        )

    def upstream(self, name: str) -> UpstreamMetrics:
        found = self._upstreams.get(name)
        if found is None:
            found = self._upstreams[name] = UpstreamMetrics(name)
        return found

    async def scrape(self, store: SqlStore) -> bytes:
        """The exposition text, with the store-wide gauges read now."""
        await self._read_store(store)
        return generate_latest(self.registry)

    async def _read_store(self, store: SqlStore) -> None:
        try:
            by_status, waiting = await store.batch_and_line_counts()
        except Exception:
            # Serve what this process counted; stale store figures would mislead, so drop them.
            log.warning("metrics_store_unavailable", exc_info=True)
            self.batches.clear()
            self.lines_waiting.set(float("nan"))
            return
        for status in BatchStatus:
            self.batches.labels(status.value).set(by_status.get(status, 0))
        self.lines_waiting.set(waiting)


class UpstreamMetrics:
    """One upstream's counts. ``sending`` is the in-flight count, read at scrape time."""

    def __init__(self, upstream: str) -> None:
        self.name = upstream
        self.models: dict[str, ModelMetrics] = {}
        self.retries: dict[str, Count] = {}
        self.sending = 0
        self.concurrency_limit: int | None = None  # set by an adaptive limiter

    def model(self, model: str) -> ModelMetrics:
        found = self.models.get(model)
        if found is None:
            if len(self.models) >= MAX_MODELS_PER_UPSTREAM:
                model = OTHER_MODEL
                found = self.models.get(model)
            if found is None:
                found = ModelMetrics(model)
            self.models[model] = found
        return found

    def retried(self, reason: str) -> None:
        count = self.retries.get(reason)
        if count is None:
            count = self.retries[reason] = Count()
        count.value += 1


class Count:
    """One counter series: its value and when it appeared (Prometheus's ``_created``)."""

    __slots__ = ("created", "value")

    def __init__(self) -> None:
        self.created = time.time()
        self.value = 0


class ModelMetrics:
    """The counts for one (upstream, model)."""

    def __init__(self, model: str) -> None:
        self.name = model
        self.created = time.time()
        self.by_status: dict[int | str, Count] = {}
        self.buckets = [0] * len(_BUCKET_NAMES)
        """Requests by latency bucket, not cumulative: the last is above every bound."""
        self.latency_sum = 0.0
        self.input_tokens = 0
        self.output_tokens = 0

    def sent(self, status: int | str, seconds: float) -> None:
        """A request got ``status`` (an HTTP code, or why no answer came) after ``seconds``."""
        count = self.by_status.get(status)
        if count is None:
            count = self.by_status[status] = Count()
        count.value += 1
        self.buckets[bisect_left(LATENCY_BUCKETS, seconds)] += 1  # a bound is "less or equal"
        self.latency_sum += seconds

    def used(self, usage: Usage) -> None:
        self.input_tokens += usage.input_tokens
        self.output_tokens += usage.output_tokens


class _Collector(Collector):
    """The dispatchers' counts as metric families, read when scraped."""

    def __init__(self, upstreams: dict[str, UpstreamMetrics]) -> None:
        self._upstreams = upstreams

    def collect(self) -> Iterator[Metric]:
        upstreams = list(self._upstreams.values())
        yield _requests(upstreams)
        yield _latency(upstreams)
        yield _in_flight(upstreams)
        yield _limits(upstreams)
        yield _retries(upstreams)
        yield from _tokens(upstreams)


def _models(upstreams: Iterable[UpstreamMetrics]) -> Iterator[tuple[str, ModelMetrics]]:
    for upstream in upstreams:
        for model in list(upstream.models.values()):
            yield upstream.name, model


def _requests(upstreams: list[UpstreamMetrics]) -> Metric:
    family = CounterMetricFamily(
        "batchd_upstream_requests", REQUESTS_HELP, labels=["upstream", "model", "status"]
    )
    for upstream, model in _models(upstreams):
        for status, (value, created) in _by_label(model.by_status).items():
            family.add_metric([upstream, model.name, status], value, created=created)
    return family


def _by_label(counts: dict[int | str, Count]) -> dict[str, tuple[int, float]]:
    """``(value, created)`` by label: a status counted as 200 and as "200" is one series."""
    merged: dict[str, tuple[int, float]] = {}
    for key, count in list(counts.items()):
        value, created = merged.get(str(key), (0, count.created))
        merged[str(key)] = (value + count.value, min(created, count.created))
    return merged


def _latency(upstreams: list[UpstreamMetrics]) -> Metric:
    name = "batchd_upstream_request_duration_seconds"
    family = HistogramMetricFamily(name, LATENCY_HELP, labels=["upstream", "model"])
    for upstream, model in _models(upstreams):
        buckets = list(zip(_BUCKET_NAMES, accumulate(list(model.buckets)), strict=True))
        family.add_metric([upstream, model.name], buckets, model.latency_sum)
        labels = {"upstream": upstream, "model": model.name}
        family.samples.append(Sample(name + "_created", labels, model.created))
    return family


def _in_flight(upstreams: list[UpstreamMetrics]) -> Metric:
    family = GaugeMetricFamily(
        "batchd_upstream_requests_in_flight", IN_FLIGHT_HELP, labels=["upstream"]
    )
    for upstream in upstreams:
        family.add_metric([upstream.name], upstream.sending)
    return family


def _limits(upstreams: list[UpstreamMetrics]) -> Metric:
    family = GaugeMetricFamily("batchd_upstream_concurrency_limit", LIMIT_HELP, labels=["upstream"])
    for upstream in upstreams:
        if upstream.concurrency_limit is not None:
            family.add_metric([upstream.name], upstream.concurrency_limit)
    return family


def _retries(upstreams: list[UpstreamMetrics]) -> Metric:
    family = CounterMetricFamily(
        "batchd_upstream_retries", RETRIES_HELP, labels=["upstream", "reason"]
    )
    for upstream in upstreams:
        for reason, count in list(upstream.retries.items()):
            family.add_metric([upstream.name, reason], count.value, created=count.created)
    return family


def _tokens(upstreams: list[UpstreamMetrics]) -> tuple[Metric, Metric]:
    """Input and output tokens by model, summed over the upstreams that serve it."""
    by_model: dict[str, tuple[int, int, float]] = {}
    for _, model in _models(upstreams):
        given, produced, created = by_model.get(model.name, (0, 0, model.created))
        by_model[model.name] = (
            given + model.input_tokens,
            produced + model.output_tokens,
            min(created, model.created),
        )
    inputs = CounterMetricFamily("batchd_input_tokens", INPUT_TOKENS_HELP, labels=["model"])
    outputs = CounterMetricFamily("batchd_output_tokens", OUTPUT_TOKENS_HELP, labels=["model"])
    for model_name, (given, produced, created) in by_model.items():
        inputs.add_metric([model_name], given, created=created)
        outputs.add_metric([model_name], produced, created=created)
    return inputs, outputs


class MetricsServer:
    """``GET /metrics`` on its own port, for a worker that serves no API."""

    def __init__(self, metrics: Metrics, store: SqlStore, host: str, port: int) -> None:
        self._metrics = metrics
        self._store = store
        self._address = (host, port)
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._serve)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, *self._address).start()
        log.info("metrics_serving", extra={"host": self._address[0], "port": self._address[1]})

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _serve(self, request: web.Request) -> web.Response:
        body = await self._metrics.scrape(self._store)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
