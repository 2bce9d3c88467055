"""End-to-end fixtures: a fake model server process, real ``batchd serve`` processes, and the
official openai SDK pointed at them."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.fakes.model_server import start_model_server_process, stop_model_server_process
from tests.support.ports import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
MODELS = ("gpt-test", "embed-test")
FAST_TIMINGS = {  # react in tenths of seconds; production waits longer
    "BATCHD_POLL_INTERVAL": "0.1",
    "BATCHD_RETRY_BASE_DELAY": "0.05",
    "BATCHD_RETRY_MAX_DELAY": "0.5",
    "BATCHD_BREAKER_BASE_COOLDOWN": "0.2",
    "BATCHD_BREAKER_MAX_COOLDOWN": "1",
    "BATCHD_LEASE_SECONDS": "3",
}
TERMINAL = {"completed", "failed", "expired", "cancelled"}


@dataclass
class ModelServer:
    base_url: str

    @property
    def root(self) -> str:
        return self.base_url.removesuffix("/v1")

    def set_faults(self, **config: Any) -> None:
        httpx.post(f"{self.root}/_faults", json=config).raise_for_status()

    def reset(self) -> None:
        httpx.post(f"{self.root}/_reset").raise_for_status()

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = httpx.get(f"{self.root}/_stats").json()
        return stats


@pytest.fixture(scope="session")
def model_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelServer]:
    process, base_url = start_model_server_process(tmp_path_factory.mktemp("fake"))
    try:
        yield ModelServer(base_url)
    finally:
        stop_model_server_process(process)


@pytest.fixture
def fake(model_server: ModelServer) -> Iterator[ModelServer]:
    """The fake model server, with no faults and zeroed counters for this test."""
    model_server.set_faults()
    model_server.reset()
    yield model_server
    model_server.set_faults()


@dataclass
class Server:
    """A running ``batchd serve`` process."""

    process: subprocess.Popen[bytes]
    base_url: str
    data_dir: Path
    log_path: Path
    clients: list[openai.OpenAI] = field(default_factory=list)

    def client(self, api_key: str = "sk-test") -> openai.OpenAI:
        client = openai.OpenAI(base_url=self.base_url, api_key=api_key, max_retries=0, timeout=30)
        self.clients.append(client)
        return client

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        for client in self.clients:
            client.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


ServerFactory = Callable[..., Server]


@pytest.fixture
def start_server(tmp_path: Path, model_server: ModelServer) -> Iterator[ServerFactory]:
    """Start ``batchd serve`` (or, with ``role="worker"``, ``batchd worker``; with ``module``, a
    launcher of batchd's CLI) with extra flags; every process started is stopped after the
    test."""
    servers: list[Server] = []
    yield functools.partial(launch, servers, tmp_path, model_server)
    for server in servers:
        server.stop()


def launch(
    servers: list[Server],
    directory: Path,
    model_server: ModelServer,
    *flags: str,
    upstream: bool = True,
    data_dir: Path | None = None,
    extra_env: dict[str, str] | None = None,
    role: str = "serve",
    healthy_within: float = 30.0,
    module: str = "batchd",
) -> Server:
    """What ``start_server`` does, in ``directory``; the process is added to ``servers``."""
    port = free_port()
    data = data_dir or directory / f"data-{len(servers)}"
    log_path = directory / f"batchd-{len(servers)}.log"
    command = [sys.executable, "-m", module, role, "--data-dir", str(data)]
    command += ["--completion-windows", "24h,3s"]
    if role == "serve":
        command += ["--port", str(port)]
    if upstream:
        command += ["--upstream", f"{','.join(MODELS)}@{model_server.base_url}"]
    command += list(flags)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHD_")}
    env.update(FAST_TIMINGS)
    env.update(extra_env or {})
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT
        )
    server = Server(process, f"http://127.0.0.1:{port}/v1", data, log_path)
    servers.append(server)
    if role == "serve":
        _wait_until_healthy(server, healthy_within)
    return server


def _wait_until_healthy(server: Server, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"batchd exited at start:\n{server.log()}")
        try:
            if httpx.get(server.base_url.removesuffix("/v1") + "/healthz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"batchd did not become healthy:\n{server.log()}")


@pytest.fixture
def server(start_server: ServerFactory) -> Server:
    return start_server()


@pytest.fixture
def client(server: Server) -> openai.OpenAI:
    return server.client()


def wait_for_batch(
    client: openai.OpenAI, batch_id: str, *, until: set[str] | None = None, within: float = 60.0
) -> Any:
    """Poll a batch until its status is in ``until`` (default: terminal)."""
    wanted = until or TERMINAL
    deadline = time.monotonic() + within
    while True:
        batch = client.batches.retrieve(batch_id)
        if batch.status in wanted:
            return batch
        if time.monotonic() > deadline:
            raise AssertionError(f"batch {batch_id} still {batch.status} after {within}s")
        time.sleep(0.05)
