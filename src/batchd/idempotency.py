"""Idempotent creates: a client that retries a create with the same key gets the object its
first try made, never a second one, for ``IDEMPOTENCY_WINDOW``; the same key with other
parameters is a 409."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from batchd.errors import Conflict, InvalidRequest
from batchd.text import storable

IDEMPOTENCY_WINDOW = 86_400
"""Seconds a key is remembered."""
MAX_KEY = 255
BODY_FIELD = "idempotency_key"
"""llama-stack's name for it, sent in the body (``extra_body``)."""


def idempotency_key_of(params: dict[str, Any], header: str | None) -> str | None:
    """The key from the ``Idempotency-Key`` header or the body field (the header wins), checked."""
    key = header if header is not None else params.get(BODY_FIELD)
    if key is None:
        return None
    if not isinstance(key, str) or not key or not storable(key, MAX_KEY):
        raise InvalidRequest(
            f"Invalid idempotency key: 1 to {MAX_KEY} characters of text, without NUL.",
            code="invalid_value",
            param=BODY_FIELD,
        )
    return key


def fingerprint_of(params: dict[str, Any]) -> str:
    """A digest of the parameters, whatever the order of their keys (metadata's too)."""
    given = {name: value for name, value in params.items() if name != BODY_FIELD}
    return hashlib.sha256(orjson.dumps(given, option=orjson.OPT_SORT_KEYS)).hexdigest()


def idempotency_conflict(key: str) -> Conflict:
    return Conflict(
        f"Conflict: the idempotency key '{key}' was already used with different parameters "
        "within the last 24 hours.",
        code="idempotency_key_reused",
        param=BODY_FIELD,
    )
