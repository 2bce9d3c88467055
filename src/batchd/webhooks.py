"""Webhooks, as OpenAI sends them: a project's endpoints (the ``/v1/webhook_endpoints`` use
cases), the ``batch.*`` events, their Standard Webhooks signature, and the delivery policy
(retried with backoff for a day after the event).

A signing secret is ``whsec_`` and the base64 of 32 random bytes. It is stored as it is in the
metadata store (signing needs it), and shown in full only when made (create, rotate_secret).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import os
import random
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

from batchd import ids
from batchd.clock import Clock, whole_seconds
from batchd.errors import InvalidRequest, NotFound, unsupported_value
from batchd.models import TERMINAL, WebhookDelivery, WebhookEndpoint
from batchd.store import Page, SqlStore
from batchd.text import MAX_ID, storable

log = logging.getLogger("batchd.webhooks")

EVENT_TYPES = tuple(f"batch.{status.value}" for status in sorted(TERMINAL))
"""The events batchd sends: one when a batch ends, named by its terminal status."""
RETRY_WINDOW = 86_400
"""Seconds after an event that its deliveries are still tried."""
OLD_SECRET_GRACE = 86_400
"""Seconds a rotated-out secret still signs, when asked to stay active."""
SECRET_BYTES = 32
MAX_NAME, MAX_URL = 256, 2048
USER_AGENT = "batchd-webhooks"


def new_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(SECRET_BYTES)).decode()


def secret_hint(secret: str) -> str:
    """What a listing shows of a secret: its prefix and last four characters."""
    return f"whsec_****{secret[-4:]}"


def signature(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """``v1,`` and the base64 HMAC-SHA256, keyed by the secret's decoded bytes, of
    ``{webhook_id}.{timestamp}.{body}`` (Standard Webhooks)."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = b"%s.%d.%s" % (webhook_id.encode(), timestamp, body)
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def signing_secrets(endpoint: WebhookEndpoint, now: int) -> list[str]:
    """The endpoint's secret, and the one it replaced while that one is kept active."""
    kept = endpoint.old_secret_until is not None and now < endpoint.old_secret_until
    return (
        [endpoint.secret, endpoint.old_secret]
        if kept and endpoint.old_secret
        else [endpoint.secret]
    )


def event_body(event_id: str, event_type: str, batch_id: str, created_at: int) -> bytes:
    """The event as OpenAI sends it (``BatchCompletedWebhookEvent`` and its siblings)."""
    return orjson.dumps(
        {
            "id": event_id,
            "object": "event",
            "created_at": created_at,
            "type": event_type,
            "data": {"id": batch_id},
        }
    )


def signed_headers(
    endpoint: WebhookEndpoint, event_id: str, body: bytes, now: int
) -> dict[str, str]:
    """``webhook-id`` is the event's id, the same on every try, for receivers to drop repeats."""
    signatures = (signature(s, event_id, now, body) for s in signing_secrets(endpoint, now))
    return {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": event_id,
        "webhook-timestamp": str(now),
        "webhook-signature": " ".join(signatures),
    }


@dataclass(frozen=True)
class DeliveryPolicy:
    """Exponential backoff with jitter: about ``base_delay`` · 2^(attempts-1), capped at
    ``max_delay``, the last try at ``RETRY_WINDOW`` after the event; then give up."""

    base_delay: float
    max_delay: float
    window: float = RETRY_WINDOW

    def next_try(self, attempts: int, created_at: int, now: float) -> float | None:
        """When to try again after ``attempts`` failed tries; None to give up."""
        deadline = created_at + self.window
        if now >= deadline:
            return None
        doublings = min(max(0, attempts - 1), 60)
        delay = min(self.max_delay, self.base_delay * 2.0**doublings)
        return min(deadline, now + delay * random.uniform(0.5, 1.0))


class DeliveryFailed(Exception):
    """The receiver could not be reached, or did not answer in time."""


async def post_event(
    client: httpx.AsyncClient,
    endpoint: WebhookEndpoint,
    event_id: str,
    body: bytes,
    now: int,
) -> int:
    """POST the signed event to the endpoint's URL; the status of the answer (its body unread).
    Redirects are not followed: only the configured URL is sent to."""
    headers = signed_headers(endpoint, event_id, body, now)
    try:
        async with client.stream("POST", endpoint.url, content=body, headers=headers) as answer:
            return answer.status_code
    except httpx.HTTPError as exc:
        raise DeliveryFailed(f"{type(exc).__name__}: {exc}") from exc


def delivery_body(delivery: WebhookDelivery) -> bytes:
    return event_body(delivery.event_id, delivery.type, delivery.batch_id, delivery.created_at)


class Webhooks:
    """The use cases of ``/v1/webhook_endpoints``, each within the caller's project."""

    def __init__(self, store: SqlStore, clock: Clock, timeout: float) -> None:
        self._store = store
        self._clock = clock
        self._timeout = timeout

    async def create(self, project: str, params: dict[str, Any]) -> WebhookEndpoint:
        now = whole_seconds(self._clock)
        endpoint = WebhookEndpoint(
            id=ids.webhook_endpoint_id(),
            project=project,
            name=_name(params.get("name")),
            url=_url(params.get("url")),
            event_types=_event_types(params.get("event_types")),
            secret=new_secret(),
            created_at=now,
            updated_at=now,
        )
        await self._store.webhooks.insert_endpoint(endpoint)
        log.info("webhook_endpoint_created", extra=_fields(endpoint))
        return endpoint

    async def get(self, project: str, endpoint_id: str) -> WebhookEndpoint:
        found = storable(endpoint_id, MAX_ID)
        endpoint = await self._store.webhooks.get_endpoint(project, endpoint_id) if found else None
        if endpoint is None:
            raise NotFound(
                f"No webhook endpoint found with id '{endpoint_id[:MAX_ID]}'.",
                param="webhook_endpoint_id",
            )
        return endpoint

    async def list(self, project: str, *, limit: int, after: str | None) -> Page[WebhookEndpoint]:
        if after is not None and not storable(after, MAX_ID):
            return Page([], has_more=False)
        return await self._store.webhooks.list_endpoints(project, limit=limit, after=after)

    async def update(
        self, project: str, endpoint_id: str, params: dict[str, Any]
    ) -> WebhookEndpoint:
        """Only the fields given change; ``updated_at`` moves only if one did."""
        endpoint = await self.get(project, endpoint_id)
        changes: dict[str, Any] = {}
        if params.get("name") is not None:
            changes["name"] = _name(params["name"])
        if params.get("url") is not None:
            changes["url"] = _url(params["url"])
        if params.get("event_types") is not None:
            changes["event_types"] = _event_types(params["event_types"])
        updated = replace(endpoint, **changes)
        if updated == endpoint:
            return endpoint
        updated = replace(updated, updated_at=whole_seconds(self._clock))
        await self._store.webhooks.update_endpoint(updated)
        log.info("webhook_endpoint_updated", extra=_fields(updated))
        return updated

    async def delete(self, project: str, endpoint_id: str) -> str:
        endpoint = await self.get(project, endpoint_id)
        await self._store.webhooks.delete_endpoint(project, endpoint.id)
        log.info("webhook_endpoint_deleted", extra=_fields(endpoint))
        return endpoint.id

    async def rotate_secret(
        self, project: str, endpoint_id: str, params: dict[str, Any]
    ) -> WebhookEndpoint:
        """A new secret; the old one keeps signing (beside it) for a day if asked."""
        endpoint = await self.get(project, endpoint_id)
        keep = params.get("keep_old_secret_active_for_24_hours", False)
        if not isinstance(keep, bool):
            raise InvalidRequest(
                "Invalid type for 'keep_old_secret_active_for_24_hours': expected a boolean.",
                code="invalid_type",
                param="keep_old_secret_active_for_24_hours",
            )
        now = whole_seconds(self._clock)
        rotated = replace(
            endpoint,
            secret=new_secret(),
            updated_at=now,
            old_secret=endpoint.secret if keep else None,
            old_secret_until=now + OLD_SECRET_GRACE if keep else None,
        )
        await self._store.webhooks.update_endpoint(rotated)
        log.info("webhook_secret_rotated", extra={**_fields(rotated), "kept_old": keep})
        return rotated

    async def test(self, project: str, endpoint_id: str, params: dict[str, Any]) -> int:
        """Send a sample event of ``event_type`` (about a batch that does not exist) now; the
        status the endpoint answered."""
        endpoint = await self.get(project, endpoint_id)
        event_type = params.get("event_type")
        if event_type not in EVENT_TYPES:
            raise unsupported_value("event_type", event_type, EVENT_TYPES)
        now = whole_seconds(self._clock)
        event_id = ids.event_id()
        body = event_body(event_id, event_type, ids.batch_id(), now)
        try:
            async with (
                asyncio.timeout(self._timeout),
                httpx.AsyncClient(timeout=self._timeout, follow_redirects=False) as client,
            ):
                return await post_event(client, endpoint, event_id, body, now)
        except (DeliveryFailed, TimeoutError) as exc:
            raise InvalidRequest(
                f"The test event could not be delivered to {endpoint.url}: "
                f"{exc or 'no answer within webhook_timeout'}",
                code="webhook_delivery_failed",
            ) from exc


def _fields(endpoint: WebhookEndpoint) -> dict[str, object]:
    return {"endpoint_id": endpoint.id, "project": endpoint.project, "url": endpoint.url}


def _name(value: object) -> str:
    if not isinstance(value, str) or not value.strip() or not storable(value, MAX_NAME):
        raise InvalidRequest(
            f"Invalid 'name': 1 to {MAX_NAME} characters of text, without NUL.",
            code="invalid_value",
            param="name",
        )
    return value


def _url(value: object) -> str:
    """An absolute http:// or https:// URL. Plain http is allowed: receivers of a self-hosted
    service are often on a private network."""
    try:
        parts = urlsplit(value) if isinstance(value, str) and storable(value, MAX_URL) else None
    except ValueError:  # e.g. an unclosed IPv6 bracket
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequest(
            f"Invalid 'url': an http:// or https:// URL of at most {MAX_URL} characters.",
            code="invalid_value",
            param="url",
        )
    assert isinstance(value, str)
    return value


def _event_types(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise InvalidRequest(
            "Invalid 'event_types': expected a non-empty list of event types.",
            code="invalid_value",
            param="event_types",
        )
    for event_type in value:
        if event_type not in EVENT_TYPES:
            raise unsupported_value("event_types", event_type, EVENT_TYPES)
    return tuple(dict.fromkeys(value))
