"""Adaptive concurrency for one upstream: how many of its senders may have a request out now.

A limit between 1 and the upstream's ``max_concurrency`` (the ceiling), moved by what the
answers say about the server's load (AIMD, with a latency gradient as TCP Vegas or Netflix's
Gradient2 use):

- **slow start**: from ``INITIAL_LIMIT`` the limit doubles each window (one window: as many
  successful answers as the limit, about one round trip) until the first sign of load;
- **additive increase**: then +1 a window, while the window's mean latency stays within
  ``TOLERANCE`` times the floor plus ``SLACK`` (the floor: the least window mean seen lately; a
  mean, not one request's latency, since one short answer says little about a server answering
  long ones) and the limit was reached in it (a limit the senders do not use says nothing about
  the server);
- **latency decrease**: a window slower than that shows requests queueing in the server, before
  it refuses any: the limit is scaled by ``floor / mean`` (by ``MIN_GRADIENT`` at most), back
  to where it did not queue; it then climbs again, one a window. The sawtooth stays between the
  server's knee (where latency starts to grow) and ``TOLERANCE`` times it, and each time it
  comes down the floor is measured again. Down to 1 and still slow, the server itself has
  become slower (longer answers, another tenant): that is the new floor, and slow start again;
- **multiplicative decrease**: a 429, 503 or 504 answer or a timeout halves it
  (``OVERLOAD_DECREASE``), once a round trip: answers to requests sent before the last decrease
  are the same burst and move it no further.

Other failures (400s, invalid answers, refused connections) say nothing about load: they leave
it alone; an upstream that is down is the breaker's business.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable

log = logging.getLogger("batchd.worker")

INITIAL_LIMIT = 8
"""Where slow start begins (or the ceiling, if lower)."""
OVERLOAD_DECREASE = 0.5
"""The limit is multiplied by this on a 429, 503, 504 or timeout."""
TOLERANCE = 1.5
"""A window's mean latency up to this many times the floor is no sign of queueing: a server
whose throughput still grows while its latency does (a GPU's batch filling up) is pushed this
far."""
SLACK = 0.010
"""Seconds of latency over ``TOLERANCE`` times the floor that still are no sign of queueing:
against a server that answers in a millisecond, batchd's own event loop is what moves the
latency, and backing off would only slow batchd down."""
MIN_GRADIENT = 0.5
"""The most one slow window takes off the limit: half."""
FLOOR_DRIFT = 1.005
"""Each window the floor rises by this much unless seen again: a server that really became
slower (longer prompts, another model) is not held to a latency it no longer has."""
OVERLOAD_STATUSES = frozenset({429, 503, 504})
"""Answers that say "too much load": they shrink the limit."""


class ConcurrencyLimiter:
    """The limit and the senders holding a slot under it. ``acquire`` waits while the slots in
    use reach the limit; ``release`` gives one back; ``sent``/``done`` count the requests out
    (a sender holds its slot while it waits for a line, too: only requests out say the limit
    was used); ``answered`` and ``overloaded`` feed the policy. ``clock`` is the one the
    senders time requests with (``started``)."""

    def __init__(
        self,
        ceiling: int,
        *,
        clock: Callable[[], float] = time.perf_counter,
        on_change: Callable[[int], None] = lambda limit: None,
        name: str = "",
    ) -> None:
        self.ceiling = ceiling
        self.in_use = 0
        self.in_flight = 0
        self._limit = float(min(ceiling, INITIAL_LIMIT))
        self._clock = clock
        self._on_change = on_change
        self._name = name
        self._slow_start = True
        self._floor: float | None = None
        self._last_decrease = -math.inf
        self._waiters: deque[asyncio.Future[None]] = deque()  # senders waiting, first first
        self._stopped = False
        self._count = 0  # the current window's successful answers and their latencies' sum
        self._sum = 0.0
        self._reached = False  # whether as many requests as the limit were out during it
        self._new_window()
        on_change(self.limit)

    @property
    def limit(self) -> int:
        return max(1, int(self._limit))

    # ---------------------------------------------------------------- slots

    def try_acquire(self) -> bool:
        """Take a slot if one is free under the limit."""
        if self.in_use >= self.limit and not self._stopped:
            return False
        self.in_use += 1
        return True

    async def acquire(self) -> None:
        """Wait for a slot (at once once stopped: the sender is to see that and end). A slot
        freed is handed to the first sender waiting, and wakes only that one."""
        if not self._waiters and self.try_acquire():
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed a slot, then cancelled: give it on
            else:
                self._waiters.remove(waiter)
            raise

    def sent(self) -> None:
        """A request went out under a slot."""
        self.in_flight += 1
        if self.in_flight >= self.limit:
            self._reached = True

    def done(self) -> None:
        """A request's answer (or its failure) came."""
        self.in_flight -= 1

    def release(self) -> None:
        self.in_use -= 1
        self._hand_on()

    def stop(self) -> None:
        """Let every waiting sender through: the dispatcher is stopping."""
        self._stopped = True
        self._hand_on()

    def _hand_on(self) -> None:
        """Hand the free slots to the senders waiting longest."""
        waiters = self._waiters
        while waiters and (self.in_use < self.limit or self._stopped):
            self.in_use += 1
            waiters.popleft().set_result(None)

    # ---------------------------------------------------------------- the policy

    def answered(self, status: int, started: float, latency: float) -> None:
        """An HTTP answer to a request sent at ``started`` that took ``latency`` seconds."""
        if 200 <= status < 300:
            self._succeeded(started, latency)
        elif status in OVERLOAD_STATUSES:
            self.overloaded(started)

    def overloaded(self, started: float) -> None:
        """The server refused a request sent at ``started`` for load, or it timed out."""
        if started < self._last_decrease:
            return  # sent before the last decrease: the same burst
        self._decrease(self._limit * OVERLOAD_DECREASE, "overloaded")

    def _succeeded(self, started: float, latency: float) -> None:
        if started < self._last_decrease:
            return  # it measured the load before the last decrease
        self._count += 1
        self._sum += latency
        if self._count >= self.limit:
            self._end_window()

    def _end_window(self) -> None:
        mean, reached = self._sum / self._count, self._reached
        floor = mean if self._floor is None else min(self._floor * FLOOR_DRIFT, mean)
        self._floor = floor
        self._new_window()
        queueing = mean > TOLERANCE * floor + SLACK
        if queueing and self.limit == 1:
            self._floor, self._slow_start = mean, True  # alone, and still slow: the server is
        elif queueing:
            self._decrease(self._limit * max(MIN_GRADIENT, floor / mean), "queueing")
        elif reached:
            grown = self._limit * 2 if self._slow_start else self._limit + 1
            self._set(min(float(self.ceiling), grown), "room")

    def _decrease(self, limit: float, reason: str) -> None:
        self._slow_start = False
        self._last_decrease = self._clock()
        self._new_window()
        self._set(max(1.0, limit), reason)

    def _set(self, limit: float, reason: str) -> None:
        before = self.limit
        self._limit = limit
        if self.limit == before:
            return
        self._hand_on()
        self._on_change(self.limit)
        log.debug(
            "concurrency_changed",
            extra={"upstream": self._name, "limit": self.limit, "was": before, "reason": reason},
        )

    def _new_window(self) -> None:
        self._count = 0
        self._sum = 0.0
        self._reached = self.in_flight >= self.limit
