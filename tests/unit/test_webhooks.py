"""Webhook signing and the delivery policy: signatures the official SDK verifies, the old secret
beside the new for its day, backoff that doubles up to its cap and stops a day after the event."""

from __future__ import annotations

import time

import openai
import pytest

from batchd.models import WebhookEndpoint
from batchd.webhooks import (
    RETRY_WINDOW,
    DeliveryPolicy,
    event_body,
    new_secret,
    signed_headers,
    signing_secrets,
)

NOW = 1_700_000_000


def endpoint(**overrides: object) -> WebhookEndpoint:
    values: dict[str, object] = {
        "id": "we_1",
        "project": "default",
        "name": "n",
        "url": "http://127.0.0.1/",
        "event_types": ("batch.completed",),
        "secret": new_secret(),
        "created_at": NOW,
        "updated_at": NOW,
    }
    return WebhookEndpoint(**{**values, **overrides})  # type: ignore[arg-type]


def test_the_sdk_verifies_a_signed_event() -> None:
    """``unwrap`` accepts the headers and body batchd sends, and parses the event."""
    hook = endpoint()
    now = int(time.time())
    body = event_body("evt_1", "batch.completed", "batch_1", now)
    client = openai.OpenAI(api_key="unused")

    event = client.webhooks.unwrap(
        body, signed_headers(hook, "evt_1", body, now), secret=hook.secret
    )

    assert event.type == "batch.completed" and event.data.id == "batch_1"
    with pytest.raises(openai.InvalidWebhookSignatureError):
        client.webhooks.unwrap(body, signed_headers(hook, "evt_1", body, now), secret=new_secret())


def test_a_kept_old_secret_signs_until_its_day_ends() -> None:
    """Both secrets sign while the old one is kept; only the new one after."""
    hook = endpoint(old_secret="whsec_b2xk", old_secret_until=NOW + 10)

    assert signing_secrets(hook, NOW) == [hook.secret, "whsec_b2xk"]
    assert signing_secrets(hook, NOW + 10) == [hook.secret]


def test_a_secret_is_32_random_bytes() -> None:
    assert new_secret().startswith("whsec_") and len(new_secret()) == len("whsec_") + 44
    assert new_secret() != new_secret()


@pytest.mark.parametrize(("attempts", "low", "high"), [(1, 2.5, 5), (3, 10, 20), (20, 50, 100)])
def test_backoff_doubles_with_jitter_up_to_its_cap(attempts: int, low: float, high: float) -> None:
    policy = DeliveryPolicy(base_delay=5, max_delay=100)
    for _ in range(50):
        at = policy.next_try(attempts, NOW, NOW)
        assert at is not None and low <= at - NOW <= high


def test_the_last_try_is_a_day_after_the_event_then_it_gives_up() -> None:
    policy = DeliveryPolicy(base_delay=5, max_delay=3600)

    assert policy.next_try(30, NOW, NOW + RETRY_WINDOW - 1) == NOW + RETRY_WINDOW
    assert policy.next_try(31, NOW, NOW + RETRY_WINDOW) is None
