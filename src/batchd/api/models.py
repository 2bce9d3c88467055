"""/v1/models: the models batchd serves, in OpenAI's shape."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from batchd.api.responses import JSONResponse
from batchd.api.schemas import model_object
from batchd.catalog import Catalog
from batchd.errors import NotFound


def _catalog(request: Request) -> Catalog:
    catalog: Catalog = request.app.state.catalog
    return catalog


async def list_models(request: Request) -> Response:
    models = await _catalog(request).models()
    return JSONResponse({"object": "list", "data": [model_object(m) for m in models]})


async def retrieve(request: Request) -> Response:
    model = request.path_params["model"]
    served = await _catalog(request).find(model)
    if served is None:
        raise NotFound(
            f"The model '{model[:256]}' does not exist.", code="model_not_found", param="model"
        )
    return JSONResponse(model_object(served))


routes = [
    Route("/v1/models", list_models, methods=["GET"]),
    Route("/v1/models/{model:path}", retrieve, methods=["GET"]),
]
