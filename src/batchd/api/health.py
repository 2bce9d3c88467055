"""The operator's endpoints, outside ``/v1`` and so outside auth: liveness, readiness, metrics."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from batchd.api.errors import envelope
from batchd.api.responses import JSONResponse

log = logging.getLogger("batchd.api")

HOST = socket.gethostname()
"""The row a readiness check rewrites: one per host, however often the process restarts."""
READY_TIMEOUT = 5.0
"""Seconds a dependency may take to answer a readiness check before it counts as not ready."""


async def healthz(request: Request) -> Response:
    """Alive: the process serves HTTP. Says nothing about the store or the blobs."""
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Ready: the store and the blob store take a real write, and the worker (if this process
    runs one) has every task up and its commits going through."""
    state = request.app.state
    checks = {
        "store": state.store.check_writes(HOST, state.clock.now()),
        "blobs": state.blobs.check(),
    }
    failing = [name for name, ok in zip(checks, await _run_all(checks), strict=True) if not ok]
    if state.worker is not None:
        failing += state.worker.trouble
    if failing:
        return envelope(
            503, f"Not ready: {', '.join(failing)} not available.", "server_error", code="not_ready"
        )
    return JSONResponse({"status": "ok"})


async def _run_all(checks: dict[str, Awaitable[None]]) -> list[bool]:
    return list(await asyncio.gather(*(_passes(name, c) for name, c in checks.items())))


async def _passes(name: str, check: Awaitable[None]) -> bool:
    try:
        await asyncio.wait_for(check, READY_TIMEOUT)
    except Exception:
        # The cause goes to the log, not to an unauthenticated caller.
        log.warning("not_ready", exc_info=True, extra={"check": name})
        return False
    return True


async def metrics(request: Request) -> Response:
    body = await request.app.state.metrics.scrape(request.app.state.store)
    return Response(body, headers={"Content-Type": CONTENT_TYPE_LATEST})


routes = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
]
