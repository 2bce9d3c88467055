"""A circuit breaker per upstream: when the model server is down or overloaded, stop sending,
wait, probe with one request, and resume when it answers again.

    closed ──threshold failures in a row, or a Retry-After──▶ open
    open ──cooldown passed──▶ half-open (one probe in flight)
    half-open ──probe answered──▶ closed
    half-open ──probe failed──▶ open, with the cooldown doubled (up to a maximum)
"""

from __future__ import annotations

import asyncio
from enum import Enum

from batchd.clock import Clock


class BreakerState(Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    def __init__(
        self, *, threshold: int, base_cooldown: float, max_cooldown: float, clock: Clock
    ) -> None:
        self._threshold = threshold
        self._base_cooldown = base_cooldown
        self._max_cooldown = max_cooldown
        self._clock = clock
        self._cooldown = base_cooldown
        self._failures = 0
        self._open_until = 0.0
        self._changed = asyncio.Event()
        self.state = BreakerState.CLOSED

    @property
    def is_open(self) -> bool:
        """Whether the upstream is considered down (failures now are its fault, not the line's)."""
        return self.state is not BreakerState.CLOSED

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
        self._failures = 0
        self._cooldown = self._base_cooldown
        if self.state is not BreakerState.CLOSED:
            self.state = BreakerState.CLOSED
            self._changed.set()

    def failed(self, pause: float | None = None) -> None:
        """A failure that is the upstream's (no answer, 429, 5xx); ``pause`` its Retry-After.

        While open, late failures of requests sent before it opened change nothing but a longer
        Retry-After: only a failed probe doubles the cooldown."""
        now = self._clock.now()
        if self.state is BreakerState.OPEN:
            if pause is not None:
                self._open_until = max(self._open_until, now + pause)
            return
        self._failures += 1
        if self.state is BreakerState.HALF_OPEN:
            self._cooldown = min(self._cooldown * 2, self._max_cooldown)
            self._open(now, self._cooldown if pause is None else max(pause, self._cooldown))
        elif pause is not None:
            self._open(now, pause)
        elif self._failures >= self._threshold:
            self._open(now, self._cooldown)

    def abandoned(self) -> None:
        """A probe that was never sent: let the next request probe instead."""
        if self.state is BreakerState.HALF_OPEN:
            self._open(self._clock.now(), 0.0)

    def _open(self, now: float, cooldown: float) -> None:
        self._open_until = now + cooldown
        self.state = BreakerState.OPEN
        self._changed.set()
