"""The supervisor: a task that raises is logged with its traceback and restarted; one that keeps
failing is fatal, once; while a task is down, ``trouble`` names it."""

from __future__ import annotations

import asyncio
import logging

import pytest

from batchd.worker.supervisor import Supervisor

pytestmark = pytest.mark.anyio


def fast_supervisor(fatal: list[str], max_failures: int = 3) -> Supervisor:
    return Supervisor(
        fatal.append, restart_delay=0.01, max_restart_delay=0.02, max_failures=max_failures
    )


async def test_a_task_that_raises_is_logged_and_restarted(caplog: pytest.LogCaptureFixture) -> None:
    """The error is logged at error level with its traceback, and the task runs again."""
    runs = 0

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise RuntimeError("one bad moment")

    fatal: list[str] = []
    supervisor = fast_supervisor(fatal)
    await asyncio.wait_for(supervisor.spawn("flaky", flaky), 2)
    assert runs == 2 and fatal == []
    failed = [r for r in caplog.records if r.getMessage() == "task_failed"]
    assert len(failed) == 1 and failed[0].levelno == logging.ERROR
    assert failed[0].exc_info is not None and "one bad moment" in str(failed[0].exc_info[1])
    assert any(r.getMessage() == "task_restarted" for r in caplog.records)


async def test_a_task_that_keeps_failing_is_fatal_once(caplog: pytest.LogCaptureFixture) -> None:
    """After max_failures in a row the supervisor gives up on it and calls on_fatal, once, and
    ``trouble`` names the task for good."""
    runs = 0

    async def broken() -> None:
        nonlocal runs
        runs += 1
        raise OSError("the disk is gone")

    fatal: list[str] = []
    supervisor = fast_supervisor(fatal, max_failures=3)
    await asyncio.wait_for(supervisor.spawn("committer", broken), 2)
    assert runs == 3
    assert fatal == ["committer"]
    assert supervisor.trouble == ["committer"]
    assert any(r.levelno == logging.CRITICAL for r in caplog.records)


async def test_a_task_waiting_for_its_restart_is_trouble() -> None:
    """Between a failure and the restart, the task is named in ``trouble``; then it is not."""
    started = asyncio.Event()
    runs = 0

    async def fails_once() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise RuntimeError("bug")
        started.set()
        await asyncio.Event().wait()

    supervisor = Supervisor(lambda task: None, restart_delay=0.2)
    supervisor.spawn("feeder:a", fails_once)
    await asyncio.sleep(0.05)
    assert supervisor.trouble == ["feeder:a"]
    await asyncio.wait_for(started.wait(), 2)
    assert supervisor.trouble == []
    await supervisor.stop()


async def test_a_task_that_returns_is_done_and_stop_cancels_the_rest() -> None:
    """Returning is how a task says it stopped: it is not restarted. ``stop`` cancels the
    others and waits for them."""
    done = 0
    cancelled = asyncio.Event()

    async def finishes() -> None:
        nonlocal done
        done += 1

    async def runs_forever() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    supervisor = Supervisor(lambda task: None)
    await supervisor.spawn("once", finishes)
    supervisor.spawn("forever", runs_forever)
    await asyncio.sleep(0.01)
    await supervisor.stop()
    assert done == 1 and cancelled.is_set() and supervisor.trouble == []
