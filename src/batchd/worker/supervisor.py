"""One supervisor for every long-lived task of a worker, so that none dies unobserved.

    spawn(name, run) ──run raises──▶ logged at error with its traceback; restarted after a backoff
                                     (RESTART_DELAY, doubling up to MAX_RESTART_DELAY)
                     ──raises MAX_FAILURES times in a row──▶ fatal: ``on_fatal`` is called, and the
                                     process exits non-zero (systemd or Kubernetes restart it)
                     ──returns──▶ done (it was told to stop)

A run that lasted ``HEALTHY_AFTER`` seconds before it failed starts the count again. While a task
waits to be restarted, and once one is fatal, ``trouble`` names it: ``/readyz`` answers 503.

Tasks keep their state in their objects, not in the coroutine, so a restarted run goes on where the
failed one stopped (the committer's results, a dispatcher's claimed lines). Errors a task expects
(the store briefly away) it handles itself; what reaches the supervisor is a bug or a fault nobody
foresaw.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger("batchd.worker")

RESTART_DELAY = 0.5
MAX_RESTART_DELAY = 30.0
MAX_FAILURES = 5
HEALTHY_AFTER = 60.0


class Supervisor:
    def __init__(
        self,
        on_fatal: Callable[[str], None],
        *,
        restart_delay: float = RESTART_DELAY,
        max_restart_delay: float = MAX_RESTART_DELAY,
        max_failures: int = MAX_FAILURES,
        healthy_after: float = HEALTHY_AFTER,
    ) -> None:
        self._on_fatal = on_fatal
        self._restart_delay = restart_delay
        self._max_restart_delay = max_restart_delay
        self._max_failures = max_failures
        self._healthy_after = healthy_after
        self._tasks: set[asyncio.Task[None]] = set()
        self._down: dict[str, int] = {}  # task name → how many of that name wait for a restart
        self.fatal: str | None = None  # the task that kept failing

    @property
    def trouble(self) -> list[str]:
        """The tasks that are down: waiting for a restart, or failed for good."""
        down = sorted(self._down)
        return [self.fatal, *down] if self.fatal else down

    def spawn(self, name: str, run: Callable[[], Awaitable[None]]) -> asyncio.Task[None]:
        """Run ``run()`` under supervision until it returns; the task that does it."""
        task = asyncio.create_task(self._keep(name, run), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def stop(self) -> None:
        """Cancel every task still running and wait for them."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _keep(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        failures = 0
        while True:
            started = time.monotonic()
            try:
                await run()
                return
            except Exception:
                if time.monotonic() - started >= self._healthy_after:
                    failures = 0
                failures += 1
                log.exception("task_failed", extra={"task": name, "failures": failures})
            if failures >= self._max_failures:
                self._give_up(name, failures)
                return
            await self._pause(name, failures)

    async def _pause(self, name: str, failures: int) -> None:
        delay = min(self._max_restart_delay, self._restart_delay * 2 ** (failures - 1))
        self._down[name] = self._down.get(name, 0) + 1
        try:
            await asyncio.sleep(delay)
        finally:
            self._down[name] -= 1
            if not self._down[name]:
                del self._down[name]
        log.warning("task_restarted", extra={"task": name, "failures": failures})

    def _give_up(self, name: str, failures: int) -> None:
        log.critical(
            "task_failed_for_good: stopping the process",
            extra={"task": name, "failures": failures},
        )
        if self.fatal is None:
            self.fatal = name
            self._on_fatal(name)
