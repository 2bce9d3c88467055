"""batchd's own GET /v1/batches/{id}/output and /error: the lines finished so far, while the batch
runs, without disturbing the final files."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import orjson
import pytest

from tests.e2e.conftest import ModelServer, Server, ServerFactory, wait_for_batch
from tests.e2e.lines import read_lines, request_line, submit

LINES = 120


def so_far(server: Server, batch_id: str, kind: str) -> list[dict[str, object]]:
    response = httpx.get(f"{server.base_url}/batches/{batch_id}/{kind}", timeout=30)
    response.raise_for_status()
    return [orjson.loads(line) for line in response.content.splitlines()]


def test_finished_lines_can_be_read_while_the_batch_runs(
    start_server: ServerFactory, fake: ModelServer, tmp_path: Path
) -> None:
    """While a batch runs, its output and error lines so far are served, each once, exactly as
    they will be in the final files; once it ends, the final files are served."""
    fake.set_faults(
        latency_ms=100, rules=[{"fault": "status", "status": 400, "custom_id": "^req-1[0-9]$"}]
    )
    server = start_server("--max-concurrency", "4")  # 120 lines take 3 s
    client = server.client()
    batch = submit(client, tmp_path, [request_line(i) for i in range(LINES)])
    deadline = time.monotonic() + 60
    while (seen := client.batches.retrieve(batch.id)).request_counts.completed < 20:
        assert time.monotonic() < deadline and seen.status in ("validating", "in_progress")
        time.sleep(0.05)

    output, errors = so_far(server, batch.id, "output"), so_far(server, batch.id, "error")
    running = client.batches.retrieve(batch.id)

    assert running.status == "in_progress", "the batch was still running when read"
    assert 20 <= len(output) < LINES
    assert len({line["custom_id"] for line in output}) == len(output)
    done = wait_for_batch(client, batch.id)
    final = {line["custom_id"]: line for line in read_lines(client, done.output_file_id)}
    assert all(final[line["custom_id"]] == line for line in output)
    final_errors = {line["custom_id"]: line for line in read_lines(client, done.error_file_id)}
    assert all(final_errors[line["custom_id"]] == line for line in errors)
    assert len(so_far(server, batch.id, "output")) == LINES - 10
    assert len(so_far(server, batch.id, "error")) == 10


def test_another_projects_batch_is_not_found(start_server: ServerFactory, tmp_path: Path) -> None:
    """The results so far of a batch another project owns answer 404, like the batch itself."""
    server = start_server("--api-key", "a:key-a", "--api-key", "b:key-b")
    batch = submit(server.client(api_key="key-a"), tmp_path, [request_line(1)])

    answer = httpx.get(
        f"{server.base_url}/batches/{batch.id}/output", headers={"authorization": "Bearer key-b"}
    )

    assert answer.status_code == 404
    assert answer.json()["error"]["param"] == "batch_id"


@pytest.mark.parametrize("kind", ["output", "error"])
def test_a_batch_with_no_such_file_serves_nothing(
    server: Server, fake: ModelServer, tmp_path: Path, kind: str
) -> None:
    """A batch that ended without an error file (or output file) serves an empty body."""
    if kind == "output":
        fake.set_faults(rules=[{"fault": "status", "status": 400}])
    client = server.client()
    done = wait_for_batch(client, submit(client, tmp_path, [request_line(1)]).id)

    assert so_far(server, done.id, kind) == []


def test_a_finished_batch_whose_file_is_lost_answers_404_before_any_byte(
    server: Server, fake: ModelServer, tmp_path: Path
) -> None:
    """Once a batch has ended its final file is served, checked whole first like any download:
    lost on disk, it is a 404 ``file_content_unavailable``, not a 200 with nothing."""
    client = server.client()
    done = wait_for_batch(client, submit(client, tmp_path, [request_line(1)]).id)
    (server.data_dir / "files" / "batches" / done.id / "output.jsonl").unlink()

    answer = httpx.get(f"{server.base_url}/batches/{done.id}/output")

    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "file_content_unavailable"
