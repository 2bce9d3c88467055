"""The official ``openai`` npm package against a real batchd server (tests/e2e/node)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import ModelServer, Server

REPO_ROOT = Path(__file__).resolve().parents[2]
NODE_DIR = Path(__file__).resolve().parent / "node"
NODE_TEST = NODE_DIR / "batch.test.mjs"
TIMEOUT = 120.0


@pytest.fixture
def node() -> str:
    """The node binary, or a skip (a failure when BATCHD_REQUIRE_NODE=1) saying what is missing.

    Requested before ``server`` so that a skip does not start batchd for nothing.
    """
    node = shutil.which("node")
    if node is None:
        reason = "node is not installed"
    elif not (NODE_DIR / "node_modules" / "openai").is_dir():
        reason = f"npm packages are not installed: run `npm install` in {NODE_DIR}"
    else:
        return node
    if os.environ.get("BATCHD_REQUIRE_NODE") == "1":
        pytest.fail(f"BATCHD_REQUIRE_NODE=1 but {reason}")
    pytest.skip(reason)


@pytest.mark.node
@pytest.mark.timeout(TIMEOUT + 30)
def test_the_openai_npm_sdk_runs_the_batch_workflow(
    node: str, server: Server, fake: ModelServer
) -> None:
    """Upload, batch, poll, read results, list with paging, cancel, 409 and 404 from Node."""
    # The cancel case cancels right after creating; slow its lines a little so that the batch
    # cannot finish before the cancel arrives.
    fake.set_faults(rules=[{"fault": "latency", "custom_id": "^cancel-", "latency_ms": 300}])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "NODE_"))}
    env.update(OPENAI_BASE_URL=server.base_url, OPENAI_API_KEY="sk-test", NO_COLOR="1")
    try:
        result = subprocess.run(
            [node, "--test", "--test-reporter=spec", str(NODE_TEST.relative_to(REPO_ROOT))],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
    except subprocess.TimeoutExpired as expired:
        output = _text(expired.stdout) + _text(expired.stderr)
        pytest.fail(f"node --test did not finish in {TIMEOUT:g} s:\n{output}\n{server.log()}")
    assert result.returncode == 0, (
        f"node --test exited {result.returncode}\n--- stdout\n{result.stdout}\n"
        f"--- stderr\n{result.stderr}\n--- batchd log\n{server.log()}"
    )


def _text(output: str | bytes | None) -> str:
    if isinstance(output, bytes):
        return output.decode(errors="replace")
    return output or ""
