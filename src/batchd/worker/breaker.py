"""A circuit breaker per upstream: when the model server as a whole is down or overloaded, stop
sending, wait, probe with one request, and resume when it answers again.

    closed ──threshold requests in a row got no answer, or at least failure_ratio of the
             recent answers (at least threshold, of threshold lines) were 429/5xx──▶ open
    open ──cooldown (or the server's Retry-After, if longer) passed──▶ half-open (one probe)
    half-open ──probe answered──▶ closed
    half-open ──probe failed──▶ open, with the cooldown doubled (up to a maximum)

It opens only on broad failure. A handful of lines the server refuses (each 429 or 500 on its own,
however often they are tried) wait on their own retry times, while the other lines keep the
upstream busy: one Retry-After is the line's, not the upstream's, unless most answers say the same.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Hashable
from enum import Enum

from batchd.clock import Clock


class BreakerState(Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    def __init__(
        self,
        *,
        threshold: int,
        window: int,
        failure_ratio: float,
        base_cooldown: float,
        max_cooldown: float,
        clock: Clock,
    ) -> None:
        self._threshold = threshold
        self._failure_ratio = failure_ratio
        self._base_cooldown = base_cooldown
        self._max_cooldown = max_cooldown
        self._clock = clock
        self._cooldown = base_cooldown
        self._unanswered = 0  # requests in a row that got no answer
        self._recent: deque[Hashable | None] = deque(maxlen=window)  # the failed line, or None
        self._recent_failures = 0
        self._open_until = 0.0
        self._changed = asyncio.Event()
        self.state = BreakerState.CLOSED

    @property
    def is_open(self) -> bool:
        """Whether the upstream is considered down (failures now are its fault, not the line's)."""
        return self.state is not BreakerState.CLOSED

    @property
    def probing(self) -> bool:
        return self.state is BreakerState.HALF_OPEN

    @property
    def open_for(self) -> float:
        """Seconds until an open breaker lets a probe through (0 when closed or probing)."""
        if self.state is not BreakerState.OPEN:
            return 0.0
        return max(0.0, self._open_until - self._clock.now())

    async def admit(self) -> None:
        """Return when a request may be sent: at once while closed; as the single probe once the
        cooldown has passed; otherwise wait."""
        while True:
            if self.state is BreakerState.CLOSED:
                return
            wait = self._open_until - self._clock.now()
            if self.state is BreakerState.OPEN and wait <= 0:
                self.state = BreakerState.HALF_OPEN
                return
            self._changed.clear()
            probing = self.state is BreakerState.HALF_OPEN
            try:
                await asyncio.wait_for(
                    self._changed.wait(), self._max_cooldown if probing else wait
                )
            except TimeoutError:
                if probing and self.state is BreakerState.HALF_OPEN:
                    return  # the probe never reported back: send another

    def succeeded(self) -> None:
        """An answer that shows the server at work (2xx, or a 4xx about the request itself)."""
        self._unanswered = 0
        self._remember(None)
        self._cooldown = self._base_cooldown
        if self.state is not BreakerState.CLOSED:
            self._close()

    def failed(self, line: Hashable, *, answered: bool, pause: float | None = None) -> None:
        """A failure of ``line`` that may be the upstream's: a 429 or 5xx answer (``answered``),
        or no answer at all; ``pause`` its Retry-After.

        While open, late failures of requests sent before it opened change nothing but a longer
        Retry-After: only a failed probe doubles the cooldown."""
        now = self._clock.now()
        if self.state is BreakerState.OPEN:
            if pause is not None:
                self._open_until = max(self._open_until, now + pause)
            return
        if self.state is BreakerState.HALF_OPEN:
            self._cooldown = min(self._cooldown * 2, self._max_cooldown)
            self._open(now, self._cooldown if pause is None else max(pause, self._cooldown))
            return
        self._unanswered = 0 if answered else self._unanswered + 1
        self._remember(line)
        if self._unanswered >= self._threshold or self._mostly_failing():
            self._open(now, self._cooldown if pause is None else max(pause, self._cooldown))

    def abandoned(self) -> None:
        """A probe that was never sent: let the next request probe instead."""
        if self.state is BreakerState.HALF_OPEN:
            self._open(self._clock.now(), 0.0)

    def _remember(self, failed_line: Hashable | None) -> None:
        recent = self._recent
        if len(recent) == recent.maxlen:
            self._recent_failures -= recent[0] is not None
        recent.append(failed_line)
        self._recent_failures += failed_line is not None

    def _mostly_failing(self) -> bool:
        """Enough recent answers, at least ``failure_ratio`` of them failures, of enough lines
        that it cannot be a few lines of their own."""
        recent, threshold = self._recent, self._threshold
        return (
            len(recent) >= threshold
            and self._recent_failures >= self._failure_ratio * len(recent)
            and len(set(recent) - {None}) >= threshold
        )

    def _open(self, now: float, cooldown: float) -> None:
        self._open_until = now + cooldown
        self.state = BreakerState.OPEN
        self._forget()
        self._changed.set()

    def _close(self) -> None:
        self.state = BreakerState.CLOSED
        self._forget()
        self._changed.set()

    def _forget(self) -> None:
        """Start judging afresh: what came before the last change of state is history."""
        self._unanswered = 0
        self._recent.clear()
        self._recent_failures = 0
