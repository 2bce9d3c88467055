"""A full disk under the data directory: batchd says so, stops claiming and sending, keeps the
answers it has, and goes on by itself once there is room again, sending no answered line twice.

The disk is a small tmpfs, which takes root to mount: without it these tests skip (and fail
with ``BATCHD_REQUIRE_TMPFS=1``, as CI sets)."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import ModelServer, ServerFactory, wait_for_batch
from tests.e2e.lines import request_line, results, submit

LINES = 5_000
CONCURRENCY = 8


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    command = ["mount", "-t", "tmpfs", "-o", "size=128m", "tmpfs", str(mount)]
    mounted = os.geteuid() == 0 and subprocess.run(command, check=False).returncode == 0
    if not mounted:
        reason = "mounting a tmpfs needs root (and a kernel that allows it here)"
        if os.environ.get("BATCHD_REQUIRE_TMPFS") == "1":
            pytest.fail(f"BATCHD_REQUIRE_TMPFS=1 but {reason}")
        pytest.skip(reason)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(path: Path) -> None:
    """Write zeros to ``path`` until the disk is full."""
    written = subprocess.run(
        ["dd", "if=/dev/zero", f"of={path}", "bs=1M"], capture_output=True, check=False
    )
    assert b"No space left" in written.stderr


def until(condition: object, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not callable(condition) or not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {within} s")
        time.sleep(0.1)


def test_a_full_disk_stalls_the_worker_and_it_resumes_once_there_is_room(
    start_server: ServerFactory, fake: ModelServer, small_disk: Path, tmp_path: Path
) -> None:
    server = start_server("--max-concurrency", str(CONCURRENCY), data_dir=small_disk / "data")
    ready = server.base_url.removesuffix("/v1") + "/readyz"
    fake.set_faults(latency_ms=10)
    client = server.client()
    batch = submit(client, tmp_path, [request_line(i) for i in range(LINES)])
    until(lambda: fake.stats()["total"] >= 1_000, 60, "a thousand lines sent")

    fill(small_disk / "fill")
    until(lambda: httpx.get(ready).status_code == 503, 20, "/readyz answering 503")
    until(lambda: "commit_failed" in server.log(), 20, "commit_failed logged")
    time.sleep(1.0)  # what was in flight is answered
    sent_while_full = fake.stats()["total"]
    time.sleep(2.0)
    assert fake.stats()["total"] == sent_while_full, "lines sent while nothing can be kept"
    assert client.batches.retrieve(batch.id).status == "in_progress"

    (small_disk / "fill").unlink()
    until(lambda: httpx.get(ready).status_code == 200, 20, "/readyz answering 200 again")
    done = wait_for_batch(client, batch.id, within=120)
    output, errors = results(client, done)
    assert (len(output), errors) == (LINES, [])
    received = fake.stats()["received"]
    assert len(received) == LINES
    repeats = sum(count - 1 for count in received.values())
    assert repeats <= CONCURRENCY, f"{repeats} lines sent twice"
    assert "commit_resumed" in server.log()
