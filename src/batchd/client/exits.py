"""The exit codes of the client commands, as data (the table in ``docs/client.md``)."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0  # done; for a command about a batch's outcome: the batch completed
    ERROR = 1  # the server answered with an error, or a local file could not be written
    USAGE = 2  # bad flags or arguments (click's own code)
    UNREACHABLE = 3  # no answer from the base URL: refused, unresolvable, timed out
    INVALID_INPUT = 4  # `validate` found problems in the input file
    BATCH_FAILED = 5
    BATCH_EXPIRED = 6
    BATCH_CANCELLED = 7
    NOT_FINISHED = 8  # `results` of a batch that has not reached a terminal status
    REQUESTS_FAILED = 9  # the batch completed, but some of its requests failed (the error file)
    INTERRUPTED = 130  # Ctrl-C: stopped watching, the batch keeps running (128 + SIGINT)


OUTCOME = {
    "completed": ExitCode.OK,
    "failed": ExitCode.BATCH_FAILED,
    "expired": ExitCode.BATCH_EXPIRED,
    "cancelled": ExitCode.BATCH_CANCELLED,
}
"""The exit code of each terminal batch status."""

TERMINAL = frozenset(OUTCOME)


def outcome(status: str, failed: int) -> ExitCode:
    """The exit code of a batch that reached ``status`` with ``failed`` requests failed."""
    if status == "completed" and failed:
        return ExitCode.REQUESTS_FAILED
    return OUTCOME[status]
