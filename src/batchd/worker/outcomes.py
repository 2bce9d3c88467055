"""What becomes of a line once its request is over: the answer or the error, the line's tries so
far, and the upstream's breaker give the result to commit (final, or pending with a retry time).

No I/O: the sender hands each request's end here, and tests drive it without sockets.
"""

from __future__ import annotations

from batchd.clock import Clock
from batchd.errors import UpstreamError, UpstreamUnreachable
from batchd.models import ClaimedRequest, RequestResult, RequestState
from batchd.result_lines import answered_line, unanswered_line
from batchd.upstreams import UpstreamResponse
from batchd.worker.breaker import CircuitBreaker
from batchd.worker.health import UpstreamHealth
from batchd.worker.retry import RETRYABLE_STATUSES, RetryPolicy, retry_after

UPSTREAM_FAULT_STATUSES = frozenset({429, 500, 502, 503, 504})
"""Answers that may say the server, not the request, is in trouble: they count for the breaker."""

NOT_SENT = "batchd failed to send this request (an internal error, logged as send_failed)."
UNREADABLE = "The input line could not be read back."
READ_FAILED = "The input line could not be read from the file store (logged as input_read_failed)."


class Outcomes:
    def __init__(
        self,
        *,
        retry: RetryPolicy,
        breaker: CircuitBreaker,
        health: UpstreamHealth,
        clock: Clock,
        max_retry_after: float,
    ) -> None:
        self._retry = retry
        self._breaker = breaker
        self._health = health
        self._clock = clock
        self._max_retry_after = max_retry_after

    def answered(self, claim: ClaimedRequest, response: UpstreamResponse) -> RequestResult:
        status = response.status
        if status in RETRYABLE_STATUSES:
            pause = retry_after(response.headers, self._clock.now())
            if pause is not None:
                pause = min(pause, self._max_retry_after)
            if status in UPSTREAM_FAULT_STATUSES:
                self._breaker.failed((claim.batch_id, claim.line), answered=True, pause=pause)
                self._health.answer_failed(status)
            else:
                self._up()  # it answered: whatever 408/409 mean, it is up
            if self._retry.may_retry(claim.attempts):
                return self._again(claim, max(pause or 0.0, self._retry.backoff(claim.attempts)))
        else:
            self._up()
        state, line, usage = answered_line(
            claim.custom_id, status, response.request_id, response.body
        )
        return RequestResult(claim.batch_id, claim.line, state, line, usage, span=claim.span)

    def unanswered(self, claim: ClaimedRequest, error: UpstreamError) -> RequestResult:
        if not error.retryable:  # an answer batchd cannot keep: the server is up
            self._up()
            return failed(claim, error.code, error.message)
        self._breaker.failed((claim.batch_id, claim.line), answered=False)
        self._health.unanswered(error)
        refund = isinstance(error, UpstreamUnreachable) and self._breaker.is_open
        if refund or self._retry.may_retry(claim.attempts):
            return self._again(claim, self._retry.backoff(claim.attempts), refund)
        return failed(claim, error.code, error.message)

    def probe_failed(self, error: UpstreamError) -> None:
        """The server itself did not answer the breaker's probe: it stays paused, longer."""
        self._breaker.failed("probe", answered=False)
        self._health.unanswered(error)

    def not_sent(self, claim: ClaimedRequest) -> RequestResult:
        """A line whose sending raised an error batchd does not expect (a bug): tried again like
        one that got no answer, and failed once out of tries, so that its batch still ends."""
        self._breaker.abandoned()  # if it was the probe: it was not sent, let another go
        return self._again_or_fail(claim, "server_error", NOT_SENT)

    def unreadable(self, claim: ClaimedRequest) -> RequestResult:
        """A line whose bytes are gone from the input file: it cannot be sent, ever."""
        return failed(claim, "invalid_request", UNREADABLE)

    def read_failed(self, claim: ClaimedRequest) -> RequestResult:
        """A line the file store failed to read (an I/O error): tried again later, and failed
        once out of tries."""
        return self._again_or_fail(claim, "server_error", READ_FAILED)

    def _up(self) -> None:
        self._breaker.succeeded()
        self._health.ok()

    def _again_or_fail(self, claim: ClaimedRequest, code: str, message: str) -> RequestResult:
        if self._retry.may_retry(claim.attempts):
            return self._again(claim, self._retry.backoff(claim.attempts))
        return failed(claim, code, message)

    def _again(self, claim: ClaimedRequest, delay: float, refund: bool = False) -> RequestResult:
        """Try the line again after ``delay``: its own wait, which holds up no other line.

        A failure that cannot be the line's fault (no connection could be made) while the
        upstream is known to be down gives the attempt back, so lines do not run out of tries
        waiting for the server. Any answer (429, 5xx), a dropped connection or a timeout costs an
        attempt: it may be the request itself that the server refuses or chokes on, and such a
        line must fail in the end rather than retry forever. While the upstream is down only one
        probe at a time is sent, so an outage costs few lines an attempt.
        """
        return RequestResult(
            claim.batch_id,
            claim.line,
            RequestState.PENDING,
            span=claim.span,
            retry_at=self._clock.now() + delay,
            attempts=claim.attempts - refund,
        )


def failed(claim: ClaimedRequest, code: str, message: str) -> RequestResult:
    """The line failed with no answer to show: its error line."""
    line = unanswered_line(claim.custom_id, code, message)
    return RequestResult(claim.batch_id, claim.line, RequestState.FAILED, line, span=claim.span)
