"""/v1/batches: parse, call the Batches use cases, render."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from batchd.api.params import Bounds, int_param, json_object, project_of
from batchd.api.responses import JSONResponse
from batchd.api.schemas import batch_object, list_page
from batchd.batches import Batches

BATCH_PAGE = Bounds(default=20, low=1, high=100)
"""``limit`` of ``GET /v1/batches``."""


def _batches(request: Request) -> Batches:
    batches: Batches = request.app.state.batches
    return batches


async def create(request: Request) -> Response:
    batch = await _batches(request).create(
        project_of(request),
        await json_object(request),
        idempotency_key=request.headers.get("idempotency-key"),
    )
    return JSONResponse(batch_object(batch))


async def retrieve(request: Request) -> Response:
    batch = await _batches(request).get(project_of(request), request.path_params["batch_id"])
    return JSONResponse(batch_object(batch))


async def cancel(request: Request) -> Response:
    batch = await _batches(request).cancel(project_of(request), request.path_params["batch_id"])
    return JSONResponse(batch_object(batch))


async def output_so_far(request: Request) -> Response:
    """batchd's own: the output lines finished so far, while the batch runs."""
    return await _results_so_far(request, "output")


async def errors_so_far(request: Request) -> Response:
    """batchd's own: the error lines finished so far, while the batch runs."""
    return await _results_so_far(request, "error")


async def _results_so_far(request: Request, kind: str) -> Response:
    chunks = await _batches(request).results_so_far(
        project_of(request), request.path_params["batch_id"], kind
    )
    return StreamingResponse(chunks, media_type="application/jsonl")


async def list_batches(request: Request) -> Response:
    page = await _batches(request).list(
        project_of(request),
        limit=int_param(request, "limit", **BATCH_PAGE._asdict()),
        after=request.query_params.get("after"),
    )
    return JSONResponse(list_page(page.items, page.has_more, batch_object))


routes = [
    Route("/v1/batches", create, methods=["POST"]),
    Route("/v1/batches", list_batches, methods=["GET"]),
    Route("/v1/batches/{batch_id}", retrieve, methods=["GET"]),
    Route("/v1/batches/{batch_id}/cancel", cancel, methods=["POST"]),
    Route("/v1/batches/{batch_id}/output", output_so_far, methods=["GET"]),
    Route("/v1/batches/{batch_id}/error", errors_so_far, methods=["GET"]),
]
