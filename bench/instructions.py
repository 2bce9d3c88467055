"""Instructions per request, counted under callgrind: ``batchd serve`` against the bare loop.

Wall and CPU time on a shared machine move by ±15 % between runs of the same tree; instruction
counts move by well under 1 %, so two trees can be told apart by a change of a few µs. Each side
runs two batches, a small and a large one, and the difference is divided by the difference in
lines, so that what each pays once (start-up, a batch's fixed steps) cancels. batchd's count
includes everything it does for a batch until it is idle again (the rows it deletes after
``completed``), less its background work: what it spends per second with nothing to run
(counted after the batches, polled as often as they were), times each batch's seconds. That
takes the loops that run by the clock to cost the same per second during a batch, which is
near enough: they are ~1.4 % of the count.

Not a target's measure (the targets are wall time), and not the CPU ratio either: under valgrind
batchd runs ~50 times slower while the fake model server does not, so answers come back at once
and group commits are larger than in a real run. Needs valgrind (``apt install valgrind``).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.baseline import Client
from bench.harness import TERMINAL, Batchd, batchd, fake_model_server, write_chat_batch

SMALL = 1_000
POLL = 5.0
"""Seconds between polls of a running batch: each poll costs the server instructions too."""
IDLE_POLLS = 6
"""Polls (``POLL`` apart) while the server's background work is counted."""
CALLGRIND = ["valgrind", "--tool=callgrind", "--dump-instr=no"]

BARE_LOOP = """
import asyncio, sys
import uvloop
from pathlib import Path
from bench.baseline import run_baseline
source, base_url, client = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
    runner.run(run_baseline(source, source.with_suffix(".out"), base_url, 64, client))
"""


def valgrind_missing() -> bool:
    return shutil.which("valgrind") is None or shutil.which("callgrind_control") is None


@dataclass
class Counts:
    batchd: float
    """Instructions per request of ``batchd serve``, its background work taken out."""
    bare: float
    """Instructions per request of the bare loop."""
    bare_same_client: float
    """… of the bare loop through batchd's own HTTP client."""
    background: float
    """Instructions per second ``batchd serve`` spends with no batch to run (its loops that look
    for work, renew leases, answer polls): under valgrind a batch takes ~50 times longer, so
    this time-bound work would count ~50 times what it costs in a real run."""


def per_request(work: Path, requests: int, store_flags: list[str]) -> Counts:
    small = write_chat_batch(work / "small.jsonl", SMALL)
    large = write_chat_batch(work / "large.jsonl", requests)
    with fake_model_server(work) as upstream:
        bare = [_bare_loop(work, source, upstream, "aiohttp") for source in (small, large)]
        same = [_bare_loop(work, source, upstream, "batchd") for source in (small, large)]
        out = work / "batchd.callgrind"
        under = [*CALLGRIND, f"--callgrind-out-file={out}"]
        with batchd(work, upstream, *store_flags, under=under) as server:
            ours = [_one_batch(server, source, out) for source in (small, large)]
            background = _background(server, out)
    (small_count, small_seconds), (large_count, large_seconds) = ours
    lines = requests - SMALL
    return Counts(
        batchd=(
            (large_count - background * large_seconds) - (small_count - background * small_seconds)
        )
        / lines,
        bare=(bare[1] - bare[0]) / lines,
        bare_same_client=(same[1] - same[0]) / lines,
        background=background,
    )


def _one_batch(server: Batchd, source: Path, out: Path) -> tuple[int, float]:
    """Instructions the server spent on one batch, from create until it is idle again, and the
    seconds that took."""
    file_id = server.upload(source)
    server.wait_idle()

    def run() -> None:
        batch_id = server.create(file_id)
        # Not server.wait: its quicker polls near the end would be counted as the batch's work.
        while (status := server.batch(batch_id)["status"]) not in TERMINAL:
            time.sleep(POLL)
        assert status == "completed", status
        server.wait_idle()

    return _counted(server, out, run)


def _background(server: Batchd, out: Path) -> float:
    """Instructions per second of the server with nothing to run, polled as often as a running
    batch is."""

    def idle() -> None:
        for _ in range(IDLE_POLLS):
            server.http.get("/batches", params={"limit": 1}).raise_for_status()
            time.sleep(POLL)

    count, seconds = _counted(server, out, idle)
    return count / seconds


def _counted(server: Batchd, out: Path, work: Callable[[], None]) -> tuple[int, float]:
    """The server's instructions while ``work`` runs, and its seconds."""
    _callgrind_control("--zero", server.process.pid)
    started = time.monotonic()
    work()
    before = set(out.parent.glob(out.name + ".*"))
    _callgrind_control("--dump", server.process.pid)
    seconds = time.monotonic() - started
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for dump in set(out.parent.glob(out.name + ".*")) - before:
            if (total := _total(dump)) is not None:
                return total, seconds
        time.sleep(0.2)
    raise RuntimeError("callgrind wrote no whole dump")


def _bare_loop(work: Path, source: Path, upstream: str, client: Client) -> int:
    out = work / f"{source.stem}.bare-{client}.callgrind"
    command = [sys.executable, "-c", BARE_LOOP, str(source), upstream, client]
    subprocess.run(
        [*CALLGRIND, f"--callgrind-out-file={out}", *command],
        check=True,
        capture_output=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    total = _total(out)
    if total is None:
        raise RuntimeError(f"no whole dump in {out}")
    return total


def _callgrind_control(action: str, pid: int) -> None:
    subprocess.run(["callgrind_control", action, str(pid)], check=True, capture_output=True)


def _total(dump: Path) -> int | None:
    """The dump's count of instructions (its ``summary``), once it is written whole (its
    ``totals`` line comes last)."""
    text = dump.read_text(errors="replace")
    summary = re.search(r"^summary: (\d+)$", text, re.MULTILINE)
    if summary is None or not re.search(r"^totals: \d+$", text, re.MULTILINE):
        return None
    return int(summary.group(1))
