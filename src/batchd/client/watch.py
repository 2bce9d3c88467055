"""Following a batch until it reaches a terminal status, and what Ctrl-C does meanwhile.

Ctrl-C asks whether to cancel the batch, stop watching (it keeps running) or keep watching.
Where nobody can answer (stdin is not a terminal, or ``--json``) ``--on-interrupt`` decides
without asking: ``detach`` (the default there) or ``cancel``. After a cancel, watching goes on
until the batch is cancelled, and another Ctrl-C stops watching at once.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from enum import StrEnum

import click

from batchd.client.api import BatchAPI, Json
from batchd.client.errors import ClientError, Detached, ServerError, Unreachable
from batchd.client.exits import TERMINAL
from batchd.client.progress import Display

POLL_FAILURES_TOLERATED = 10
"""Consecutive failed polls (server restarting, 5xx, 429) before watching gives up."""


class OnInterrupt(StrEnum):
    ASK = "ask"
    CANCEL = "cancel"
    DETACH = "detach"
    WATCH = "watch"  # an answer to the question only: keep watching


class Follower:
    """Polls one batch every ``interval`` seconds, showing it on a fresh display each run."""

    def __init__(
        self, api: BatchAPI, batch: Json, interval: float, display: Callable[[], Display]
    ) -> None:
        self.api = api
        self.batch = batch
        self.interval = interval
        self.display = display
        self._upstreams_unknown = False

    def run(self) -> Json:
        with self.display() as display:
            display.update(self.batch)
            while self.batch.get("status") not in TERMINAL:
                time.sleep(self.interval)
                self.batch = self._poll()
                display.update(self.batch, self._trouble())
        return self.batch

    def _trouble(self) -> str | None:
        """What the server says is holding the batch up (an upstream in trouble), if anything.
        A server without ``GET /v1/upstreams`` (not batchd) is not asked again."""
        if self._upstreams_unknown or self.batch.get("status") != "in_progress":
            return None
        try:
            upstreams = self.api.upstreams().get("data") or []
        except ServerError as error:
            self._upstreams_unknown = error.status_code == 404
            return None
        except ClientError:
            return None
        return next(filter(None, map(upstream_trouble, upstreams)), None)

    def _poll(self) -> Json:
        failures = 0
        while True:
            try:
                return self.api.batch(str(self.batch["id"]))
            except ClientError as error:
                failures += 1
                if not _transient(error) or failures >= POLL_FAILURES_TOLERATED:
                    raise
            time.sleep(self.interval)


TROUBLE = {"failing": "failing", "paused": "paused", "probing": "being probed"}


def upstream_trouble(upstream: Json) -> str | None:
    """``model server gpu-1 failing (connection refused), retrying``, for an upstream of
    ``GET /v1/upstreams`` in trouble with lines waiting; None otherwise."""
    state = TROUBLE.get(str(upstream.get("state")))
    if state is None or not upstream.get("batches"):
        return None
    reason = f" ({upstream['reason']})" if upstream.get("reason") else ""
    return f"model server {upstream.get('name')} {state}{reason}, retrying"


def _transient(error: ClientError) -> bool:
    if isinstance(error, ServerError):
        return error.status_code == 429 or error.status_code >= 500
    return isinstance(error, Unreachable)


def follow(follower: Follower, policy: OnInterrupt, note: Callable[[str], None]) -> Json:
    """The batch at its terminal status; raises ``Detached`` when Ctrl-C says stop watching."""
    batch_id = str(follower.batch["id"])
    cancel_sent = False
    while True:
        try:
            return follower.run()
        except KeyboardInterrupt:
            choice = OnInterrupt.DETACH if cancel_sent else _decide(policy)
        if choice is OnInterrupt.DETACH:
            raise Detached(batch_id)
        if choice is OnInterrupt.CANCEL:
            follower.batch = follower.api.cancel(batch_id)
            cancel_sent = True
            note(f"Cancelling {batch_id}; waiting for it to stop (Ctrl-C again: stop watching).")


def interrupt_policy(chosen: OnInterrupt, as_json: bool) -> OnInterrupt:
    """``ask`` only where someone can answer."""
    if chosen is OnInterrupt.ASK and (as_json or not sys.stdin.isatty()):
        return OnInterrupt.DETACH
    return chosen


def _decide(policy: OnInterrupt) -> OnInterrupt:
    if policy is not OnInterrupt.ASK:
        return policy
    answers = {"c": OnInterrupt.CANCEL, "s": OnInterrupt.DETACH, "w": OnInterrupt.WATCH}
    try:
        answer = click.prompt(
            "[c] cancel the batch, [s] stop watching (it keeps running), [w] keep watching",
            type=click.Choice(list(answers)),
            default="s",
            err=True,
        )
    except click.Abort:  # Ctrl-C or end of input at the question
        return OnInterrupt.DETACH
    return answers[answer]
