"""What an upstream's recent requests say about it, for people: working, or failing and why.

The breaker decides when to stop sending; this only remembers, so that the log, ``GET
/v1/upstreams`` and ``batchd wait`` can say "connection refused" instead of nothing.
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass

from batchd.clock import Clock
from batchd.errors import UpstreamError, UpstreamTimeout, UpstreamUnreachable

FAILING_AFTER = 3
"""Requests in a row that failed before the upstream counts as failing."""


@dataclass
class UpstreamHealth:
    clock: Clock
    failures: int = 0  # requests in a row that failed
    reason: str | None = None  # why the last one failed
    since: float | None = None  # when the current run of failures began
    answered: bool = False  # whether any request got an answer yet

    @property
    def failing(self) -> bool:
        return self.failures >= FAILING_AFTER

    def ok(self) -> None:
        self.answered = True
        self.failures, self.reason, self.since = 0, None, None

    def failed(self, reason: str) -> None:
        self.failures += 1
        self.reason = reason
        if self.since is None:
            self.since = self.clock.now()

    def answer_failed(self, status: int) -> None:
        self.answered = True
        self.failed(f"HTTP {status}" + (" (rate limited)" if status == 429 else ""))

    def unanswered(self, error: UpstreamError) -> None:
        self.failed(reason_of(error))


def reason_of(error: BaseException) -> str:
    """A few words for why no answer came: "connection refused", "timed out", …"""
    if isinstance(error, (UpstreamTimeout, TimeoutError)):
        return "timed out"
    cause = error.__cause__
    if isinstance(error, UpstreamUnreachable) and cause is not None:
        return _unreachable_reason(cause)
    if isinstance(error, UpstreamError):
        return error.message.removeprefix("The model server ").rstrip(".")
    return _unreachable_reason(error)


def _unreachable_reason(cause: BaseException) -> str:
    if isinstance(cause, ConnectionRefusedError):
        return "connection refused"
    if isinstance(cause, socket.gaierror):
        return "host name not found"
    if isinstance(cause, ssl.SSLError):
        return f"TLS failed ({type(cause).__name__})"
    return f"unreachable ({type(cause).__name__}: {cause})"
