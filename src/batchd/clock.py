"""The one clock. Tests replace it to move time without sleeping."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch."""
        ...


class SystemClock:
    def now(self) -> float:
        return time.time()


def whole_seconds(clock: Clock) -> int:
    """OpenAI timestamps are whole seconds."""
    return int(clock.now())
