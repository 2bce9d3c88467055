"""The batch state machine, as data.

validating ─▶ in_progress ─▶ finalizing ─▶ completed
    │  │           │  └──────────────────▶ expired     (the window ended first)
    │  │           └─▶ cancelling ───────▶ cancelled
    │  └─▶ cancelling
    └─▶ failed                                         (the input did not validate)
"""

from __future__ import annotations

from batchd.models import TERMINAL
from batchd.models import BatchStatus as S

TRANSITIONS: dict[S, frozenset[S]] = {
    S.VALIDATING: frozenset({S.IN_PROGRESS, S.FAILED, S.CANCELLING}),
    S.IN_PROGRESS: frozenset({S.FINALIZING, S.EXPIRED, S.CANCELLING}),
    S.FINALIZING: frozenset({S.COMPLETED}),
    S.CANCELLING: frozenset({S.CANCELLED}),
    S.FAILED: frozenset(),
    S.COMPLETED: frozenset(),
    S.EXPIRED: frozenset(),
    S.CANCELLED: frozenset(),
}

TIMESTAMP_FIELD: dict[S, str] = {
    S.VALIDATING: "created_at",
    S.IN_PROGRESS: "in_progress_at",
    S.FINALIZING: "finalizing_at",
    S.COMPLETED: "completed_at",
    S.FAILED: "failed_at",
    S.EXPIRED: "expired_at",
    S.CANCELLING: "cancelling_at",
    S.CANCELLED: "cancelled_at",
}

CANCELLABLE = frozenset(s for s, targets in TRANSITIONS.items() if S.CANCELLING in targets)
"""A cancel moves these to ``cancelling``; ``cancelling``/``cancelled``/``finalizing`` answer
unchanged, and the other terminal statuses answer 409."""

DISPATCHABLE = frozenset({S.IN_PROGRESS})

UNFINISHED = frozenset(S) - TERMINAL
"""Every status a batch may still leave: what a project's quotas count as active."""
