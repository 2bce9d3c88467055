"""Processes for the benchmark: the fake model server and a real ``batchd serve``, each in its
own process, as a user would run them."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fakes.model_server import (  # noqa: E402 - the fake lives with the tests
    start_model_server_process,
    stop_model_server_process,
)
from tests.support.ports import free_port  # noqa: E402

TERMINAL = {"completed", "failed", "expired", "cancelled"}
FINAL_POLL = 0.01
NEARLY_DONE = 0.98


@contextlib.contextmanager
def fake_model_server(workdir: Path, **options: object) -> Iterator[str]:
    with fake_model_server_process(workdir, **options) as (_, base_url):
        yield base_url


@contextlib.contextmanager
def fake_model_server_process(
    workdir: Path, **options: object
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    process, base_url = start_model_server_process(workdir, **options)  # type: ignore[arg-type]
    try:
        yield process, base_url
    finally:
        stop_model_server_process(process)


def cpu_seconds(pid: int, thread: int | None = None) -> float:
    """User plus system CPU time a process, or one of its threads, has used so far
    (``/proc/PID/stat``, ``/proc/PID/task/TID/stat``)."""
    stat = Path(f"/proc/{pid}/task/{thread}/stat" if thread else f"/proc/{pid}/stat").read_text()
    fields = stat.rsplit(")", 1)[1].split()  # the command name may hold spaces
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


@dataclass
class Batchd:
    process: subprocess.Popen[bytes]
    base_url: str
    http: httpx.Client

    def peak_rss_mb(self) -> float:
        """The process's peak resident set (VmHWM), in MB."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.process.pid)

    def loop_cpu_seconds(self) -> float:
        """The main thread's: the event loop's, which runs the API and the worker. Threads that
        only wait on the disk (syncs) are left out: they run beside it, on another core."""
        return cpu_seconds(self.process.pid, self.process.pid)

    def wait_idle(self, within: float = 60.0) -> None:
        """Return once the server has stopped working (after a batch it deletes the batch's
        rows), so that the next baseline does not share the machine with it."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            before = self.cpu_seconds()
            time.sleep(0.2)
            if self.cpu_seconds() - before < 0.02:
                return

    def upload(self, path: Path) -> str:
        with path.open("rb") as handle:
            response = self.http.post(
                "/files", files={"file": (path.name, handle)}, data={"purpose": "batch"}
            )
        response.raise_for_status()
        file_id: str = response.json()["id"]
        return file_id

    def create(self, file_id: str, endpoint: str = "/v1/chat/completions") -> str:
        response = self.http.post(
            "/batches",
            json={"input_file_id": file_id, "endpoint": endpoint, "completion_window": "24h"},
        )
        response.raise_for_status()
        batch_id: str = response.json()["id"]
        return batch_id

    def batch(self, batch_id: str) -> dict[str, object]:
        response = self.http.get(f"/batches/{batch_id}")
        response.raise_for_status()
        batch: dict[str, object] = response.json()
        return batch

    def wait(
        self,
        batch_id: str,
        until: set[str] | None = None,
        poll: float = 0.05,
        seen: dict[str, float] | None = None,
    ) -> dict[str, object]:
        """Poll until the batch reaches one of ``until``; ``seen`` collects when (perf_counter)
        each status was first polled. Once nearly every line is done the poll quickens to
        ``FINAL_POLL``, so that the end is seen within that, not within ``poll``, without
        polling a running batch hard."""
        wanted = until or TERMINAL
        while True:
            batch = self.batch(batch_id)
            if seen is not None:
                seen.setdefault(str(batch["status"]), time.perf_counter())
            if batch["status"] in wanted:
                return batch
            time.sleep(FINAL_POLL if _nearly_done(batch) else poll)


def _nearly_done(batch: dict[str, object]) -> bool:
    if batch["status"] == "finalizing":
        return True
    counts = batch.get("request_counts")
    if not isinstance(counts, dict) or not counts.get("total"):
        return False
    return bool(counts["completed"] + counts["failed"] >= NEARLY_DONE * counts["total"])


@contextlib.contextmanager
def batchd(
    workdir: Path,
    upstream: str,
    *flags: str,
    env: dict[str, str] | None = None,
    under: Sequence[str] = (),
) -> Iterator[Batchd]:
    """``batchd serve`` in a process of its own; ``under`` runs it under a tool (valgrind)."""
    port = free_port()
    data = workdir / f"batchd-{port}"
    command = [
        *under,
        sys.executable,
        "-m",
        "batchd",
        "serve",
        "--port",
        str(port),
        "--data-dir",
        str(data),
        "--upstream",
        upstream,
        "--log-level",
        "warning",
        *flags,
    ]
    environment = {k: v for k, v in os.environ.items() if not k.startswith("BATCHD_")}
    environment.update(env or {})
    log = (workdir / f"batchd-{port}.log").open("wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=environment)
    base = f"http://127.0.0.1:{port}/v1"
    http = httpx.Client(base_url=base, timeout=300)
    try:
        deadline = time.monotonic() + 180  # a local model takes a while to load
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("batchd did not start") from None
                time.sleep(0.05)
        yield Batchd(process, base, http)
    finally:
        http.close()
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def write_chat_batch(
    path: Path, count: int, model: str = "gpt-bench", prefix: str = "r", pad: int = 0
) -> Path:
    """A chat batch of ``count`` lines; ``pad`` adds that many characters to each message."""
    filler = "x" * pad
    with path.open("w") as out:
        for i in range(count):
            out.write(
                json.dumps(
                    {
                        "custom_id": f"{prefix}{i}",
                        "method": "POST",
                        "url": "/v1/chat/completions",
                        "body": {
                            "model": model,
                            "messages": [
                                {"role": "user", "content": f"Say something about {i}. {filler}"}
                            ],
                        },
                    }
                )
                + "\n"
            )
    return path


def write_embeddings_batch(path: Path, texts: list[str], model: str = "all-MiniLM-L6-v2") -> Path:
    """An embeddings batch, one text per line."""
    with path.open("w") as out:
        for i, text in enumerate(texts):
            line = {
                "custom_id": f"e{i}",
                "method": "POST",
                "url": "/v1/embeddings",
                "body": {"model": model, "input": text},
            }
            out.write(json.dumps(line) + "\n")
    return path
