"""The engine: validates, runs and finalizes batches. All coordination goes through the store, so
one worker or fifty behave the same."""

from batchd.worker.runner import Worker

__all__ = ["Worker"]
