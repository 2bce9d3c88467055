"""Domain types: what batchd knows about files, batches and the requests inside them.

These are not wire shapes (see ``api/schemas.py``) and not table rows (see ``store/``).

Those made once per request are ``msgspec.Struct``s, not dataclasses: built in C, several times
faster, and (``gc=False``) left out of the garbage collector's work, as they hold nothing that could
lead back to them in a cycle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from operator import attrgetter
from typing import NamedTuple

import msgspec

DEFAULT_PROJECT = "default"


class BatchStatus(StrEnum):
    VALIDATING = "validating"
    FAILED = "failed"
    IN_PROGRESS = "in_progress"
    FINALIZING = "finalizing"
    COMPLETED = "completed"
    EXPIRED = "expired"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"


TERMINAL = frozenset(
    {BatchStatus.FAILED, BatchStatus.COMPLETED, BatchStatus.EXPIRED, BatchStatus.CANCELLED}
)


class RequestState(StrEnum):
    """Where one input line stands. ``pending``: no result yet (waiting, claimed or in flight)."""

    PENDING = "pending"
    SUCCEEDED = "succeeded"  # a 2xx answer: its line goes to the output file
    FAILED = "failed"  # a final error: its line goes to the error file
    EXPIRED = "expired"  # never finished before the window ended: a batch_expired line
    CANCELLED = "cancelled"  # skipped by a cancel: a batch_cancelled line


ENDPOINTS: dict[str, tuple[str, ...]] = {
    "/v1/responses": ("model", "input"),
    "/v1/chat/completions": ("model", "messages"),
    "/v1/embeddings": ("model", "input"),
    "/v1/completions": ("model", "prompt"),
    "/v1/moderations": ("model", "input"),
    "/v1/images/generations": ("model", "prompt"),
    "/v1/images/edits": ("model", "prompt"),
}
"""The batch endpoints, in the order OpenAI lists them, and the body fields each requires. A
batch runs one model, and lines go to the upstream serving it: ``model`` is required even where
OpenAI has a default (moderations, images). An edit's image (``images`` or ``image``, by URL or
file id) is the model server's to check."""

UPLOAD_PURPOSES = ("batch", "assistants", "fine-tune", "vision", "user_data", "evals")
OUTPUT_PURPOSE = "batch_output"


@dataclass(frozen=True)
class StoredFile:
    id: str
    project: str
    purpose: str
    filename: str
    bytes: int
    created_at: int
    expires_at: int | None
    blob_key: str


@dataclass(frozen=True)
class ManagedKey:
    """An API key kept in the store: never the key itself, only what tells it apart."""

    id: str
    project: str
    name: str | None
    prefix: str
    created_at: int
    revoked_at: int | None = None


@dataclass(frozen=True)
class LineError:
    """One reason a batch failed validation (``errors.data`` on the wire)."""

    code: str
    message: str
    param: str | None = None
    line: int | None = None


class Usage(msgspec.Struct, gc=False):
    input_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    total_tokens: int = 0

    @classmethod
    def sum(cls, usages: list[Usage]) -> Usage:
        """The usages added up, field by field in C: a group commit sums hundreds."""
        return cls(*(sum(map(getter, usages)) for getter in _USAGE_FIELDS))


_USAGE_FIELDS = [attrgetter(name) for name in Usage.__struct_fields__]


@dataclass
class Batch:
    id: str
    project: str
    endpoint: str
    input_file_id: str
    completion_window: str
    status: BatchStatus
    created_at: int
    expires_at: int
    metadata: dict[str, str] | None = None
    output_expires_after: int | None = None
    model: str | None = None
    errors: list[LineError] | None = None
    errors_total: int = 0
    """How many problems validation found (0: as many as ``errors``, which holds the first
    ``MAX_REPORTED_ERRORS``); read it as ``errors_found``."""
    output_file_id: str | None = None
    error_file_id: str | None = None
    in_progress_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    total: int = 0
    completed: int = 0
    failed: int = 0
    usage: Usage = field(default_factory=Usage)

    @property
    def errors_found(self) -> int:
        """How many problems validation found in all."""
        return max(self.errors_total, len(self.errors or ()))


class ClaimedRequest(msgspec.Struct, gc=False):
    """An input line a worker holds a lease on, with where its bytes sit in the input blob.

    ``span`` is the first line of the span of fresh lines it was claimed with, or None when it was
    claimed alone, to try again. ``attempts`` counts this one."""

    batch_id: str
    line: int
    custom_id: str
    offset: int
    length: int
    attempts: int
    span: int | None

    def given_back(self) -> RequestResult:
        """The line handed back unsent: to try again at once, its attempt not counted."""
        return RequestResult(
            self.batch_id,
            self.line,
            RequestState.PENDING,
            span=self.span,
            attempts=self.attempts - 1,
        )


class IndexedLine(NamedTuple):
    """A valid input line, as validation records it. A tuple: one is made per line, and it goes
    into its row as it is."""

    line: int
    custom_id: str
    offset: int
    length: int


class RequestResult(msgspec.Struct, gc=False):
    """A request's outcome: final (the output or error line to write, and what it used), or
    ``PENDING`` to try again at ``retry_at`` (None: as soon as any worker can) with ``attempts``
    made so far. ``span`` is the claim's.

    Once its line is written to a result part, ``part`` is the part's id and ``part_offset`` where
    the line starts there; the store then keeps only that place, not the line."""

    batch_id: str
    line: int
    state: RequestState
    output_line: bytes = b""
    usage: Usage | None = None
    span: int | None = None
    retry_at: float | None = None
    attempts: int = 0
    part: int | None = None
    part_offset: int = 0
    part_length: int = 0  # the bytes its line takes there, with the newline


@dataclass(frozen=True)
class ResultPart:
    """An append-only file of one worker's output or error lines of one batch. ``written`` is how
    far it was written when its last results were committed, ``committed`` the bytes and
    ``lines`` the number of its lines that counted: when ``committed == written``, every byte up
    to ``written`` is a counted line, and the part can be copied whole."""

    id: int
    kind: str  # "output" or "error"
    written: int
    committed: int
    lines: int

    @property
    def whole(self) -> bool:
        return self.committed == self.written


@dataclass(frozen=True)
class Remembered:
    """What a client's idempotency key made: the object, and a digest of the parameters."""

    operation: str  # "batch": what the key was used to create
    key: str
    fingerprint: str
    object_id: str
    created_at: int


@dataclass(frozen=True)
class UpstreamStatus:
    """How one upstream is doing, as one worker sees it (``GET /v1/upstreams``)."""

    upstream: str
    state: str  # see UPSTREAM_STATES
    reason: str | None  # why the last request failed, while not ok
    since: float | None  # when the current run of failures began
    lines_waiting: int  # claimed by the worker: ready to send or in flight
    batches: int  # running on this upstream


UPSTREAM_STATES = ("paused", "probing", "failing", "idle", "ok")
"""From the worst: the breaker open (nothing sent until its cooldown ends), the breaker letting
one probe through, the last requests failing (retried), nothing sent yet, answering."""


def merged(statuses: list[UpstreamStatus]) -> list[tuple[UpstreamStatus, int]]:
    """Each upstream as all its workers see it, and how many do: the worst state (with its
    reason and the earliest ``since``), the lines and batches summed."""
    by_name: dict[str, list[UpstreamStatus]] = {}
    for status in statuses:
        by_name.setdefault(status.upstream, []).append(status)
    return [(_merge(name, seen), len(seen)) for name, seen in sorted(by_name.items())]


def _merge(name: str, seen: list[UpstreamStatus]) -> UpstreamStatus:
    worst = min(seen, key=lambda status: UPSTREAM_STATES.index(status.state))
    sinces = [status.since for status in seen if status.state == worst.state and status.since]
    return UpstreamStatus(
        upstream=name,
        state=worst.state,
        reason=worst.reason,
        since=min(sinces) if sinces else None,
        lines_waiting=sum(status.lines_waiting for status in seen),
        batches=max(status.batches for status in seen),
    )


@dataclass(frozen=True)
class WebhookEndpoint:
    """Where a project's events go, and the secret that signs them (``old_secret`` too until
    ``old_secret_until``, after a rotation that keeps it)."""

    id: str
    project: str
    name: str
    url: str
    event_types: tuple[str, ...]
    secret: str
    created_at: int
    updated_at: int
    old_secret: str | None = None
    old_secret_until: int | None = None


@dataclass(frozen=True)
class WebhookDelivery:
    """One event owed to one endpoint, as a worker claimed it (with the endpoint as it is now)."""

    event_id: str
    type: str
    batch_id: str
    created_at: int
    attempts: int
    endpoint: WebhookEndpoint
