"""A batch's results read back in line order, from the store's rows and the workers' result
parts: what finalizing copies line by line into the output and error files, and what a download
of the results so far streams while the batch runs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from batchd.blobstore import BlobStore
from batchd.errors import BlobNotFound
from batchd.models import RequestState
from batchd.result_lines import skipped_line
from batchd.store import FinishedLine, SqlStore

RUN = 1 << 20
"""Bytes of a result part read at once."""

PART_KIND = {
    state: "output" if state is RequestState.SUCCEEDED else "error" for state in RequestState
}
"""The file a final line goes to, by the line's state: the output file or the error file."""


def part_key(batch_id: str, part: int) -> str:
    return f"batches/{batch_id}/parts/{part}.jsonl"


@dataclass(frozen=True, slots=True)
class Lines:
    """Whole result lines, each ending in a newline, all for one file: ``output`` or ``error``."""

    kind: str
    data: bytes


@dataclass(frozen=True, slots=True)
class Lost:
    """A line whose result cannot be read back: its part was deleted or cut short."""

    row: FinishedLine


async def in_line_order(
    store: SqlStore, blobs: BlobStore, batch_id: str, *, kind: str | None = None
) -> AsyncIterator[Lines | Lost]:
    """Every line's result, in line order, adjacent lines of a part read at once; with ``kind``,
    only the lines finished so far for that file (``output`` or ``error``), and no other part is
    read. Without it, a line with no result yet is a ``batch_cancelled`` line: by the time a
    batch is finalized, only lines closed by a cancel have none."""
    run: _Run | None = None
    async for row in store.finished_lines(batch_id):
        if kind is not None and (row.state is RequestState.PENDING or PART_KIND[row.state] != kind):
            continue
        if row.part is None:
            yield Lines(PART_KIND[row.state], unparted_line(row))
        elif run is not None and run.takes(row):
            run.add(row)
        else:
            if run is not None:
                async for piece in _read_run(blobs, batch_id, run):
                    yield piece
            run = _Run(row)
    if run is not None:
        async for piece in _read_run(blobs, batch_id, run):
            yield piece


async def read_whole(
    blobs: BlobStore, batch_id: str, part: int, start: int, length: int
) -> bytes | None:
    """``length`` bytes of a part from ``start``; None if the part is gone or ends first."""
    try:
        data = await blobs.read_range(part_key(batch_id, part), start, length)
    except BlobNotFound:
        return None
    return data if len(data) == length else None


def unparted_line(row: FinishedLine) -> bytes:
    """The result line of a line outside any part: kept in its row, or skipped."""
    line = row.result if row.result is not None else skipped_line(row.custom_id, row.state)
    return line + b"\n"


async def _read_run(blobs: BlobStore, batch_id: str, run: _Run) -> AsyncIterator[Lines | Lost]:
    """One read for the run (about ``RUN`` bytes at most), if it comes back whole: otherwise
    what is left of it, a line at a time."""
    data = await read_whole(blobs, batch_id, run.part, run.start, run.end - run.start)
    if data is not None:
        yield Lines(PART_KIND[run.state], data)
        return
    for row in run.rows:
        assert row.part is not None
        line = await read_whole(blobs, batch_id, row.part, row.part_offset, row.part_length)
        yield Lines(PART_KIND[row.state], line) if line is not None else Lost(row)


class _Run:
    """Lines that lie one after another in a part, in one state: read at once."""

    def __init__(self, first: FinishedLine) -> None:
        assert first.part is not None
        self.part = first.part
        self.start = first.part_offset
        self.end = first.part_offset + first.part_length
        self.state = first.state
        self.rows = [first]

    def takes(self, row: FinishedLine) -> bool:
        return row.part == self.part and row.part_offset == self.end and self.end - self.start < RUN

    def add(self, row: FinishedLine) -> None:
        self.end += row.part_length
        self.rows.append(row)
