"""The batch state machine as data (SPEC §5)."""

from __future__ import annotations

import dataclasses

import pytest

from batchd.lifecycle import (
    CANCELLABLE,
    DISPATCHABLE,
    TIMESTAMP_FIELD,
    TRANSITIONS,
)
from batchd.models import TERMINAL, Batch
from batchd.models import BatchStatus as S


def test_every_status_has_a_row() -> None:
    """The table covers every status and names only real statuses."""
    assert set(TRANSITIONS) == set(S)
    assert all(targets <= set(S) for targets in TRANSITIONS.values())


@pytest.mark.parametrize("status", sorted(TERMINAL))
def test_terminal_statuses_have_no_exits(status: S) -> None:
    """A terminal status is never left."""
    assert TRANSITIONS[status] == frozenset()


def test_terminal_set_is_the_spec() -> None:
    """Terminal means failed, completed, expired or cancelled, and nothing else."""
    assert frozenset({S.FAILED, S.COMPLETED, S.EXPIRED, S.CANCELLED}) == TERMINAL
    assert {s for s, targets in TRANSITIONS.items() if not targets} == set(TERMINAL)


def test_spec_transitions() -> None:
    """The transitions are those drawn in SPEC §5."""
    expected = {
        S.VALIDATING: {S.IN_PROGRESS, S.FAILED, S.CANCELLING},
        S.IN_PROGRESS: {S.FINALIZING, S.EXPIRED, S.CANCELLING},
        S.FINALIZING: {S.COMPLETED},
        S.CANCELLING: {S.CANCELLED},
        S.FAILED: set(),
        S.COMPLETED: set(),
        S.EXPIRED: set(),
        S.CANCELLED: set(),
    }
    assert expected == TRANSITIONS


def test_every_status_is_reachable_from_validating() -> None:
    """Every status can be reached from a new batch."""
    seen, frontier = {S.VALIDATING}, [S.VALIDATING]
    while frontier:
        for target in TRANSITIONS[frontier.pop()]:
            if target not in seen:
                seen.add(target)
                frontier.append(target)
    assert seen == set(S)


def test_every_status_has_a_timestamp_field() -> None:
    """Each status names the Batch field stamped when it is entered, all distinct."""
    fields = {f.name for f in dataclasses.fields(Batch)}
    assert set(TIMESTAMP_FIELD) == set(S)
    assert set(TIMESTAMP_FIELD.values()) <= fields
    assert len(set(TIMESTAMP_FIELD.values())) == len(S)
    assert TIMESTAMP_FIELD[S.VALIDATING] == "created_at"
    for status in S:
        if status is not S.VALIDATING:
            assert TIMESTAMP_FIELD[status] == f"{status.value}_at"


def test_cancellable() -> None:
    """Only validating and running batches can be cancelled."""
    assert frozenset({S.VALIDATING, S.IN_PROGRESS}) == CANCELLABLE


def test_dispatchable() -> None:
    """Only running batches have requests sent."""
    assert frozenset({S.IN_PROGRESS}) == DISPATCHABLE
