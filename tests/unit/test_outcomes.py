"""The outcome step, without sockets: an answer or an error, the line's tries and the breaker
give the result to commit."""

from __future__ import annotations

import orjson
import pytest

from batchd.errors import ResponseTooLarge, UpstreamTimeout, UpstreamUnreachable
from batchd.models import ClaimedRequest, RequestState
from batchd.upstreams import UpstreamResponse
from batchd.worker.breaker import BreakerState, CircuitBreaker
from batchd.worker.health import UpstreamHealth
from batchd.worker.outcomes import Outcomes
from batchd.worker.retry import RetryPolicy

NOW = 1_000.0
OK = orjson.dumps({"object": "chat.completion", "usage": {"prompt_tokens": 2}})


class FixedClock:
    def now(self) -> float:
        return NOW


def claim(attempts: int = 1, span: int | None = 0) -> ClaimedRequest:
    return ClaimedRequest("batch_1", 7, "r-7", 0, 10, attempts, span)


def answer(status: int, body: bytes = b"{}", **headers: str) -> UpstreamResponse:
    return UpstreamResponse(status, body, "req_1", headers)


@pytest.fixture
def breaker() -> CircuitBreaker:
    return CircuitBreaker(
        threshold=3,
        window=10,
        failure_ratio=0.5,
        base_cooldown=1.0,
        max_cooldown=30.0,
        clock=FixedClock(),
    )


@pytest.fixture
def outcomes(breaker: CircuitBreaker) -> Outcomes:
    return Outcomes(
        retry=RetryPolicy(max_attempts=3, base_delay=0.0, max_delay=0.0),
        breaker=breaker,
        health=UpstreamHealth(FixedClock()),
        clock=FixedClock(),
        max_retry_after=60.0,
    )


def test_a_2xx_answer_is_final_with_its_usage(outcomes: Outcomes) -> None:
    result = outcomes.answered(claim(), answer(200, OK))
    assert result.state is RequestState.SUCCEEDED
    assert result.usage is not None and result.usage.input_tokens == 2


def test_a_429_waits_its_retry_after_and_only_its_line_does(
    outcomes: Outcomes, breaker: CircuitBreaker
) -> None:
    """The line is to be tried again no sooner than the server asked; the upstream stays open."""
    result = outcomes.answered(claim(), answer(429, **{"retry-after": "7"}))
    assert result.state is RequestState.PENDING
    assert result.retry_at == NOW + 7 and result.attempts == 1
    assert breaker.state is BreakerState.CLOSED


@pytest.mark.parametrize("asked", ["999999999", "Fri, 31 Dec 9999 23:59:59 GMT"])
def test_a_retry_after_past_the_ceiling_waits_the_ceiling(outcomes: Outcomes, asked: str) -> None:
    result = outcomes.answered(claim(), answer(503, **{"retry-after": asked}))
    assert result.retry_at == NOW + 60.0


def test_out_of_tries_the_last_answer_is_final(outcomes: Outcomes) -> None:
    result = outcomes.answered(claim(attempts=3), answer(500, b'{"error": {"message": "x"}}'))
    assert result.state is RequestState.FAILED
    assert orjson.loads(result.output_line)["response"]["status_code"] == 500


def test_an_answer_too_large_fails_at_once(outcomes: Outcomes, breaker: CircuitBreaker) -> None:
    """Asking again would get the same answer: the line fails on its first try, and the server,
    which answered, is not counted as failing."""
    result = outcomes.unanswered(claim(attempts=1), ResponseTooLarge("too large"))
    assert result.state is RequestState.FAILED
    assert orjson.loads(result.output_line)["error"]["code"] == "response_too_large"
    assert breaker.state is BreakerState.CLOSED


def test_no_answer_is_retried_and_threshold_of_them_open_the_breaker(
    outcomes: Outcomes, breaker: CircuitBreaker
) -> None:
    for _ in range(3):
        result = outcomes.unanswered(claim(), UpstreamTimeout())
        assert result.state is RequestState.PENDING
    assert breaker.state is BreakerState.OPEN


def test_a_refused_connection_while_the_upstream_is_down_costs_no_attempt(
    outcomes: Outcomes,
) -> None:
    """Even on its last try, a line waiting out an outage is not failed by it."""
    for _ in range(3):
        outcomes.unanswered(claim(), UpstreamUnreachable())
    result = outcomes.unanswered(claim(attempts=3), UpstreamUnreachable())
    assert result.state is RequestState.PENDING and result.attempts == 2


def test_a_read_failure_is_retried_then_fails(outcomes: Outcomes) -> None:
    assert outcomes.read_failed(claim(attempts=1)).state is RequestState.PENDING
    failed = outcomes.read_failed(claim(attempts=3))
    assert failed.state is RequestState.FAILED
    assert orjson.loads(failed.output_line)["error"]["code"] == "server_error"
