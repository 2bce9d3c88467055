"""The circuit breaker: closed, open for a cooldown, one probe half-open, closed again."""

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


def make_breaker(
    clock: FakeClock, threshold: int = 3, base_cooldown: float = 10.0, max_cooldown: float = 35.0
) -> CircuitBreaker:
    return CircuitBreaker(
        threshold=threshold, base_cooldown=base_cooldown, max_cooldown=max_cooldown, clock=clock
    )


async def admits(breaker: CircuitBreaker, within: float = BLOCKS) -> bool:
    """Whether ``admit()`` returns within ``within`` seconds (it is abandoned if not)."""
    try:
        await asyncio.wait_for(breaker.admit(), within)
    except TimeoutError:
        return False
    return True


def fail(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        breaker.failed()


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
    breaker.failed()
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
    breaker.failed()
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


async def test_a_failure_with_a_pause_opens_at_once_for_exactly_that_pause(
    clock: FakeClock,
) -> None:
    """A Retry-After opens the breaker on the first failure, for the pause, not the cooldown."""
    breaker = make_breaker(clock, threshold=5, base_cooldown=10.0)
    breaker.failed(pause=2.5)
    assert breaker.state is BreakerState.OPEN
    clock.advance(2.25)
    assert not await admits(breaker)
    clock.advance(0.25)
    assert await admits(breaker)
    assert breaker.state is BreakerState.HALF_OPEN


async def test_a_long_pause_outlasts_the_cooldown(clock: FakeClock) -> None:
    """A pause longer than the cooldown is honoured in full."""
    breaker = make_breaker(clock, threshold=1, base_cooldown=1.0, max_cooldown=2.0)
    breaker.failed(pause=60.0)
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
    breaker.failed()
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
        breaker.failed()
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
