"""The circuit breaker: closed, open for a cooldown on broad failure only, one probe half-open,
closed again."""

from __future__ import annotations

import asyncio

import pytest

from batchd.worker.breaker import BreakerState, CircuitBreaker

BLOCKS = 0.05  # seconds an admit must stay waiting to count as "blocked"

pytestmark = pytest.mark.anyio


class FakeClock:
    def __init__(self, start: float = 1_000.0) -> None:
        self.time = start

    def now(self) -> float:
        return self.time

    def advance(self, seconds: float) -> None:
        self.time += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


WINDOW = 10


def make_breaker(
    clock: FakeClock, threshold: int = 3, base_cooldown: float = 10.0, max_cooldown: float = 35.0
) -> CircuitBreaker:
    return CircuitBreaker(
        threshold=threshold,
        window=WINDOW,
        failure_ratio=0.5,
        base_cooldown=base_cooldown,
        max_cooldown=max_cooldown,
        clock=clock,
    )


async def admits(breaker: CircuitBreaker, within: float = BLOCKS) -> bool:
    """Whether ``admit()`` returns within ``within`` seconds (it is abandoned if not)."""
    try:
        await asyncio.wait_for(breaker.admit(), within)
    except TimeoutError:
        return False
    return True


def fail(breaker: CircuitBreaker, times: int) -> None:
    """``times`` requests, each of its own line, that got no answer."""
    for line in range(times):
        breaker.failed(line, answered=False)


def answer(
    breaker: CircuitBreaker, failures: int, successes: int, pause: float | None = None
) -> None:
    """Answers, failed ones (429/5xx, with ``pause`` as their Retry-After) spread evenly among
    good ones."""
    total = failures + successes
    for i in range(total):
        if (i + 1) * failures // total != i * failures // total:
            breaker.failed(i, answered=True, pause=pause)
        else:
            breaker.succeeded()


async def cancelled(task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def opened(
    clock: FakeClock, threshold: int = 3, base_cooldown: float = 10.0, max_cooldown: float = 35.0
) -> CircuitBreaker:
    """A breaker just opened by ``threshold`` failures in a row."""
    breaker = make_breaker(clock, threshold, base_cooldown, max_cooldown)
    fail(breaker, threshold)
    assert breaker.state is BreakerState.OPEN
    return breaker


async def test_a_closed_breaker_admits_at_once(clock: FakeClock) -> None:
    """While closed, every admit returns immediately, any number at once."""
    breaker = make_breaker(clock)
    assert breaker.state is BreakerState.CLOSED and not breaker.is_open
    results = await asyncio.gather(*(admits(breaker) for _ in range(10)))
    assert all(results)
    assert breaker.state is BreakerState.CLOSED


async def test_it_opens_after_threshold_failures_in_a_row_and_not_before(clock: FakeClock) -> None:
    """threshold - 1 failures leave it closed; the threshold-th opens it."""
    breaker = make_breaker(clock, threshold=3)
    fail(breaker, 2)
    assert breaker.state is BreakerState.CLOSED
    assert await admits(breaker)
    breaker.failed("line", answered=False)
    assert breaker.state is BreakerState.OPEN and breaker.is_open
    assert not await admits(breaker)


async def test_a_success_resets_the_count_of_failures(clock: FakeClock) -> None:
    """Failures must be consecutive: a success in between starts the count again."""
    breaker = make_breaker(clock, threshold=3)
    fail(breaker, 2)
    breaker.succeeded()
    fail(breaker, 2)
    assert breaker.state is BreakerState.CLOSED
    assert await admits(breaker)
    breaker.failed("line", answered=False)
    assert breaker.state is BreakerState.OPEN


async def test_it_stays_open_for_the_base_cooldown(clock: FakeClock) -> None:
    """Opened by failures, it admits nothing until base_cooldown has passed."""
    breaker = opened(clock, base_cooldown=10.0)
    clock.advance(9.75)
    assert not await admits(breaker)
    assert breaker.state is BreakerState.OPEN
    clock.advance(0.25)
    assert await admits(breaker)
    assert breaker.state is BreakerState.HALF_OPEN


async def test_one_answer_with_a_retry_after_leaves_it_closed(clock: FakeClock) -> None:
    """A Retry-After on one line's answer is that line's to wait: the upstream stays open to the
    others."""
    breaker = make_breaker(clock, threshold=3)
    breaker.failed("line", answered=True, pause=2.5)
    assert breaker.state is BreakerState.CLOSED
    assert await admits(breaker)


async def test_failed_answers_among_good_ones_leave_it_closed(clock: FakeClock) -> None:
    """Lines the server refuses one by one (429, 500) among answered ones never open it, however
    long it goes on, as long as they stay under the failure ratio."""
    breaker = make_breaker(clock, threshold=3)
    for _ in range(50):
        answer(breaker, failures=4, successes=6, pause=1.0)
    assert breaker.state is BreakerState.CLOSED


async def test_mostly_failed_answers_over_a_window_open_it_for_the_pause(clock: FakeClock) -> None:
    """Once half the answers of a full window failed, it opens, for the longest Retry-After."""
    breaker = make_breaker(clock, threshold=3, base_cooldown=1.0)
    answer(breaker, failures=WINDOW // 2 - 1, successes=WINDOW // 2)
    assert breaker.state is BreakerState.CLOSED
    breaker.failed("last", answered=True, pause=2.5)
    assert breaker.state is BreakerState.OPEN
    clock.advance(2.25)
    assert not await admits(breaker)
    clock.advance(0.25)
    assert await admits(breaker)
    assert breaker.state is BreakerState.HALF_OPEN


async def test_a_few_lines_failing_again_and_again_leave_it_closed(clock: FakeClock) -> None:
    """Fewer lines than the threshold, however often they fail and whatever share of the answers
    they make, are those lines' trouble."""
    breaker = make_breaker(clock, threshold=3)
    for _ in range(20):
        for line in ("a", "b"):
            breaker.failed(line, answered=True, pause=1.0)
    assert breaker.state is BreakerState.CLOSED
    breaker.failed("c", answered=True)
    assert breaker.state is BreakerState.OPEN


async def test_answered_failures_do_not_count_as_failures_in_a_row(clock: FakeClock) -> None:
    """The threshold counts requests that got no answer at all: a 500 is an answer."""
    breaker = make_breaker(clock, threshold=3)
    for answered in (False, False, True, False, False):
        breaker.failed("line", answered=answered)
    assert breaker.state is BreakerState.CLOSED
    breaker.failed("line", answered=False)
    assert breaker.state is BreakerState.OPEN


async def test_a_long_pause_outlasts_the_cooldown(clock: FakeClock) -> None:
    """A pause longer than the cooldown is honoured in full (the outcome step caps it first)."""
    breaker = make_breaker(clock, threshold=1, base_cooldown=1.0, max_cooldown=2.0)
    answer(breaker, failures=WINDOW, successes=0, pause=60.0)
    clock.advance(59.0)
    assert not await admits(breaker)
    clock.advance(1.0)
    assert await admits(breaker)


async def test_admit_waits_while_open(clock: FakeClock) -> None:
    """An admit made while open does not return, even when given some real time."""
    breaker = opened(clock)
    waiter = asyncio.create_task(breaker.admit())
    await asyncio.sleep(BLOCKS)
    assert not waiter.done()
    await cancelled(waiter)


async def test_after_the_cooldown_exactly_one_probe_is_admitted(clock: FakeClock) -> None:
    """Half-open: the first admit is the probe; a second waits for the probe's outcome."""
    breaker = opened(clock, base_cooldown=10.0)
    clock.advance(10.0)
    assert await admits(breaker)
    assert breaker.state is BreakerState.HALF_OPEN and breaker.is_open
    assert not await admits(breaker)
    assert breaker.state is BreakerState.HALF_OPEN


async def test_probe_success_closes_and_releases_the_waiters(clock: FakeClock) -> None:
    """When the probe succeeds, everyone waiting is admitted and the breaker is closed."""
    breaker = opened(clock)
    clock.advance(10.0)
    assert await admits(breaker)
    waiters = [asyncio.create_task(breaker.admit()) for _ in range(3)]
    await asyncio.sleep(BLOCKS)
    assert not any(w.done() for w in waiters)
    breaker.succeeded()
    await asyncio.wait_for(asyncio.gather(*waiters), 1.0)
    assert breaker.state is BreakerState.CLOSED and not breaker.is_open
    assert await admits(breaker)


async def test_a_waiter_from_the_open_state_is_released_by_the_probe(clock: FakeClock) -> None:
    """An admit that started waiting while open is let through once the probe succeeds."""
    breaker = opened(clock)
    waiter = asyncio.create_task(breaker.admit())
    await asyncio.sleep(BLOCKS)
    clock.advance(10.0)
    assert await admits(breaker)  # the probe, taken by a fresh admit
    assert not waiter.done()
    breaker.succeeded()
    await asyncio.wait_for(waiter, 1.0)


async def test_after_closing_it_takes_threshold_failures_again(clock: FakeClock) -> None:
    """A closed breaker starts counting from zero, with the base cooldown again."""
    breaker = opened(clock, threshold=3, base_cooldown=10.0)
    clock.advance(10.0)
    assert await admits(breaker)
    breaker.succeeded()
    fail(breaker, 2)
    assert breaker.state is BreakerState.CLOSED
    breaker.failed("line", answered=False)
    clock.advance(9.75)
    assert not await admits(breaker)
    clock.advance(0.25)
    assert await admits(breaker)


async def test_probe_failure_reopens_with_a_doubled_cooldown_capped(clock: FakeClock) -> None:
    """Each failed probe doubles the cooldown (10, 20, then 35 not 40), and waiters keep waiting."""
    breaker = opened(clock, base_cooldown=10.0, max_cooldown=35.0)
    for cooldown in (10.0, 20.0, 35.0, 35.0):
        clock.advance(cooldown - 0.25)
        assert not await admits(breaker), f"admitted before a {cooldown} s cooldown"
        clock.advance(0.25)
        assert await admits(breaker), f"no probe after a {cooldown} s cooldown"
        waiter = asyncio.create_task(breaker.admit())
        await asyncio.sleep(0.01)
        breaker.failed("line", answered=True)
        assert breaker.state is BreakerState.OPEN
        await asyncio.sleep(0.01)
        assert not waiter.done()
        await cancelled(waiter)


async def test_a_probe_that_never_reports_is_replaced_after_max_cooldown(clock: FakeClock) -> None:
    """If the probe's outcome never comes, a waiter becomes the next probe after max_cooldown."""
    breaker = opened(clock, base_cooldown=0.01, max_cooldown=0.05)
    clock.advance(0.01)
    assert await admits(breaker)
    assert not await admits(breaker, within=0.01)
    assert await admits(breaker, within=1.0)
    assert breaker.state is BreakerState.HALF_OPEN


async def test_failures_of_requests_already_in_flight_do_not_lengthen_the_cooldown(
    clock: FakeClock,
) -> None:
    """Failures reported after it opened (from requests in flight) leave the cooldown at base."""
    breaker = opened(clock, threshold=3, base_cooldown=10.0, max_cooldown=300.0)
    fail(breaker, 4)  # four more requests that were in flight fail
    clock.advance(10.0)
    assert await admits(breaker)
