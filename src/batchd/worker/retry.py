"""When to try a request again, and how long to wait first."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

RETRYABLE_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})
"""Answers that say "not now" rather than "never": the same request may well succeed later.
409 is here because OpenAI-compatible servers use it for transient lock conflicts."""


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int
    base_delay: float
    max_delay: float

    def may_retry(self, attempts: int) -> bool:
        return attempts < self.max_attempts

    def backoff(self, attempts: int) -> float:
        """Exponential backoff with full jitter: uniform in [0, base · 2^(attempts-1)], capped."""
        doublings = min(max(0, attempts - 1), 60)  # past 2^60 the cap has long won
        ceiling = min(self.max_delay, self.base_delay * 2.0**doublings)
        return random.uniform(0, ceiling)


def retry_after(headers: Mapping[str, str], now: float) -> float | None:
    """Seconds the server asked us to wait: ``retry-after-ms``, or ``Retry-After`` as seconds or
    an HTTP date."""
    millis = _seconds(headers.get("retry-after-ms"))
    if millis is not None:
        return millis / 1000
    value = headers.get("retry-after")
    if value is None:
        return None
    seconds = _seconds(value)
    if seconds is not None:
        return seconds
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - now)
    except (TypeError, ValueError):
        return None


def _seconds(text: str | None) -> float | None:
    """A finite, non-negative number, or None ("inf" would stop an upstream forever)."""
    try:
        value = float(text) if text is not None else math.nan
    except ValueError:
        return None
    return max(0.0, value) if math.isfinite(value) else None
