"""What the model server answers, or fails to answer, becomes output and error lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.conftest import ModelServer, Server, ServerFactory, wait_for_batch
from tests.e2e.lines import request_line, results, submit


def _by_id(lines: list[dict]) -> dict[str, dict]:  # type: ignore[type-arg]
    return {line["custom_id"]: line for line in lines}


@pytest.mark.parametrize("status", [400, 404, 422, 429, 500, 503])
def test_an_error_status_becomes_an_error_line_with_the_upstream_body(
    server: Server, fake: ModelServer, tmp_path: Path, status: int
) -> None:
    """A non-2xx answer goes to the error file with its status and body as a JSON object."""
    fake.set_faults(rules=[{"fault": "status", "status": status, "custom_id": "^req-[02]$"}])
    client = server.client()
    batch = wait_for_batch(client, submit(client, tmp_path, [request_line(i) for i in range(5)]).id)
    assert batch.status == "completed"
    assert (batch.request_counts.completed, batch.request_counts.failed) == (3, 2)
    _, errors = results(client, batch)
    failed = _by_id(errors)
    assert set(failed) == {"req-0", "req-2"}
    for line in failed.values():
        assert line["error"] is None
        assert line["response"]["status_code"] == status
        assert set(line["response"]["body"]["error"]) >= {"message", "type"}


def test_a_non_json_error_body_is_wrapped_as_an_object(
    server: Server, fake: ModelServer, tmp_path: Path
) -> None:
    """An upstream error that is plain text still gives a JSON object body."""
    fake.set_faults(rules=[{"fault": "status", "status": 502, "body": "Bad Gateway"}])
    client = server.client()
    batch = wait_for_batch(client, submit(client, tmp_path, [request_line(1)]).id)
    _, errors = results(client, batch)
    body = errors[0]["response"]["body"]
    assert errors[0]["response"]["status_code"] == 502
    assert body["error"]["message"] == "Bad Gateway"


def test_an_all_failed_batch_completes_with_no_output_file(
    server: Server, fake: ModelServer, tmp_path: Path
) -> None:
    """When every line fails the batch still completes, with only an error file."""
    fake.set_faults(rules=[{"fault": "status", "status": 400}])
    client = server.client()
    batch = wait_for_batch(client, submit(client, tmp_path, [request_line(i) for i in range(4)]).id)
    assert batch.status == "completed"
    assert batch.output_file_id is None and batch.error_file_id is not None
    assert batch.request_counts.failed == 4
    assert batch.usage.total_tokens == 0


def test_a_reset_connection_is_an_error_line_without_response(
    server: Server, fake: ModelServer, tmp_path: Path
) -> None:
    """A connection closed without an answer gives response null and an error code."""
    fake.set_faults(rules=[{"fault": "reset", "custom_id": "^req-1$"}])
    client = server.client()
    batch = wait_for_batch(client, submit(client, tmp_path, [request_line(i) for i in range(3)]).id)
    _, errors = results(client, batch)
    assert len(errors) == 1
    assert errors[0]["custom_id"] == "req-1" and errors[0]["response"] is None
    assert errors[0]["error"]["code"] == "server_error"


def test_a_hung_request_times_out_and_frees_its_slot(
    start_server: ServerFactory, fake: ModelServer, tmp_path: Path
) -> None:
    """A request with no answer in time is request_timeout; the rest of the batch goes on."""
    server = start_server("--max-concurrency", "1", extra_env={"BATCHD_REQUEST_TIMEOUT": "0.5"})
    fake.set_faults(rules=[{"fault": "hang", "custom_id": "^req-0$"}])
    client = server.client()
    batch = wait_for_batch(client, submit(client, tmp_path, [request_line(i) for i in range(4)]).id)
    output, errors = results(client, batch)
    assert [e["custom_id"] for e in errors] == ["req-0"]
    assert errors[0]["error"]["code"] == "request_timeout" and errors[0]["response"] is None
    assert len(output) == 3


def test_concurrency_never_exceeds_the_cap(
    start_server: ServerFactory, fake: ModelServer, tmp_path: Path
) -> None:
    """No more than --max-concurrency requests are in flight at the upstream."""
    server = start_server("--max-concurrency", "3")
    fake.set_faults(latency_ms=20)
    client = server.client()
    batch = wait_for_batch(
        client, submit(client, tmp_path, [request_line(i) for i in range(40)]).id
    )
    assert batch.request_counts.completed == 40
    assert fake.stats()["peak_in_flight"] == 3


def test_each_line_is_sent_once(server: Server, fake: ModelServer, tmp_path: Path) -> None:
    """Without faults, every custom_id reaches the model server exactly once."""
    client = server.client()
    batch = wait_for_batch(
        client, submit(client, tmp_path, [request_line(i) for i in range(200)]).id
    )
    assert batch.request_counts.completed == 200
    received = fake.stats()["received"]
    assert len(received) == 200 and set(received.values()) == {1}


def test_lines_are_routed_to_the_upstream_serving_their_model(
    start_server: ServerFactory, fake: ModelServer, tmp_path: Path
) -> None:
    """With two upstreams, a batch goes to the one that declares its model."""
    dead = "http://127.0.0.1:9/v1"  # nothing listens on the discard port
    server = start_server(
        "--upstream",
        f"other-model@{dead}",
        "--upstream",
        f"routed@{fake.base_url}",
        upstream=False,
    )
    client = server.client()
    batch = wait_for_batch(
        client, submit(client, tmp_path, [request_line(i, model="routed") for i in range(5)]).id
    )
    assert batch.request_counts.completed == 5
