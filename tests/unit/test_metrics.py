"""The metrics registry: per-app isolation, what each update counts, and the store gauges."""

from __future__ import annotations

import pytest
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from batchd.metrics import MAX_MODELS_PER_UPSTREAM, OTHER_MODEL, Metrics
from batchd.models import BatchStatus, RequestResult, RequestState, Usage
from batchd.store import SqlStore
from tests.contract.test_store import indexed_lines, make_batch

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples_of(text: bytes) -> Samples:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
    }


def sample(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def test_each_metrics_object_has_its_own_registry() -> None:
    """Two apps in one process count separately and never collide on registration."""
    first, second = Metrics(), Metrics()
    first.upstream("u").model("m").sent(200, 0.1)
    assert (
        sample(
            samples_of(generate_latest(first.registry)),
            "batchd_upstream_requests_total",
            upstream="u",
            model="m",
            status="200",
        )
        == 1
    )
    assert (
        "batchd_upstream_requests_total",
        (("model", "m"), ("status", "200"), ("upstream", "u")),
    ) not in samples_of(generate_latest(second.registry))


def test_requests_latency_tokens_retries_and_in_flight_are_counted() -> None:
    """Each update lands in its series; in flight is read from ``sending`` when scraped."""
    metrics = Metrics()
    upstream = metrics.upstream("gpu-1")
    model = upstream.model("llama")
    model.sent(200, 0.02)
    model.sent(200, 0.2)
    model.sent("timeout", 700.0)
    model.used(Usage(input_tokens=10, output_tokens=3))
    model.used(Usage(input_tokens=5, output_tokens=4))
    upstream.retried("timeout")
    upstream.retried("429")
    upstream.retried("429")
    upstream.sending = 3
    got = samples_of(generate_latest(metrics.registry))
    labels = {"upstream": "gpu-1", "model": "llama"}
    assert sample(got, "batchd_upstream_requests_total", status="200", **labels) == 2
    assert sample(got, "batchd_upstream_requests_total", status="timeout", **labels) == 1
    latency = "batchd_upstream_request_duration_seconds"
    assert sample(got, latency + "_count", **labels) == 3
    assert sample(got, latency + "_bucket", le="0.025", **labels) == 1
    assert sample(got, latency + "_bucket", le="600.0", **labels) == 2
    assert sample(got, latency + "_bucket", le="+Inf", **labels) == 3
    assert sample(got, "batchd_input_tokens_total", model="llama") == 15
    assert sample(got, "batchd_output_tokens_total", model="llama") == 7
    assert sample(got, "batchd_upstream_retries_total", upstream="gpu-1", reason="429") == 2
    assert sample(got, "batchd_upstream_retries_total", upstream="gpu-1", reason="timeout") == 1
    assert sample(got, "batchd_upstream_requests_in_flight", upstream="gpu-1") == 3


def test_children_are_resolved_once_per_model() -> None:
    """The same model gets the same children; past the cap new names count as ``other``."""
    upstream = Metrics().upstream("any")
    assert upstream.model("a") is upstream.model("a")
    for n in range(MAX_MODELS_PER_UPSTREAM + 5):
        upstream.model(f"m{n}")
    overflow = upstream.model("one-too-many")
    assert overflow is upstream.model("another") is upstream.model(OTHER_MODEL)
    assert upstream.model("a") is not overflow


@pytest.mark.anyio
async def test_scrape_reads_batches_by_status_and_lines_waiting(store: SqlStore) -> None:
    """Every status is reported (0 when none); lines waiting are the running batches' lines
    that are neither finished nor claimed."""
    running = await make_batch(store)
    await make_batch(store)
    await store.add_requests(running.id, indexed_lines(5))
    owner = "wrk_test"
    claimed = await store.claim_batch_to_validate(owner, 0, 10)
    assert claimed is not None and claimed.id == running.id
    await store.start_batch(running.id, owner, 5, "m", 0)
    span = (await store.claim_requests(running.id, owner, 2, 0, 10))[0].span
    got = samples_of(await Metrics().scrape(store))
    by_status = {dict(k[1])["status"]: v for k, v in got.items() if k[0] == "batchd_batches"}
    assert set(by_status) == {s.value for s in BatchStatus}
    assert by_status["validating"] == 1 and by_status["in_progress"] == 1
    assert sum(by_status.values()) == 2
    assert sample(got, "batchd_lines_waiting") == 3  # five less the two claimed
    await store.record_results(
        owner,
        [
            RequestResult(running.id, 1, RequestState.SUCCEEDED, b"{}", span=span),
            RequestResult(running.id, 2, RequestState.PENDING, span=span, retry_at=5, attempts=1),
        ],
    )
    got = samples_of(await Metrics().scrape(store))
    assert sample(got, "batchd_lines_waiting") == 4  # the retry waits again; the answer does not


@pytest.mark.anyio
async def test_scrape_without_a_store_serves_the_counters(store: SqlStore) -> None:
    """When the store fails, the store gauges are dropped and the process's counters served."""
    metrics = Metrics()
    metrics.upstream("u").model("m").sent(200, 0.1)
    await store.close()
    got = samples_of(await metrics.scrape(store))
    assert not any(name == "batchd_batches" for name, _ in got)
    assert sample(got, "batchd_upstream_requests_total", upstream="u", model="m", status="200") == 1


def test_a_latency_on_a_bucket_bound_counts_in_that_bucket() -> None:
    """Buckets are "less than or equal": 25 ms lands in le=0.025, a hair more does not."""
    metrics = Metrics()
    model = metrics.upstream("u").model("m")
    model.sent(200, 0.025)
    model.sent(200, 0.0250001)
    got = samples_of(generate_latest(metrics.registry))
    latency = "batchd_upstream_request_duration_seconds"
    assert sample(got, latency + "_bucket", le="0.025", upstream="u", model="m") == 1
    assert sample(got, latency + "_bucket", le="0.05", upstream="u", model="m") == 2
    assert sample(got, latency + "_sum", upstream="u", model="m") == pytest.approx(0.0500001)


def test_tokens_of_one_model_on_two_upstreams_add_up() -> None:
    """Tokens are by model only, so two upstreams serving it count into one series; a status
    given as a number and as text is one series too."""
    metrics = Metrics()
    metrics.upstream("a").model("m").used(Usage(input_tokens=2, output_tokens=1))
    metrics.upstream("b").model("m").used(Usage(input_tokens=3, output_tokens=4))
    metrics.upstream("a").model("m").sent(500, 0.1)
    metrics.upstream("a").model("m").sent("500", 0.1)
    got = samples_of(generate_latest(metrics.registry))
    assert sample(got, "batchd_input_tokens_total", model="m") == 5
    assert sample(got, "batchd_output_tokens_total", model="m") == 5
    assert sample(got, "batchd_upstream_requests_total", upstream="a", model="m", status="500") == 2
    assert metrics.upstream("a") is metrics.upstream("a")


def test_the_adaptive_limit_is_a_gauge_of_the_upstreams_that_have_one() -> None:
    """batchd_upstream_concurrency_limit shows an adaptive upstream's limit; a fixed one has
    no series."""
    metrics = Metrics()
    metrics.upstream("fixed").sending = 3
    metrics.upstream("adaptive").concurrency_limit = 12
    samples = samples_of(generate_latest(metrics.registry))
    assert sample(samples, "batchd_upstream_concurrency_limit", upstream="adaptive") == 12
    assert ("batchd_upstream_concurrency_limit", (("upstream", "fixed"),)) not in samples
