"""The lines an upstream's feeder has claimed and read, waiting for its senders.

Handing a line over is a deque's ``append`` and ``popleft``, not a queue's put and get: it happens
once per request, on the hot path.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable

import msgspec

from batchd.metrics import ModelMetrics
from batchd.models import ClaimedRequest


class Job(msgspec.Struct, gc=False):
    """A claimed line ready to send. One is made per request: a Struct, built in C (see
    ``batchd.models``)."""

    claim: ClaimedRequest
    endpoint: str
    observed: ModelMetrics
    body: bytes
    leased_until: float


class ReadyJobs:
    """Jobs in the order they are to be sent; ``hungry`` is set once they fall to the low
    watermark (time to claim more), ``available`` once jobs are added."""

    def __init__(self, low_watermark: int) -> None:
        self.jobs: deque[Job] = deque()
        self.low_watermark = low_watermark
        self.hungry = asyncio.Event()
        self.available = asyncio.Event()

    def __len__(self) -> int:
        return len(self.jobs)

    def add(self, jobs: Iterable[Job]) -> None:
        before = len(self.jobs)
        self.jobs.extend(jobs)
        if len(self.jobs) > before:  # a wake-up for nothing sets the senders hungry again
            self.available.set()

    def take(self, *, fresh: bool = False) -> Job | None:
        """The next job, or None if there is none. With ``fresh``, the first whose line has not
        failed before, if any (the breaker's probe: a line tried before may be failing on its
        own, and would keep the upstream paused)."""
        jobs = self.jobs
        if len(jobs) <= self.low_watermark:
            self.hungry.set()
        if not jobs:
            return None
        if fresh:
            job = next((job for job in jobs if job.claim.span is not None), None)
            if job is not None:
                jobs.remove(job)
                return job
        return jobs.popleft()

    def remove(self, batch_ids: set[str]) -> list[Job]:
        """Take out the jobs of these batches (stopped running); those taken."""
        taken = [job for job in self.jobs if job.claim.batch_id in batch_ids]
        if taken:
            self.jobs = deque(job for job in self.jobs if job.claim.batch_id not in batch_ids)
        return taken

    def drain(self) -> list[Job]:
        taken = list(self.jobs)
        self.jobs.clear()
        return taken
