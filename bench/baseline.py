"""The baseline every scenario is measured against: a bare asyncio loop that sends the same
requests at the same concurrency and writes the same output lines, with nothing durable in
between, and batchd's garbage-collector settings (``batchd.heap``): the benchmark's process has
imported about as much as batchd's, and with CPython's defaults the collector costs the bare loop
~20 µs of CPU per request, as it cost batchd.

Its HTTP client is aiohttp, the fastest a hand-written loop would use (httpx, under the openai
SDK, costs several times more). ``client="batchd"`` runs the same loop through batchd's own
client (``batchd.upstreams.connections``) instead, to show what batchd's work costs on its own;
``client="httpx"`` through httpx, for the ``clients`` scenario that compares the three.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Literal

import aiohttp
import httpx
import orjson

from batchd.heap import tune_collector
from batchd.result_lines import answered_line
from batchd.settings import Settings
from batchd.upstreams.connections import ConnectionPool

Client = Literal["aiohttp", "batchd", "httpx"]
Post = Callable[[str, bytes], Awaitable[tuple[int, str | None, bytes]]]
"""(path under /v1, body) → (status, x-request-id, body)"""


async def run_baseline(
    input_path: Path,
    output_path: Path,
    base_url: str,
    concurrency: int,
    client: Client = "aiohttp",
) -> int:
    """Send every line of ``input_path``; return how many answers were written."""
    tune_collector()
    if client == "httpx":
        return await _send_with_httpx(input_path, output_path, base_url, concurrency)
    if client == "batchd":
        pool = ConnectionPool(
            base_url,
            headers={"content-type": "application/json"},
            connect_timeout=10,
            request_timeout=600,
            max_idle=concurrency,
            max_body=Settings.model_fields["max_response_bytes"].default,
        )

        async def post_batchd(path: str, body: bytes) -> tuple[int, str | None, bytes]:
            answer = await pool.post(path, body, {})
            return answer.status, answer.headers.get("x-request-id"), answer.body

        try:
            return await _send_all(input_path, output_path, concurrency, post_batchd)
        finally:
            await pool.close()

    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def post_aiohttp(path: str, body: bytes) -> tuple[int, str | None, bytes]:
            async with session.post(
                base_url + path, data=body, headers={"Content-Type": "application/json"}
            ) as response:
                content = await response.read()
                return response.status, response.headers.get("x-request-id"), content

        return await _send_all(input_path, output_path, concurrency, post_aiohttp)


async def _send_with_httpx(
    input_path: Path, output_path: Path, base_url: str, concurrency: int
) -> int:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=600) as client:

        async def post_httpx(path: str, body: bytes) -> tuple[int, str | None, bytes]:
            response = await client.post(
                base_url + path, content=body, headers={"Content-Type": "application/json"}
            )
            return response.status_code, response.headers.get("x-request-id"), response.content

        return await _send_all(input_path, output_path, concurrency, post_httpx)


async def _send_all(input_path: Path, output_path: Path, concurrency: int, post: Post) -> int:
    semaphore = asyncio.Semaphore(concurrency)
    written = 0
    with input_path.open("rb") as source, output_path.open("wb") as sink:

        async def one(line: bytes) -> None:
            nonlocal written
            request = orjson.loads(line)
            body = orjson.dumps(request["body"])
            try:
                status, request_id, content = await post(request["url"].removeprefix("/v1"), body)
                _, out, _ = answered_line(request["custom_id"], status, request_id, content)
                sink.write(out + b"\n")
                written += 1
            finally:
                semaphore.release()

        tasks = set()
        for line in source:
            if not line.strip():
                continue
            await semaphore.acquire()
            task = asyncio.create_task(one(line))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks)
    return written
