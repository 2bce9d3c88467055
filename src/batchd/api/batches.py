"""/v1/batches: parse, call the Batches use cases, render."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
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
    batch = await _batches(request).create(project_of(request), await json_object(request))
    return JSONResponse(batch_object(batch))


async def retrieve(request: Request) -> Response:
    batch = await _batches(request).get(project_of(request), request.path_params["batch_id"])
    return JSONResponse(batch_object(batch))


async def cancel(request: Request) -> Response:
    batch = await _batches(request).cancel(project_of(request), request.path_params["batch_id"])
    return JSONResponse(batch_object(batch))


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
]
