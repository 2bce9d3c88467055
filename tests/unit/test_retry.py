"""When a request is tried again, and how long batchd waits first."""

from __future__ import annotations

import random
from email.utils import formatdate

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from batchd.worker.retry import RETRYABLE_STATUSES, RetryPolicy, retry_after

NOW = 1_700_000_000.0  # a whole second, so HTTP dates (whole seconds) compare exactly
SAMPLES = 2000


@pytest.fixture
def seeded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Jitter from a seeded generator: the same samples on every run."""
    monkeypatch.setattr("batchd.worker.retry.random", random.Random(20240601))


def _ceiling(policy: RetryPolicy, attempts: int) -> float:
    return min(policy.max_delay, policy.base_delay * 2 ** (attempts - 1))


@pytest.mark.usefixtures("seeded")
@pytest.mark.parametrize("attempts", range(1, 9))
def test_backoff_stays_within_full_jitter_bounds(attempts: int) -> None:
    """Every delay is in [0, min(max_delay, base · 2^(attempts-1))] and uses most of that range."""
    policy = RetryPolicy(max_attempts=10, base_delay=0.5, max_delay=8.0)
    ceiling = _ceiling(policy, attempts)
    delays = [policy.backoff(attempts) for _ in range(SAMPLES)]
    assert all(0 <= d <= ceiling for d in delays)
    assert min(delays) < 0.05 * ceiling
    assert max(delays) > 0.95 * ceiling


@pytest.mark.usefixtures("seeded")
def test_backoff_grows_with_attempts_until_the_cap() -> None:
    """The mean delay doubles with each attempt, then stops growing at max_delay."""
    policy = RetryPolicy(max_attempts=20, base_delay=0.5, max_delay=4.0)
    means = [sum(policy.backoff(n) for _ in range(SAMPLES)) / SAMPLES for n in range(1, 9)]
    for n, mean in enumerate(means, start=1):
        assert mean == pytest.approx(_ceiling(policy, n) / 2, rel=0.1)
    assert means[0] < means[1] < means[2] < means[3]
    assert max(means[3:]) <= policy.max_delay / 2 * 1.1


def test_backoff_is_zero_when_the_base_delay_is_zero() -> None:
    """With no base delay, retries go at once."""
    policy = RetryPolicy(max_attempts=5, base_delay=0.0, max_delay=30.0)
    assert all(policy.backoff(n) == 0 for n in range(1, 6))


def test_backoff_is_capped_for_any_attempt_count() -> None:
    """However many attempts a line has made, its delay is at most max_delay."""
    policy = RetryPolicy(max_attempts=100_000, base_delay=0.5, max_delay=30.0)
    assert 0 <= policy.backoff(1100) <= 30.0


@pytest.mark.parametrize(
    ("max_attempts", "attempts", "allowed"),
    [(3, 1, True), (3, 2, True), (3, 3, False), (3, 4, False), (1, 1, False), (5, 4, True)],
)
def test_may_retry_until_max_attempts_are_used(
    max_attempts: int, attempts: int, allowed: bool
) -> None:
    """A line may be tried again only while it has made fewer than max_attempts tries."""
    policy = RetryPolicy(max_attempts=max_attempts, base_delay=0.5, max_delay=30.0)
    assert policy.may_retry(attempts) is allowed


def test_retryable_statuses_are_the_transient_ones() -> None:
    """408, 409, 429 and the gateway 5xx are retried; client errors and 501 are not."""
    assert {408, 409, 429, 500, 502, 503, 504} == RETRYABLE_STATUSES
    assert not {400, 401, 403, 404, 422, 501} & RETRYABLE_STATUSES


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry-after-ms": "600"}, 0.6),
        ({"retry-after-ms": "1500.5"}, 1.5005),
        ({"retry-after": "2"}, 2.0),
        ({"retry-after": "0"}, 0.0),
        ({"retry-after": "1.25"}, 1.25),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
        ({"retry-after-ms": "soon", "retry-after": "3"}, 3.0),
    ],
)
def test_retry_after_reads_milliseconds_then_seconds(
    headers: dict[str, str], seconds: float
) -> None:
    """``retry-after-ms`` wins; otherwise ``retry-after`` in (possibly fractional) seconds."""
    assert retry_after(headers, NOW) == pytest.approx(seconds)


def test_retry_after_reads_an_http_date_relative_to_now() -> None:
    """An HTTP date is turned into the seconds from the given now until it."""
    assert retry_after({"retry-after": formatdate(NOW + 30, usegmt=True)}, NOW) == 30.0
    assert retry_after({"retry-after": formatdate(NOW + 30, usegmt=True)}, NOW + 10) == 20.0


def test_a_date_in_the_past_means_no_wait() -> None:
    """An HTTP date already passed asks for no wait at all."""
    assert retry_after({"retry-after": formatdate(NOW - 120, usegmt=True)}, NOW) == 0.0


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"retry-after": "soon"},
        {"retry-after": ""},
        {"retry-after": "Wed, 32 Oct 2015 07:28:00 GMT"},
        {"retry-after-ms": "soon"},
        {"x-ratelimit-reset": "3"},
    ],
)
def test_missing_or_garbage_retry_after_is_none(headers: dict[str, str]) -> None:
    """No usable header means the server asked for nothing."""
    assert retry_after(headers, NOW) is None


@pytest.mark.parametrize(
    "headers", [{"retry-after": "-5"}, {"retry-after": "-0.5"}, {"retry-after-ms": "-200"}]
)
def test_a_negative_retry_after_is_zero(headers: dict[str, str]) -> None:
    """A negative wait is clamped to no wait."""
    assert retry_after(headers, NOW) == 0.0


@pytest.mark.parametrize(
    "headers",
    [
        {"retry-after": "inf"},
        {"retry-after": "1e999"},
        {"retry-after": "nan"},
        {"retry-after-ms": "Infinity"},
    ],
)
def test_a_non_finite_retry_after_is_garbage(headers: dict[str, str]) -> None:
    """A value that is not a finite number of seconds is ignored, not waited for forever."""
    assert retry_after(headers, NOW) is None


def test_retry_after_matches_header_names_in_any_case() -> None:
    """Real response headers (case-insensitive, as aiohttp gives them) match in any case."""
    headers = CIMultiDictProxy(CIMultiDict({"Retry-After": "4", "X-Request-Id": "req_1"}))
    assert retry_after(headers, NOW) == 4.0
    headers = CIMultiDictProxy(CIMultiDict({"Retry-After-Ms": "40", "Retry-After": "4"}))
    assert retry_after(headers, NOW) == pytest.approx(0.04)
