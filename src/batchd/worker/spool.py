"""Result parts: each worker writes the output and error lines it makes, once, to append-only
files of its own per batch, and the store keeps only where each line sits.

A group of results is written to its parts (durably) before the group is committed, so a committed
result always points at bytes that exist. Bytes written for results that were then not counted (a
crash before the commit, a lease lost meanwhile) are told apart by the part's ``written`` and
``committed`` marks: see ``ResultPart``.

The first ``KEPT_IN_STORE`` lines of each batch a worker answers stay in the store, as whole lines:
a part costs a row, a file, a sync per group commit, a copy and a delete, which is most of what a
batch of a hundred lines costs (200 such batches at once ran ~15 % slower with parts for all).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass

from batchd.blobstore import BlobStore
from batchd.models import RequestResult, RequestState
from batchd.results import PART_KIND, part_key
from batchd.store import SqlStore

KEPT_IN_STORE = 256
"""Lines of each batch a worker keeps in the store before it starts writing parts."""
KEPT_LINE_BYTES = 64 * 1024
"""A line this long goes to a part even then: the store would hold it in its page cache, and read
it back with a page of others while finalizing."""
LARGE_LINE = 1 << 20
"""A line this long is written to its part on its own, not copied together with the others."""
MAX_OPEN_PARTS = 4096
"""Parts remembered for appending (more than a group can touch); past this many, the least recently
used are forgotten, and a later result of their batch starts a new part."""


@dataclass(slots=True)
class _OpenPart:
    id: int
    key: str
    end: int  # where the next line starts

    def append(self, results: list[RequestResult]) -> list[tuple[str, int, bytes]]:
        """Give each result its place at the end of this part; the writes that put them there:
        one for them all, but for a line of a megabyte or more, which is written on its own
        rather than copied into the others' (an answer may be 64 MiB)."""
        start = end = self.end
        for result in results:
            length = len(result.output_line) + 1
            result.part, result.part_offset, result.part_length = self.id, end, length
            end += length
        self.end = end
        lines = [result.output_line for result in results]
        if max(map(len, lines)) < LARGE_LINE:
            lines.append(b"")
            return [(self.key, start, b"\n".join(lines))]
        return list(self._writes(start, lines))

    def _writes(self, at: int, lines: list[bytes]) -> Iterator[tuple[str, int, bytes]]:
        pending: list[bytes] = []  # small lines (and newlines) to write together, from ``at``
        for line in lines:
            if len(line) < LARGE_LINE:
                pending += (line, b"\n")
                continue
            if pending:
                chunk = b"".join(pending)
                yield self.key, at, chunk
                at += len(chunk)
            yield self.key, at, line
            at += len(line)
            pending = [b"\n"]
        if pending:
            yield self.key, at, b"".join(pending)


class ResultSpool:
    def __init__(self, store: SqlStore, blobs: BlobStore) -> None:
        self._store = store
        self._blobs = blobs
        self._parts: OrderedDict[tuple[str, str], _OpenPart] = OrderedDict()
        self._kept: OrderedDict[str, int] = OrderedDict()  # batch → its lines kept in the store

    async def place(self, group: list[RequestResult]) -> None:
        """Write the group's final lines to this worker's parts, and set where each one went.

        Parts are opened first, so that a store error moves no part's end. If a write fails, the
        group's parts are forgotten and the error raised: placing the group again writes it to
        new parts. (Retrying the same part could fail for good: its batch may have been finished
        and its parts deleted by another worker meanwhile.) What a failed write left lies past
        its part's ``written`` mark, where nothing reads it."""
        by_part: dict[tuple[str, str], list[RequestResult]] = {}
        for result in group:
            if result.state is not RequestState.PENDING and self._to_part(result):
                by_part.setdefault((result.batch_id, PART_KIND[result.state]), []).append(result)
        for where in by_part:
            if where in self._parts:
                self._parts.move_to_end(where)  # not to be forgotten while the group opens parts
            else:
                await self._open(where)
        writes = [
            write
            for where, results in by_part.items()
            for write in self._parts[where].append(results)
        ]
        try:
            await self._blobs.write_at(writes)
        except OSError:
            for where in by_part:
                del self._parts[where]
            raise

    def _to_part(self, result: RequestResult) -> bool:
        """Whether the result's line goes to a part (else it stays whole in the store)."""
        kept = self._kept.get(result.batch_id, 0)
        if kept >= KEPT_IN_STORE or len(result.output_line) >= KEPT_LINE_BYTES:
            return True
        result.part = None  # it may have been given one by a write that failed
        self._kept[result.batch_id] = kept + 1
        self._kept.move_to_end(result.batch_id)
        while len(self._kept) > MAX_OPEN_PARTS:
            self._kept.popitem(last=False)
        return False

    async def _open(self, where: tuple[str, str]) -> _OpenPart:
        batch_id, kind = where
        part_id = await self._store.add_result_part(batch_id, kind)
        part = self._parts[where] = _OpenPart(part_id, part_key(batch_id, part_id), 0)
        while len(self._parts) > MAX_OPEN_PARTS:
            self._parts.popitem(last=False)
        return part
