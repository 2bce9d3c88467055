"""The adaptive concurrency limiter's policy, driven with a fake clock and made-up latencies: slow
start, +1 a window while answers stay fast, back off when latency rises (before any 429), halve
once a round trip on 429s, and stay between 1 and the ceiling."""

from __future__ import annotations

import asyncio

import pytest

from batchd.worker.limiter import INITIAL_LIMIT, ConcurrencyLimiter

FAST = 0.050  # seconds: the server's latency with no queue


class FakeClock:
    def __init__(self) -> None:
        self.time = 100.0

    def __call__(self) -> float:
        return self.time


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make_limiter(clock: FakeClock, ceiling: int = 64) -> ConcurrencyLimiter:
    return ConcurrencyLimiter(ceiling, clock=clock)


def window(limiter: ConcurrencyLimiter, clock: FakeClock, latency: float = FAST) -> None:
    """One round trip at the limit: every slot taken, then as many answers as the limit, each
    sent now and answered after ``latency``."""
    while limiter.try_acquire():
        limiter.sent()
    started = clock.time
    clock.time += latency
    for _ in range(limiter.limit):
        limiter.done()
        limiter.answered(200, started, latency)
        limiter.release()


def test_slow_start_doubles_the_limit_each_window_up_to_the_ceiling(clock: FakeClock) -> None:
    """Fast answers with every slot used: 8, 16, 32, 64, and never past the ceiling."""
    limiter = make_limiter(clock)
    assert limiter.limit == INITIAL_LIMIT
    seen = []
    for _ in range(5):
        window(limiter, clock)
        seen.append(limiter.limit)
    assert seen == [16, 32, 64, 64, 64]


def test_after_a_decrease_the_limit_grows_by_one_a_window(clock: FakeClock) -> None:
    """Once load has been seen, growth is additive: +1 per window of fast answers."""
    limiter = make_limiter(clock)
    window(limiter, clock)  # 16
    limiter.answered(429, clock.time, 0.001)  # 8
    assert limiter.limit == 8
    clock.time += 1
    seen = []
    for _ in range(3):
        window(limiter, clock)
        seen.append(limiter.limit)
    assert seen == [9, 10, 11]


def test_a_limit_the_senders_do_not_reach_does_not_grow(clock: FakeClock) -> None:
    """Fast answers while fewer requests than the limit are out say nothing about the server."""
    limiter = make_limiter(clock)
    for _ in range(3):
        limiter.try_acquire()
        limiter.sent()
        limiter.done()
        limiter.answered(200, clock.time, FAST)
        limiter.release()
        for _ in range(limiter.limit - 1):
            limiter.answered(200, clock.time, FAST)
    assert limiter.limit == INITIAL_LIMIT


def test_senders_holding_slots_while_waiting_for_lines_do_not_grow_it(clock: FakeClock) -> None:
    """Every slot held by a sender, but few requests out (the senders wait for lines): the
    limit was not used, and fast answers do not raise it."""
    limiter = make_limiter(clock)
    while limiter.try_acquire():
        pass
    for _ in range(3 * INITIAL_LIMIT):
        limiter.sent()
        limiter.done()
        limiter.answered(200, clock.time, FAST)
    assert limiter.limit == INITIAL_LIMIT


def test_a_burst_of_429s_halves_the_limit_once_a_round_trip(clock: FakeClock) -> None:
    """429s to requests sent before the decrease are the same burst: one halving; a 429 to a
    request sent after it halves again."""
    limiter = make_limiter(clock)
    window(limiter, clock)
    window(limiter, clock)  # 32
    sent = clock.time
    clock.time += 0.01
    for _ in range(20):
        limiter.answered(429, sent, 0.001)
    assert limiter.limit == 16
    later = clock.time
    limiter.answered(429, later, 0.001)
    assert limiter.limit == 8


def test_the_limit_never_falls_below_one(clock: FakeClock) -> None:
    """However many overloads in a row, one request may always be out."""
    limiter = make_limiter(clock)
    for _ in range(20):
        clock.time += 1
        limiter.answered(503, clock.time, 0.001)
        limiter.overloaded(clock.time)  # a timeout
    assert limiter.limit == 1
    assert limiter.try_acquire()


def test_rising_latency_backs_off_before_any_429(clock: FakeClock) -> None:
    """Answers slower than the floor by more than the tolerance shrink the limit in proportion
    (floor / mean), no refusal needed; slower within the tolerance, it grows."""
    limiter = make_limiter(clock)
    window(limiter, clock)
    window(limiter, clock)  # 32, floor 50 ms
    window(limiter, clock, latency=2 * FAST)  # queueing: back to where it did not
    assert limiter.limit == 16
    window(limiter, clock, latency=1.6 * FAST)  # within the tolerance and slack: +1
    assert limiter.limit == 17


def test_answers_that_are_not_about_load_leave_the_limit_alone(clock: FakeClock) -> None:
    """400s, 404s and 500s move nothing: they are the request's trouble, or the breaker's."""
    limiter = make_limiter(clock)
    for status in (400, 404, 422, 500, 502):
        limiter.answered(status, clock.time, 5.0)
    assert limiter.limit == INITIAL_LIMIT


def test_a_ceiling_below_the_initial_limit_is_the_limit(clock: FakeClock) -> None:
    """max_concurrency under INITIAL_LIMIT caps it from the start."""
    limiter = make_limiter(clock, ceiling=3)
    assert limiter.limit == 3
    window(limiter, clock)
    assert limiter.limit == 3


@pytest.mark.anyio
async def test_senders_beyond_the_limit_wait_until_a_slot_is_released(clock: FakeClock) -> None:
    """acquire blocks once the limit's slots are taken, and returns when one is given back."""
    limiter = make_limiter(clock, ceiling=2)
    await limiter.acquire()
    await limiter.acquire()
    waiting = asyncio.ensure_future(limiter.acquire())
    await asyncio.sleep(0)
    assert not waiting.done()
    limiter.release()
    await waiting
    assert limiter.in_use == 2


@pytest.mark.anyio
async def test_stopping_lets_waiting_senders_through(clock: FakeClock) -> None:
    """A sender waiting for a slot when the dispatcher stops goes on, to see it is stopping."""
    limiter = make_limiter(clock, ceiling=1)
    await limiter.acquire()
    waiting = asyncio.ensure_future(limiter.acquire())
    await asyncio.sleep(0)
    limiter.stop()
    await waiting


def test_a_server_that_became_slower_is_the_new_floor_once_down_to_one(clock: FakeClock) -> None:
    """Answers that stay slow with a single request out are the server's own latency now, not
    a queue batchd made: that becomes the floor, and the limit slow-starts from there."""
    limiter = make_limiter(clock)
    window(limiter, clock)  # 16, floor 50 ms
    seen = []
    for _ in range(6):
        window(limiter, clock, latency=10 * FAST)
        seen.append(limiter.limit)
    assert seen == [8, 4, 2, 1, 1, 2]


@pytest.mark.anyio
async def test_a_freed_slot_wakes_the_sender_waiting_longest_and_only_it(
    clock: FakeClock,
) -> None:
    """Slots go to waiting senders in order, one each; a sender cancelled while waiting gives
    up its place."""
    limiter = make_limiter(clock, ceiling=1)
    await limiter.acquire()
    first, gone, last = (asyncio.ensure_future(limiter.acquire()) for _ in range(3))
    await asyncio.sleep(0)
    gone.cancel()
    limiter.release()
    await asyncio.sleep(0)
    assert (first.done(), last.done()) == (True, False)
    limiter.release()
    await last
    assert limiter.in_use == 1
