"""Prometheus metrics, in a registry owned by one app or worker (never the global one).

The dispatcher counts what it sends through children resolved once per (upstream, model), so the
hot path pays an increment, not a label lookup. The store-wide gauges (batches by status, lines
waiting) are read from the store when scraped.

A standalone worker has no API to serve ``/metrics`` from: with ``metrics_port`` set it serves
them itself (``MetricsServer``).
"""

from __future__ import annotations

import logging

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest

from batchd.models import BatchStatus, Usage
from batchd.store import SqlStore

log = logging.getLogger("batchd.metrics")

LATENCY_BUCKETS = (
    *(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5),
    *(1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0),
)
"""5 ms (an embedding on a local GPU) to 10 min (the default request timeout)."""

MAX_MODELS_PER_UPSTREAM = 100
"""An upstream that serves any model takes any name a batch gives: past this many distinct
names, further ones are counted as ``other`` so a typo-laden caller cannot blow up the series."""
OTHER_MODEL = "other"


class Metrics:
    """Every metric batchd exports, registered in ``self.registry``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.upstream_requests = Counter(
            "batchd_upstream_requests",
            "Requests sent to upstreams, by the answer's HTTP status, or timeout, unreachable, "
            "disconnected when none came.",
            ["upstream", "model", "status"],
            registry=registry,
        )
        self.upstream_latency = Histogram(
            "batchd_upstream_request_duration_seconds",
            "Time from sending a request to an upstream until its answer (or failure).",
            ["upstream", "model"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.in_flight = Gauge(
            "batchd_upstream_requests_in_flight",
            "Requests sent to an upstream and not yet answered.",
            ["upstream"],
            registry=registry,
        )
        self.retries = Counter(
            "batchd_upstream_retries",
            "Requests put back to be tried again, by reason: the HTTP status, or timeout, "
            "unreachable, disconnected.",
            ["upstream", "reason"],
            registry=registry,
        )
        self.input_tokens = Counter(
            "batchd_input_tokens",
            "Input (prompt) tokens of answered requests, from their usage.",
            ["model"],
            registry=registry,
        )
        self.output_tokens = Counter(
            "batchd_output_tokens",
            "Output (completion) tokens of answered requests, from their usage.",
            ["model"],
            registry=registry,
        )
        self.batches = Gauge(
            "batchd_batches",
            "Batches in the store, by status (read from the store when scraped).",
            ["status"],
            registry=registry,
        )
        self.lines_waiting = Gauge(
            "batchd_lines_waiting",
            "Lines of running batches neither finished nor claimed: waiting to be sent or retried.",
            registry=registry,
        )

    def upstream(self, name: str) -> UpstreamMetrics:
        return UpstreamMetrics(self, name)

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
    """One upstream's metric children. ``sending`` is the in-flight count, read at scrape time."""

    def __init__(self, metrics: Metrics, upstream: str) -> None:
        self._metrics = metrics
        self._upstream = upstream
        self._models: dict[str, ModelMetrics] = {}
        self._retries: dict[str, Counter] = {}
        self.sending = 0
        metrics.in_flight.labels(upstream).set_function(lambda: self.sending)

    def model(self, model: str) -> ModelMetrics:
        found = self._models.get(model)
        if found is None:
            if len(self._models) >= MAX_MODELS_PER_UPSTREAM:
                model = OTHER_MODEL
                found = self._models.get(model)
            if found is None:
                found = ModelMetrics(self._metrics, self._upstream, model)
            self._models[model] = found
        return found

    def retried(self, reason: str) -> None:
        child = self._retries.get(reason)
        if child is None:
            child = self._retries[reason] = self._metrics.retries.labels(self._upstream, reason)
        child.inc()


class ModelMetrics:
    """The children for one (upstream, model)."""

    def __init__(self, metrics: Metrics, upstream: str, model: str) -> None:
        self._requests = metrics.upstream_requests
        self._labels = (upstream, model)
        self._by_status: dict[int | str, Counter] = {}
        self._latency = metrics.upstream_latency.labels(upstream, model)
        self._input_tokens = metrics.input_tokens.labels(model)
        self._output_tokens = metrics.output_tokens.labels(model)

    def sent(self, status: int | str, seconds: float) -> None:
        """A request got ``status`` (an HTTP code, or why no answer came) after ``seconds``."""
        child = self._by_status.get(status)
        if child is None:
            child = self._by_status[status] = self._requests.labels(*self._labels, str(status))
        child.inc()
        self._latency.observe(seconds)

    def used(self, usage: Usage) -> None:
        self._input_tokens.inc(usage.input_tokens)
        self._output_tokens.inc(usage.output_tokens)


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
