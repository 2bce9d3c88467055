"""Webhooks through the official SDK: endpoints made with ``client.webhooks``, and every batch
that ends delivered to a receiver in the test, where ``client.webhooks.unwrap`` checks the
Standard Webhooks signature and parses OpenAI's event."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.webhooks import (
    BatchCancelledWebhookEvent,
    BatchCompletedWebhookEvent,
    BatchExpiredWebhookEvent,
    BatchFailedWebhookEvent,
    DeletedWebhookEndpoint,
    WebhookEndpoint,
    WebhookEndpointTestResult,
    WebhookEndpointWithSecret,
)

from tests.e2e.conftest import ModelServer, Server, ServerFactory, wait_for_batch
from tests.e2e.lines import request_line, submit
from tests.support.ports import free_port

FAST_WEBHOOKS = {"BATCHD_WEBHOOK_RETRY_BASE_DELAY": "0.2", "BATCHD_WEBHOOK_RETRY_MAX_DELAY": "1"}
ALL_TYPES = ["batch.completed", "batch.failed", "batch.expired", "batch.cancelled"]


@dataclass
class Received:
    body: bytes
    headers: dict[str, str]


class Receiver:
    """An HTTP server on 127.0.0.1 that records each POST and answers the next status of
    ``statuses`` (200 once they run out)."""

    def __init__(
        self, port: int | None = None, statuses: list[int] | None = None, *, hang: bool = False
    ) -> None:
        self.port = port or free_port()
        self.statuses = list(statuses or [])
        self.released = threading.Event()  # a hanging receiver answers once this is set
        if not hang:
            self.released.set()
        self.received: list[Received] = []
        self._changed = threading.Condition()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                with receiver._changed:
                    receiver.received.append(Received(body, dict(self.headers.items())))
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                    receiver._changed.notify_all()
                receiver.released.wait()
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.released.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def wait_for(self, count: int, within: float = 30.0) -> list[Received]:
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.received) >= count, timeout=within):
                raise AssertionError(f"{len(self.received)} deliveries, not {count}")
            return list(self.received)


@pytest.fixture
def receivers() -> Iterator[list[Receiver]]:
    made: list[Receiver] = []
    yield made
    for receiver in made:
        receiver.stop()


@pytest.fixture
def receiver(receivers: list[Receiver]) -> Receiver:
    started = Receiver().start()
    receivers.append(started)
    return started


@pytest.fixture
def hooks_server(start_server: ServerFactory) -> Server:
    return start_server(extra_env=FAST_WEBHOOKS)


def subscribe(
    client: openai.OpenAI, receiver: Receiver, types: list[str] | None = None
) -> WebhookEndpointWithSecret:
    return client.webhooks.create(
        name="test hook",
        url=receiver.url,
        event_types=types or ALL_TYPES,  # type: ignore[arg-type]
    )


def unwrap(client: openai.OpenAI, received: Received, secret: str) -> Any:
    return client.webhooks.unwrap(received.body, received.headers, secret=secret)


def run_batch(client: openai.OpenAI, tmp_path: Path, lines: int = 2, window: str = "24h") -> Any:
    batch = submit(client, tmp_path, [request_line(i) for i in range(lines)], window=window)
    return wait_for_batch(client, batch.id, within=30)


def test_a_completed_batch_is_delivered_signed(
    hooks_server: Server, receiver: Receiver, tmp_path: Path
) -> None:
    """The receiver gets ``batch.completed`` for the batch; ``unwrap`` verifies it with the
    endpoint's secret."""
    client = hooks_server.client()
    endpoint = subscribe(client, receiver)
    assert endpoint.signing_secret.startswith("whsec_")

    done = run_batch(client, tmp_path)

    (received,) = receiver.wait_for(1)
    event = unwrap(client, received, endpoint.signing_secret)
    assert isinstance(event, BatchCompletedWebhookEvent)
    assert event.data.id == done.id and event.object == "event"
    assert event.id.startswith("evt_") and received.headers["webhook-id"] == event.id
    assert event.created_at == done.completed_at
    assert "webhook_delivered" in hooks_server.log()


def test_failed_cancelled_and_expired_batches_send_their_types(
    hooks_server: Server, receiver: Receiver, fake: ModelServer, tmp_path: Path
) -> None:
    """A batch that fails validation, one cancelled and one past its window each send the
    event of their status."""
    client = hooks_server.client()
    secret = subscribe(client, receiver).signing_secret
    failed = client.batches.create(
        input_file_id="file-missing", endpoint="/v1/chat/completions", completion_window="24h"
    )
    fake.set_faults(rules=[{"fault": "hang", "custom_id": "^req-1$"}])
    expiring = submit(client, tmp_path, [request_line(i) for i in range(2)], window="3s")
    cancelled = submit(client, tmp_path, [request_line(i) for i in range(2)])
    client.batches.cancel(cancelled.id)

    received = receiver.wait_for(3)

    events = {unwrap(client, r, secret).data.id: unwrap(client, r, secret) for r in received}
    assert isinstance(events[failed.id], BatchFailedWebhookEvent)
    assert isinstance(events[expiring.id], BatchExpiredWebhookEvent)
    assert isinstance(events[cancelled.id], BatchCancelledWebhookEvent)


def test_a_failing_receiver_gets_the_event_on_a_later_try(
    hooks_server: Server, receivers: list[Receiver], tmp_path: Path
) -> None:
    """Two 500s, then a 200: three tries of the same event, the same ``webhook-id``."""
    receiver = Receiver(statuses=[500, 500]).start()
    receivers.append(receiver)
    client = hooks_server.client()
    secret = subscribe(client, receiver).signing_secret

    done = run_batch(client, tmp_path)

    received = receiver.wait_for(3)
    assert len({r.headers["webhook-id"] for r in received}) == 1
    assert unwrap(client, received[-1], secret).data.id == done.id
    assert hooks_server.log().count("webhook_failed") == 2


def test_a_hanging_receiver_delays_only_its_own_deliveries(
    start_server: ServerFactory, receivers: list[Receiver], tmp_path: Path
) -> None:
    """While one endpoint never answers, the batch ends and the other endpoint gets its event;
    the hanging one's try times out and is tried again."""
    hanging, answering = Receiver(hang=True).start(), Receiver().start()
    receivers.extend([hanging, answering])
    server = start_server(extra_env={**FAST_WEBHOOKS, "BATCHD_WEBHOOK_TIMEOUT": "1"})
    client = server.client()
    subscribe(client, hanging)
    subscribe(client, answering)

    run_batch(client, tmp_path)

    answering.wait_for(1)
    hanging.wait_for(2)  # the first try timed out
    assert '"status":"timeout"' in server.log()


def test_an_event_survives_kill_9(
    start_server: ServerFactory, receivers: list[Receiver], tmp_path: Path
) -> None:
    """The receiver is down when the batch ends; batchd is killed; once both are back, the
    event is delivered from the store's outbox."""
    receiver = Receiver()  # not listening yet
    receivers.append(receiver)
    server = start_server(extra_env=FAST_WEBHOOKS)
    client = server.client()
    secret = subscribe(client, receiver).signing_secret
    done = run_batch(client, tmp_path)
    _wait_for_log(server, "webhook_failed")

    server.process.kill()
    server.process.wait()
    receiver.start()
    restarted = start_server(data_dir=server.data_dir, extra_env=FAST_WEBHOOKS)

    (received, *_) = receiver.wait_for(1)
    assert unwrap(restarted.client(), received, secret).data.id == done.id


def test_a_rotated_secret_signs_new_deliveries(
    hooks_server: Server, receiver: Receiver, tmp_path: Path
) -> None:
    """After a rotation the new secret verifies and the old one does not; with the old kept
    for a day, both do."""
    client = hooks_server.client()
    old = subscribe(client, receiver)
    new = client.webhooks.rotate_secret(old.id)
    assert new.signing_secret != old.signing_secret

    run_batch(client, tmp_path)

    (received,) = receiver.wait_for(1)
    unwrap(client, received, new.signing_secret)
    with pytest.raises(openai.InvalidWebhookSignatureError):
        unwrap(client, received, old.signing_secret)
    kept = client.webhooks.rotate_secret(old.id, keep_old_secret_active_for_24_hours=True)
    run_batch(client, tmp_path)
    second = receiver.wait_for(2)[1]
    unwrap(client, second, kept.signing_secret)
    unwrap(client, second, new.signing_secret)


def test_a_deleted_endpoint_gets_nothing(
    hooks_server: Server, receivers: list[Receiver], tmp_path: Path
) -> None:
    """Of two endpoints, the deleted one gets no delivery; the other gets its event."""
    gone, kept = Receiver().start(), Receiver().start()
    receivers.extend([gone, kept])
    client = hooks_server.client()
    deleted = client.webhooks.delete(subscribe(client, gone).id)
    assert deleted.deleted
    subscribe(client, kept)

    run_batch(client, tmp_path)

    kept.wait_for(1)
    assert gone.received == []


def test_endpoints_are_per_project(start_server: ServerFactory, receiver: Receiver) -> None:
    """Another project's list is empty and its ids are 404s."""
    server = start_server("--api-key", "sk-a", "--api-key", "other:sk-b")
    mine, theirs = server.client("sk-a"), server.client("sk-b")
    endpoint = subscribe(mine, receiver)

    assert list(theirs.webhooks.list()) == []
    with pytest.raises(openai.NotFoundError):
        theirs.webhooks.retrieve(endpoint.id)
    with pytest.raises(openai.NotFoundError):
        theirs.webhooks.delete(endpoint.id)
    assert [e.id for e in mine.webhooks.list()] == [endpoint.id]


def test_the_endpoint_api_answers_openais_shapes(hooks_server: Server, receiver: Receiver) -> None:
    """Create, retrieve, update, list, rotate, test and delete answer exactly the SDK's types'
    fields; the secret only on create and rotate."""
    client = hooks_server.client()
    http = httpx.Client(base_url=hooks_server.base_url, headers={"authorization": "Bearer sk-test"})
    body = {"name": "n", "url": receiver.url, "event_types": ["batch.completed"]}
    created = _shaped(http.post("/webhook_endpoints", json=body), WebhookEndpointWithSecret)
    one = f"/webhook_endpoints/{created.id}"
    assert created.signing_secret_hint == "whsec_****" + created.signing_secret[-4:]
    fetched = _shaped(http.get(one), WebhookEndpoint)
    assert fetched.updated_at == created.created_at
    unchanged = _shaped(http.post(one, json={"name": "n"}), WebhookEndpoint)
    assert unchanged == fetched
    updated = client.webhooks.update(created.id, name="renamed", event_types=["batch.failed"])
    assert (updated.name, updated.event_types) == ("renamed", ["batch.failed"])
    listing = http.get("/webhook_endpoints").json()
    assert set(listing) == {"object", "data", "first_id", "last_id", "has_more"}
    _shaped(http.post(f"{one}/rotate_secret", json={}), WebhookEndpointWithSecret)
    result = _shaped(
        http.post(f"{one}/test", json={"event_type": "batch.completed"}), WebhookEndpointTestResult
    )
    assert result.status_code == 200 and len(receiver.wait_for(1)) == 1
    assert client.webhooks.event_types.list().data == [
        "batch.cancelled",
        "batch.completed",
        "batch.expired",
        "batch.failed",
    ]
    _shaped(http.delete(one), DeletedWebhookEndpoint)
    http.close()
    nobody = subscribe(client, Receiver())  # nothing listens there
    with pytest.raises(openai.BadRequestError) as raised:
        client.webhooks.test(nobody.id, event_type="batch.completed")
    assert raised.value.code == "webhook_delivery_failed"


BAD_ENDPOINTS = [
    ({"name": "n", "url": "ftp://x/", "event_types": ["batch.completed"]}, "url"),
    ({"name": "n", "url": "http://[::1", "event_types": ["batch.completed"]}, "url"),
    (
        {"name": "n", "url": "http://127.0.0.1/", "event_types": ["response.completed"]},
        "event_types",
    ),
    ({"name": "n", "url": "http://127.0.0.1/", "event_types": []}, "event_types"),
    ({"url": "http://127.0.0.1/", "event_types": ["batch.completed"]}, "name"),
]


def test_a_bad_endpoint_is_a_400(hooks_server: Server) -> None:
    """A URL that is not http(s) or cannot be parsed, an event type batchd never sends, no
    types or no name."""
    for body, param in BAD_ENDPOINTS:
        answer = httpx.post(f"{hooks_server.base_url}/webhook_endpoints", json=body)
        assert answer.status_code == 400
        assert answer.json()["error"]["param"] == param


def _shaped(answer: httpx.Response, model: type[Any]) -> Any:
    """The answer as the SDK's type, having exactly its fields."""
    answer.raise_for_status()
    data = answer.json()
    assert set(data) == set(model.model_fields), data
    return model.model_validate(data)


def _wait_for_log(server: Server, text: str, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while text not in server.log():
        assert time.monotonic() < deadline, f"no {text} in the log"
        time.sleep(0.05)
