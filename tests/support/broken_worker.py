"""``python -m tests.support.broken_worker serve …``: batchd, but with a worker task that fails
every time it runs (a bug batchd cannot recover from), to see the process go down for it."""

from __future__ import annotations

from batchd.cli import main
from batchd.worker.runner import Worker


async def _always_failing(self: Worker) -> None:
    raise RuntimeError("a bug in housekeeping")


Worker._housekeeping = _always_failing  # type: ignore[method-assign]

if __name__ == "__main__":
    main()
