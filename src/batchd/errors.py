"""The one exception tree of batchd.

    BatchdError
     ├── ApiError                    shown to a client in the OpenAI error envelope
     │    ├── InvalidRequest         400 invalid_request_error
     │    ├── AuthenticationFailed   401 authentication_error
     │    ├── NotFound               404 invalid_request_error
     │    ├── Conflict               409 invalid_request_error (never retried by the SDKs)
     │    ├── RequestTooLarge        413 invalid_request_error
     │    └── QuotaExceeded          429 rate_limit_error (never retried by the SDKs)
     ├── ConfigurationError          a setting that cannot work; raised at start-up
     ├── StoreError                  the metadata store failed (driver errors translated)
     ├── BlobNotFound                a blob the metadata points at is missing
     └── UpstreamError               a model server gave no answer batchd can use
          ├── UpstreamTimeout        none in time
          ├── UpstreamUnreachable    no connection could be made
          ├── UpstreamDisconnected   the connection closed before an answer
          └── ResponseTooLarge       the answer was past max_response_bytes (not retried)

Each class's docstring is its default message.
"""

from __future__ import annotations

from collections.abc import Iterable


class BatchdError(Exception):
    """batchd failed."""

    def __init__(self, message: str | None = None) -> None:
        self.message = message or (type(self).__doc__ or "").strip()
        super().__init__(self.message)


class ApiError(BatchdError):
    """The request could not be served."""

    status_code = 400
    type = "invalid_request_error"
    headers: dict[str, str] = {}  # noqa: RUF012 - read-only, per class

    def __init__(
        self, message: str | None = None, *, code: str | None = None, param: str | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.param = param


class InvalidRequest(ApiError):
    """The request is invalid."""


def unsupported_value(param: str, value: object, supported: Iterable[str]) -> InvalidRequest:
    """The 400 for a value outside a fixed set; the message lists the set."""
    listed = ", ".join(f"'{choice}'" for choice in supported)
    return InvalidRequest(
        f"Invalid value for '{param}': {value!r}. Supported values are: {listed}.",
        code="invalid_value",
        param=param,
    )


class AuthenticationFailed(ApiError):
    """Incorrect API key provided."""

    status_code = 401
    type = "authentication_error"


class NotFound(ApiError):
    """Not found."""

    status_code = 404


class Conflict(ApiError):
    """The request conflicts with the current state of the object."""

    status_code = 409
    headers = {"x-should-retry": "false"}  # noqa: RUF012 - both SDKs retry a 409 unless told not to


class RequestTooLarge(ApiError):
    """The request body is too large."""

    status_code = 413


class QuotaExceeded(ApiError):
    """The project has reached one of its quotas."""

    status_code = 429
    type = "rate_limit_error"
    # A quota frees up as batches finish, in minutes or hours: the SDKs' retries within seconds
    # would only repeat the refusal.
    headers = {"x-should-retry": "false"}  # noqa: RUF012 - read-only, per class


class ConfigurationError(BatchdError):
    """The configuration is invalid."""


class StoreError(BatchdError):
    """The metadata store failed."""

    def __init__(self, message: str | None = None, *, transient: bool = True) -> None:
        super().__init__(message)
        self.transient = transient
        """Whether trying again may work (the store away, locked, full) rather than fail the
        same way (a value it cannot hold, a broken constraint)."""


class BlobNotFound(BatchdError):
    """The blob does not exist."""


class UpstreamError(BatchdError):
    """The model server gave no answer."""

    code = "server_error"
    retryable = True


class UpstreamTimeout(UpstreamError):
    """The model server did not answer in time."""

    code = "request_timeout"


class UpstreamUnreachable(UpstreamError):
    """The model server could not be reached."""


class UpstreamDisconnected(UpstreamError):
    """The model server closed the connection without answering."""


class ResponseTooLarge(UpstreamError):
    """The model server's answer is larger than batchd keeps."""

    code = "response_too_large"
    retryable = False  # the same request would get the same answer
