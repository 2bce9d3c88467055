"""The scenarios of issue 4, each measured against a baseline taken in the same run."""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvloop

from bench import inprocess
from bench import instructions as bench_instructions
from bench.baseline import Client, run_baseline
from bench.harness import (
    Batchd,
    batchd,
    cpu_seconds,
    fake_model_server,
    fake_model_server_process,
    write_chat_batch,
    write_embeddings_batch,
)


@dataclass
class Row:
    scenario: str
    measure: str
    batchd: str
    baseline: str
    ratio: str
    target: str
    ok: bool | None = None


def _fmt(value: float, unit: str = "") -> str:
    return f"{value:,.2f}{unit}" if value < 100 else f"{value:,.0f}{unit}"


def _bare_loop_seconds(work: Path, input_path: Path, base_url: str, concurrency: int) -> float:
    return _bare_loop(work, input_path, base_url, concurrency)[0]


def _bare_loop(
    work: Path, input_path: Path, base_url: str, concurrency: int, client: Client = "aiohttp"
) -> tuple[float, float, float]:
    """Wall, CPU and event-loop-thread CPU seconds of the bare loop, on uvloop as batchd runs
    (uvicorn picks uvloop when it is installed). It runs in this thread of this process."""
    started, cpu, loop_cpu = time.perf_counter(), time.process_time(), time.thread_time()
    output = work / "baseline.jsonl"
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(run_baseline(input_path, output, base_url, concurrency, client))
    return (
        time.perf_counter() - started,
        time.process_time() - cpu,
        time.thread_time() - loop_cpu,
    )


OVERHEAD_PAIRS = 5
"""Baseline and batchd run alternately this many times; the median of the paired ratios is
reported, because one run on a shared machine can be off by half."""

PHASES = ("in_progress", "finalizing", "completed")


@dataclass
class Pair:
    """One batch through batchd and one run of the bare loop, back to back."""

    wall: float
    bare_wall: float
    cpu: float
    """CPU seconds of the batchd process from create to completed: steadier than wall time on
    a shared machine, since waiting for a CPU another process holds costs none."""
    bare_cpu: float
    loop_cpu: float
    """CPU seconds of batchd's event loop thread alone: what its wall time follows."""
    bare_loop_cpu: float
    same_client_wall: float
    """The bare loop through batchd's own HTTP client: what batchd's work costs on its own."""
    same_client_cpu: float
    fake_share: float
    """The fake model server's CPU seconds over batchd's wall seconds: near 1, the fake is what
    limits the batch, not batchd."""
    reached: dict[str, float]
    """Seconds from create until each status was first polled (every 0.1 s)."""


def fake_ceiling(work: Path, requests: int, store_flags: list[str]) -> list[Row]:
    """The fake model server's own ceiling, so that no scenario mistakes it for batchd's: its CPU
    per request while the bare loop drives it (through batchd's client, the fastest driver here:
    a server driven harder spends less per request), and the requests per second one core of it
    could therefore serve."""
    source = write_chat_batch(work / "ceiling.jsonl", requests)
    with fake_model_server_process(work) as (process, upstream):
        before = cpu_seconds(process.pid)
        _bare_loop(work, source, upstream, 64, client="batchd")
        used = cpu_seconds(process.pid) - before
    ceiling = requests / used
    return [
        Row("fake server", "CPU µs per request", "", _fmt(used / requests * 1e6), "", ""),
        Row(
            "fake server",
            "ceiling requests/s on one core",
            "",
            _fmt(ceiling),
            "",
            "above every rate below",
        ),
    ]


def overhead(work: Path, requests: int, store_flags: list[str]) -> list[Row]:
    """A chat batch against an instant upstream at concurrency 64, against the bare loop."""
    source = write_chat_batch(work / "overhead.jsonl", requests)
    with (
        fake_model_server_process(work) as (fake, upstream),
        batchd(work, upstream, "--max-concurrency", "64", *store_flags) as server,
    ):
        pairs = [
            _overhead_pair(work, source, requests, fake.pid, upstream, server)
            for _ in range(OVERHEAD_PAIRS)
        ]
        rss = server.peak_rss_mb()
    return _overhead_rows(requests, pairs, rss)


def _overhead_pair(
    work: Path, source: Path, requests: int, fake_pid: int, upstream: str, server: Batchd
) -> Pair:
    server.wait_idle()
    bare_wall, bare_cpu, bare_loop_cpu = _bare_loop(work, source, upstream, 64)
    same_wall, same_cpu, _ = _bare_loop(work, source, upstream, 64, client="batchd")
    file_id = server.upload(source)
    cpu, loop_cpu = server.cpu_seconds(), server.loop_cpu_seconds()
    fake_cpu = cpu_seconds(fake_pid)
    started = time.perf_counter()
    seen: dict[str, float] = {}
    done = server.wait(server.create(file_id), poll=0.1, seen=seen)
    wall = time.perf_counter() - started
    assert done["status"] == "completed", done
    fake_share = (cpu_seconds(fake_pid) - fake_cpu) / wall
    assert done["request_counts"]["completed"] == requests, done["request_counts"]
    reached = {status: at - started for status, at in seen.items()}
    return Pair(
        wall,
        bare_wall,
        server.cpu_seconds() - cpu,
        bare_cpu,
        server.loop_cpu_seconds() - loop_cpu,
        bare_loop_cpu,
        same_wall,
        same_cpu,
        fake_share,
        reached,
    )


def _overhead_rows(requests: int, pairs: list[Pair], rss: float) -> list[Row]:
    took = statistics.median(p.wall for p in pairs)
    bare = statistics.median(p.bare_wall for p in pairs)
    ratio = statistics.median(p.wall / p.bare_wall for p in pairs)
    return [
        Row(
            "overhead",
            f"{requests:,} requests, wall s (median of {OVERHEAD_PAIRS})",
            _fmt(took),
            _fmt(bare),
            f"{ratio:.2f}",
            "≤ 1.25",
            ratio <= 1.25,
        ),
        Row("overhead", "requests/s", _fmt(requests / took), _fmt(requests / bare), "", ""),
        Row(
            "overhead",
            "wall s vs the bare loop on batchd's client",
            _fmt(took),
            _fmt(statistics.median(p.same_client_wall for p in pairs)),
            f"{statistics.median(p.wall / p.same_client_wall for p in pairs):.2f}",
            "",
        ),
        Row(
            "overhead",
            "fake's CPU s per batchd wall s (1: fake-bound)",
            _fmt(statistics.median(p.fake_share for p in pairs)),
            "",
            "",
            "",
        ),
        _cpu_row("CPU µs/request", requests, [(p.cpu, p.bare_cpu) for p in pairs]),
        _cpu_row(
            "… of the event loop's thread",
            requests,
            [(p.loop_cpu, p.bare_loop_cpu) for p in pairs],
        ),
        _cpu_row(
            "CPU µs/request vs the bare loop on batchd's client",
            requests,
            [(p.cpu, p.same_client_cpu) for p in pairs],
        ),
        Row("overhead", "s to " + " / ".join(PHASES), _phases(pairs), "", "", ""),
        Row("overhead", "peak RSS MB", _fmt(rss), "", "", ""),
    ]


def _cpu_row(measure: str, requests: int, seconds: list[tuple[float, float]]) -> Row:
    """CPU per request of batchd and of the bare loop (medians of the pairs' seconds), and the
    median of the pairs' ratios."""
    ours, bare = (statistics.median(side) / requests * 1e6 for side in zip(*seconds, strict=True))
    ratio = statistics.median(mine / theirs for mine, theirs in seconds)
    return Row("overhead", measure, _fmt(ours), _fmt(bare), f"{ratio:.2f}", "")


def _phases(pairs: list[Pair]) -> str:
    """The median time to each phase; a phase too short to be polled shows as -."""
    medians = []
    for phase in PHASES:
        times = [p.reached[phase] for p in pairs if phase in p.reached]
        medians.append(_fmt(statistics.median(times)) if times else "-")
    return " / ".join(medians)


def saturation(work: Path, requests: int, store_flags: list[str]) -> list[Row]:
    """50 ms upstream that takes 128 at a time (429 beyond): throughput against 128 / 50 ms."""
    source = write_chat_batch(work / "saturation.jsonl", requests)
    ceiling = 128 / 0.050
    with (
        fake_model_server(work, latency_ms=50, capacity=128) as upstream,
        batchd(work, upstream, "--max-concurrency", "128", *store_flags) as server,
    ):
        bare = requests / _bare_loop_seconds(work, source, upstream, 128)
        httpx.post(upstream.removesuffix("/v1") + "/_reset").raise_for_status()
        file_id = server.upload(source)
        batch_id = server.create(file_id)
        first, last = _progress_times(server, batch_id, requests // 10, requests * 9 // 10)
        done = server.wait(batch_id, poll=0.05)
        stats = httpx.get(upstream.removesuffix("/v1") + "/_stats").json()
    assert done["status"] == "completed", done
    # Steady state, from 10% to 90% done: ramp-up and finalizing are measured elsewhere.
    rate = (last[1] - first[1]) / (last[0] - first[0])
    rejected = stats["responses_by_status"].get("429", 0)
    return [
        Row(
            "saturation",
            "requests/s vs 128 / 50 ms",
            _fmt(rate),
            _fmt(ceiling),
            f"{rate / ceiling:.2f}",
            "≥ 0.95",
            rate / ceiling >= 0.95,
        ),
        Row(
            "saturation",
            "requests/s vs bare loop",
            _fmt(rate),
            _fmt(bare),
            f"{rate / bare:.2f}",
            "≥ 0.95",
            rate / bare >= 0.95,
        ),
        Row(
            "saturation",
            "peak in flight",
            str(stats["peak_in_flight"]),
            "128",
            "",
            "= 128",
            stats["peak_in_flight"] == 128,
        ),
        Row("saturation", "429s", str(rejected), "0", "", "0", rejected == 0),
    ]


def _progress_times(server: Batchd, batch_id: str, *marks: int) -> list[tuple[float, int]]:
    """(time, completed) when the batch first reaches each mark of completed requests."""
    seen: list[tuple[float, int]] = []
    for mark in marks:
        while True:
            completed = int(server.batch(batch_id)["request_counts"]["completed"])  # type: ignore[index]
            if completed >= mark:
                seen.append((time.perf_counter(), completed))
                break
            time.sleep(0.01)
    return seen


def ingest(work: Path, requests: int, store_flags: list[str]) -> list[Row]:
    """Upload and validation of a ~200 MB file of ``requests`` lines."""
    pad = max(0, 200 * 1024 * 1024 // max(requests, 1) - 200)
    source = write_chat_batch(work / "ingest.jsonl", requests, pad=pad)
    size_mb = source.stat().st_size / 1e6
    with fake_model_server(work) as upstream, batchd(work, upstream, *store_flags) as server:
        started = time.perf_counter()
        file_id = server.upload(source)
        uploaded = time.perf_counter() - started
        started = time.perf_counter()
        batch_id = server.create(file_id)
        server.wait(batch_id, until={"in_progress", "failed", "completed"}, poll=0.02)
        validated = time.perf_counter() - started
        server.http.post(f"/batches/{batch_id}/cancel")
    copy_started = time.perf_counter()
    (work / "copy.jsonl").write_bytes(source.read_bytes())
    copied = time.perf_counter() - copy_started
    rate = size_mb / validated
    return [
        Row(
            "ingest", f"upload {size_mb:,.0f} MB, s", _fmt(uploaded), _fmt(copied) + " (cp)", "", ""
        ),
        Row("ingest", "validation MB/s", _fmt(rate), "", "", "≥ 50", rate >= 50),
    ]


def many_small(work: Path, requests: int, store_flags: list[str]) -> list[Row]:
    """200 batches of 100 created at once, against the same 20,000 requests in one batch."""
    batches, size = 200, 100
    single = write_chat_batch(work / "single.jsonl", batches * size)
    smalls = [
        write_chat_batch(work / f"small-{i}.jsonl", size, prefix=f"s{i}-") for i in range(batches)
    ]
    with fake_model_server(work) as upstream, batchd(work, upstream, *store_flags) as server:
        file_id = server.upload(single)
        started = time.perf_counter()
        server.wait(server.create(file_id), poll=0.1)
        one = time.perf_counter() - started
        file_ids = [server.upload(path) for path in smalls]
        server.wait_idle()
        started = time.perf_counter()
        ids = [server.create(f) for f in file_ids]
        statuses = [server.wait(i, poll=0.1)["status"] for i in ids]
        many = time.perf_counter() - started
    assert set(statuses) == {"completed"}, statuses
    return [
        Row(
            "many small",
            "200 x 100 vs 1 x 20,000, s",
            _fmt(many),
            _fmt(one),
            f"{many / one:.2f}",
            "",
        )
    ]


def api_under_load(work: Path, requests: int, store_flags: list[str]) -> list[Row]:
    """p50/p99 of GET /v1/batches/{id} from 50 pollers while a batch runs, against idle."""
    source = write_chat_batch(work / "polled.jsonl", requests)
    with (
        fake_model_server(work, latency_ms=5) as upstream,
        batchd(work, upstream, *store_flags) as server,
    ):
        file_id = server.upload(source)
        idle_batch = server.create(server.upload(write_chat_batch(work / "one.jsonl", 1)))
        server.wait(idle_batch)
        idle = _poll_latencies(server.base_url, idle_batch, pollers=50, seconds=2)
        batch_id = server.create(file_id)
        server.wait(batch_id, until={"in_progress"}, poll=0.02)
        busy = _poll_latencies(server.base_url, batch_id, pollers=50, seconds=5)
    rows = []
    for label, q in (("p50", 0.5), ("p99", 0.99)):
        loaded, quiet = _quantile(busy, q) * 1000, _quantile(idle, q) * 1000
        rows.append(
            Row(
                "api under load",
                f"GET batch {label} ms",
                _fmt(loaded),
                _fmt(quiet),
                f"{loaded / quiet:.2f}",
                "",
            )
        )
    return rows


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _poll_latencies(base_url: str, batch_id: str, pollers: int, seconds: float) -> list[float]:
    latencies: list[float] = []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def poll() -> None:
        with httpx.Client(base_url=base_url) as http:
            while time.monotonic() < deadline:
                started = time.perf_counter()
                http.get(f"/batches/{batch_id}").raise_for_status()
                with lock:
                    latencies.append(time.perf_counter() - started)

    threads = [threading.Thread(target=poll) for _ in range(pollers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies


def scale(work: Path, requests: int, store_flags: list[str]) -> list[Row]:
    """A very large batch: peak RSS and time per request against a 50,000-line batch."""
    small_n, big_n = 50_000, requests
    limits = {
        "BATCHD_MAX_REQUESTS_PER_BATCH": str(big_n),
        "BATCHD_MAX_BATCH_FILE_BYTES": str(4 * 1024**3),
    }
    small = write_chat_batch(work / "scale-small.jsonl", small_n)
    big = write_chat_batch(work / "scale-big.jsonl", big_n)
    results = {}
    with fake_model_server(work) as upstream:
        for label, source, count in (("small", small, small_n), ("big", big, big_n)):
            with batchd(work, upstream, *store_flags, env=limits) as server:
                file_id = server.upload(source)
                started = time.perf_counter()
                done = server.wait(server.create(file_id), poll=0.5)
                took = time.perf_counter() - started
                assert done["status"] == "completed", done
                results[label] = (took / count * 1e6, server.peak_rss_mb())
    per_big, rss_big = results["big"]
    per_small, _ = results["small"]
    return [
        Row(
            "scale",
            f"{big_n:,} requests, µs/request",
            _fmt(per_big),
            _fmt(per_small) + " (50k)",
            f"{per_big / per_small:.2f}",
            "≤ 1.0 (±noise)",
        ),
        Row("scale", "peak RSS MB", _fmt(rss_big), "", "", "≤ 500", rss_big <= 500),
    ]


INPROCESS_RUNS = 3


def in_process(work: Path, requests: int, store_flags: list[str]) -> list[Row]:
    """batchd's own CPU per request without HTTP, by phase, against the bare loop's own work
    (``bench/inprocess.py``); medians of three runs. A steadier figure than wall time."""
    source = write_chat_batch(work / "inprocess.jsonl", requests)
    database_url = store_flags[1] if store_flags else None
    runs = [
        inprocess.batchd_cpu(work / f"run-{i}", source, requests, database_url)
        for i in range(INPROCESS_RUNS)
    ]
    bare = statistics.median(inprocess.bare_cpu(source) for _ in range(INPROCESS_RUNS))

    def per_request(seconds: list[float]) -> float:
        return statistics.median(seconds) / requests * 1e6

    total = per_request([r["completed"] for r in runs])
    phases = [
        ("validating and indexing", [r["in_progress"] for r in runs]),
        ("dispatching", [r["finalizing"] - r["in_progress"] for r in runs]),
        ("finalizing", [r["completed"] - r["finalizing"] for r in runs]),
    ]
    bare_us = bare / requests * 1e6
    return [
        Row(
            "in-process",
            f"{requests:,} requests, CPU µs/request without HTTP",
            _fmt(total),
            _fmt(bare_us),
            f"{total / bare_us:.2f}",
            "",
        ),
        *(
            Row("in-process", f"… of which {name}", _fmt(per_request(seconds)), "", "", "")
            for name, seconds in phases
        ),
    ]


def instructions(work: Path, requests: int, store_flags: list[str]) -> list[Row]:
    """Instructions per request under callgrind, against the bare loop (``bench/instructions.py``):
    the steady figure for comparing two trees on a noisy machine."""
    measure = f"{requests:,} requests, instructions/request (callgrind)"
    if bench_instructions.valgrind_missing():
        return [Row("instructions", measure, "valgrind is not installed", "", "", "")]
    counts = bench_instructions.per_request(work, requests, store_flags)
    return [
        Row(
            "instructions",
            measure,
            f"{counts.batchd:,.0f}",
            f"{counts.bare:,.0f}",
            f"{counts.batchd / counts.bare:.2f}",
            "",
        ),
        Row(
            "instructions",
            "… against the bare loop on batchd's client",
            f"{counts.batchd:,.0f}",
            f"{counts.bare_same_client:,.0f}",
            f"{counts.batchd / counts.bare_same_client:.2f}",
            "",
        ),
        Row(
            "instructions",
            "batchd's background with nothing to run, per s (taken out above)",
            f"{counts.background:,.0f}",
            "",
            "",
            "",
        ),
    ]


def embeddings(work: Path, requests: int, store_flags: list[str]) -> list[Row]:
    """Embeddings through a batch on the local model, against the model called in a loop with
    the same micro-batch size (batchd's ``local_batch_size``)."""
    from batchd.settings import Settings
    from batchd.upstreams.sentence import SentenceEmbedder

    size = Settings().local_batch_size
    texts = [
        f"Sentence {i} is about topic {i % 37}, written for a benchmark of sentence embeddings."
        for i in range(requests)
    ]
    source = write_embeddings_batch(work / "embeddings.jsonl", texts)
    with batchd(work, "local", *store_flags) as server:
        file_id = server.upload(source)
        started = time.perf_counter()
        done = server.wait(server.create(file_id, "/v1/embeddings"), poll=0.2)
        took = time.perf_counter() - started
        assert done["status"] == "completed", done
    # The bare loop runs after batchd has stopped, so the two never share the CPU.
    model = SentenceEmbedder.load(None, batch_size=size)
    started = time.perf_counter()
    for start in range(0, len(texts), size):
        model.embed(texts[start : start + size])
    bare = time.perf_counter() - started
    return [
        Row(
            "embeddings",
            f"{requests:,} inputs (local model, passes of {size}), per s",
            _fmt(requests / took),
            _fmt(requests / bare) + " model in a loop",
            f"{took / bare:.2f}",
            "",
        )
    ]


def answers(work: Path, requests: int, store_flags: list[str]) -> list[Row]:
    """Peak RSS through answers batchd must not hold whole: gzip bombs (2 MB inflating to
    512 MB each, refused at max_response_bytes) and eight 20 MB answers, against the RSS after
    a batch of small ones."""
    faults = {
        "rules": [
            {"fault": "large", "size": 512 << 20, "gzip": True, "custom_id": "^bomb"},
            {"fault": "large", "size": 20 << 20, "custom_id": "^big"},
        ]
    }
    small = write_chat_batch(work / "small.jsonl", 1_000)
    bombs = write_chat_batch(work / "bombs.jsonl", 4, prefix="bomb")
    big = write_chat_batch(work / "big.jsonl", 8, prefix="big")
    with (
        fake_model_server(work, faults=faults) as upstream,
        batchd(work, upstream, *store_flags) as server,
    ):
        server.wait(server.create(server.upload(small)))
        server.wait_idle()
        idle = server.peak_rss_mb()
        rows = []
        for name, source, failed in (("4 gzip bombs", bombs, 4), ("8 x 20 MB", big, 0)):
            batch = server.wait(server.create(server.upload(source)))
            counts = batch["request_counts"]
            assert isinstance(counts, dict), batch
            assert counts["failed"] == failed, batch
            peak = server.peak_rss_mb()
            rows.append(
                Row(
                    "answers",
                    f"peak RSS after {name}, MB",
                    _fmt(peak),
                    _fmt(idle) + " after 1,000 small",
                    f"{peak / idle:.2f}",
                    "< 700 MB",
                    peak < 700,
                )
            )
    return rows


CLIENT_ROUNDS = 3
"""Each client sends the whole batch this many times, in turns; the least CPU of each is kept
(the run a neighbour disturbed least)."""


def clients(work: Path, requests: int, store_flags: list[str]) -> list[Row]:
    """The HTTP client batchd sends with, against aiohttp and httpx: CPU per request of the same
    bare loop (concurrency 64, the fake model server in its own process), in this process."""
    source = write_chat_batch(work / "clients.jsonl", requests)
    cpu: dict[Client, list[float]] = {"aiohttp": [], "batchd": [], "httpx": []}
    with fake_model_server_process(work) as (_, upstream):
        for _ in range(CLIENT_ROUNDS):
            for client in cpu:
                cpu[client].append(_bare_loop(work, source, upstream, 64, client)[1])
    per_request = {client: min(seconds) / requests * 1e6 for client, seconds in cpu.items()}
    return [
        Row(
            "clients",
            f"CPU µs per request, batchd's vs {other}",
            _fmt(per_request["batchd"]),
            _fmt(per_request[other]),
            f"{per_request['batchd'] / per_request[other]:.2f}",
            "< 1",
            per_request["batchd"] < per_request[other],
        )
        for other in ("aiohttp", "httpx")
    ]


ADAPTIVE_CAPS = (8, 16, 24, 32, 48, 64)
"""The fixed caps the adaptive limit is measured against; 64 is batchd's default."""
ADAPTIVE_KNEES = (48, 16, 32)
"""The server's hidden capacity, phase by phase: requests it serves at full speed at once."""
ADAPTIVE_LATENCY_MS = 50
ADAPTIVE_QUEUE = 2
"""It takes this many times its knee in flight (queueing, slower) and answers 429 past that."""
ADAPTIVE_RATE = 3_000
"""Seconds per phase: the batch's lines over this (8 s for the default 24,000 lines)."""


@dataclass
class Goodput:
    lines_per_second: float
    rejected: int
    sent: int

    @property
    def rejected_share(self) -> float:
        return self.rejected / max(1, self.sent)


def adaptive(work: Path, requests: int, store_flags: list[str]) -> list[Row]:
    """Adaptive concurrency against fixed caps, on a server whose hidden capacity changes twice
    during the run (``ADAPTIVE_KNEES``): lines answered per second over the same fixed time, and
    the share of requests refused with 429. The batch is larger than any run gets through."""
    source = write_chat_batch(work / "adaptive.jsonl", requests)
    phase = max(1.0, requests / ADAPTIVE_RATE)
    with fake_model_server(work) as upstream:
        fixed = {
            cap: _goodput(
                work, source, upstream, phase, ["--max-concurrency", str(cap), *store_flags], {}
            )
            for cap in ADAPTIVE_CAPS
        }
        adapted = _goodput(
            work,
            source,
            upstream,
            phase,
            ["--max-concurrency", str(max(ADAPTIVE_CAPS)), *store_flags],
            {"BATCHD_ADAPTIVE_CONCURRENCY": "true"},
        )
    return _adaptive_rows(fixed, adapted, phase)


def _goodput(
    work: Path, source: Path, upstream: str, phase: float, flags: list[str], env: dict[str, str]
) -> Goodput:
    """One batch for three phases of ``phase`` seconds, the server's knee moved at each."""
    control = upstream.removesuffix("/v1")
    with batchd(work, upstream, *flags, env=env) as server:
        file_id = server.upload(source)
        httpx.post(control + "/_reset").raise_for_status()
        _set_knee(control, ADAPTIVE_KNEES[0])
        batch_id = server.create(file_id)
        server.wait(batch_id, until={"in_progress", "failed"}, poll=0.01)
        started, before = time.perf_counter(), _answered(server, batch_id)
        sent_before = httpx.get(control + "/_stats").json()
        for index, knee in enumerate(ADAPTIVE_KNEES):
            if index:
                _set_knee(control, knee)
            time.sleep(max(0.0, started + (index + 1) * phase - time.perf_counter()))
        after, took = _answered(server, batch_id), time.perf_counter() - started
        sent_after = httpx.get(control + "/_stats").json()
        server.http.post(f"/batches/{batch_id}/cancel")
    rejected = int(sent_after["responses_by_status"].get("429", 0)) - int(
        sent_before["responses_by_status"].get("429", 0)
    )
    return Goodput((after - before) / took, rejected, sent_after["total"] - sent_before["total"])


def _set_knee(control: str, knee: int) -> None:
    faults = {
        "latency_ms": ADAPTIVE_LATENCY_MS,
        "knee": knee,
        "capacity": ADAPTIVE_QUEUE * knee,
    }
    httpx.post(control + "/_faults", json=faults).raise_for_status()


def _answered(server: Batchd, batch_id: str) -> int:
    counts = server.batch(batch_id)["request_counts"]
    assert isinstance(counts, dict), counts
    return int(counts["completed"])


def _adaptive_rows(fixed: dict[int, Goodput], adapted: Goodput, phase: float) -> list[Row]:
    best_cap = max(fixed, key=lambda cap: fixed[cap].lines_per_second)
    best, default = fixed[best_cap], fixed[max(ADAPTIVE_CAPS)]
    ceiling = sum(ADAPTIVE_KNEES) / len(ADAPTIVE_KNEES) / (ADAPTIVE_LATENCY_MS / 1000)
    knees = " → ".join(map(str, ADAPTIVE_KNEES))
    rows = [
        Row(
            "adaptive",
            f"fixed cap {cap}: lines/s, 429s",
            _fmt(run.lines_per_second),
            f"{run.rejected_share:.1%} 429s",
            f"{run.lines_per_second / best.lines_per_second:.2f}",
            "",
        )
        for cap, run in fixed.items()
    ]
    ratio = adapted.lines_per_second / best.lines_per_second
    return [
        Row(
            "adaptive",
            f"server: knee {knees} for {phase:.0f} s each, ceiling lines/s",
            "",
            _fmt(ceiling),
            "",
            "",
        ),
        *rows,
        Row(
            "adaptive",
            f"adaptive lines/s vs the best fixed cap ({best_cap})",
            _fmt(adapted.lines_per_second),
            _fmt(best.lines_per_second),
            f"{ratio:.2f}",
            "≥ 0.95",
            ratio >= 0.95,
        ),
        Row(
            "adaptive",
            f"adaptive lines/s vs the default fixed cap ({max(ADAPTIVE_CAPS)})",
            _fmt(adapted.lines_per_second),
            _fmt(default.lines_per_second),
            f"{adapted.lines_per_second / default.lines_per_second:.2f}",
            "",
        ),
        Row(
            "adaptive",
            "adaptive 429s, share of requests",
            f"{adapted.rejected_share:.2%} ({adapted.rejected:,} of {adapted.sent:,})",
            f"{default.rejected_share:.2%} at cap {max(ADAPTIVE_CAPS)}",
            "",
            "< 1%",
            adapted.rejected_share < 0.01,
        ),
    ]


SCENARIOS = {
    "fake": fake_ceiling,
    "overhead": overhead,
    "saturation": saturation,
    "ingest": ingest,
    "many-small": many_small,
    "api": api_under_load,
    "scale": scale,
    "in-process": in_process,
    "instructions": instructions,
    "embeddings": embeddings,
    "answers": answers,
    "clients": clients,
    "adaptive": adaptive,
}
