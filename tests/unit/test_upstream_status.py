"""Several workers' views of one upstream, merged for ``GET /v1/upstreams``."""

from __future__ import annotations

from batchd.models import UpstreamStatus, merged


def test_the_worst_state_wins_and_the_lines_waiting_add_up() -> None:
    views = [
        UpstreamStatus("gpu", "ok", None, None, 10, 2),
        UpstreamStatus("gpu", "failing", "HTTP 503", 150.0, 30, 2),
        UpstreamStatus("gpu", "failing", "HTTP 500", 100.0, 5, 1),
        UpstreamStatus("cpu", "idle", None, None, 0, 0),
    ]
    (cpu, cpu_workers), (gpu, gpu_workers) = merged(views)
    assert (cpu.upstream, cpu.state, cpu_workers) == ("cpu", "idle", 1)
    assert (gpu.state, gpu.reason, gpu.since) == ("failing", "HTTP 503", 100.0)
    assert (gpu.lines_waiting, gpu.batches, gpu_workers) == (45, 2, 3)


def test_a_paused_upstream_is_worse_than_a_failing_one() -> None:
    views = [
        UpstreamStatus("gpu", "failing", "HTTP 500", 1.0, 1, 1),
        UpstreamStatus("gpu", "paused", "connection refused", 2.0, 1, 1),
    ]
    [(gpu, _)] = merged(views)
    assert (gpu.state, gpu.reason) == ("paused", "connection refused")
