"""/v1/webhook_endpoints and /v1/webhook_event_types: parse, call the Webhooks use cases,
render OpenAI's shapes."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from batchd.api.params import int_param, json_object, project_of
from batchd.api.responses import JSONResponse
from batchd.api.schemas import list_page, webhook_endpoint_object
from batchd.webhooks import EVENT_TYPES, Webhooks


def _webhooks(request: Request) -> Webhooks:
    webhooks: Webhooks = request.app.state.webhooks
    return webhooks


def _id(request: Request) -> str:
    endpoint_id: str = request.path_params["webhook_endpoint_id"]
    return endpoint_id


async def create(request: Request) -> Response:
    endpoint = await _webhooks(request).create(project_of(request), await json_object(request))
    return JSONResponse(webhook_endpoint_object(endpoint, with_secret=True))


async def retrieve(request: Request) -> Response:
    endpoint = await _webhooks(request).get(project_of(request), _id(request))
    return JSONResponse(webhook_endpoint_object(endpoint))


async def update(request: Request) -> Response:
    endpoint = await _webhooks(request).update(
        project_of(request), _id(request), await json_object(request)
    )
    return JSONResponse(webhook_endpoint_object(endpoint))


async def list_endpoints(request: Request) -> Response:
    page = await _webhooks(request).list(
        project_of(request),
        limit=int_param(request, "limit", default=20, low=1, high=100),
        after=request.query_params.get("after"),
    )
    return JSONResponse(list_page(page.items, page.has_more, webhook_endpoint_object))


async def delete(request: Request) -> Response:
    deleted = await _webhooks(request).delete(project_of(request), _id(request))
    return JSONResponse({"id": deleted, "object": "webhook_endpoint.deleted", "deleted": True})


async def rotate_secret(request: Request) -> Response:
    endpoint = await _webhooks(request).rotate_secret(
        project_of(request), _id(request), await json_object(request)
    )
    return JSONResponse(webhook_endpoint_object(endpoint, with_secret=True))


async def test(request: Request) -> Response:
    params = await json_object(request)
    status = await _webhooks(request).test(project_of(request), _id(request), params)
    return JSONResponse(
        {
            "object": "webhook_endpoint.test",
            "webhook_endpoint_id": _id(request),
            "event_type": params["event_type"],
            "status_code": status,
            "success": True,
        }
    )


async def event_types(request: Request) -> Response:
    return JSONResponse({"object": "list", "data": list(EVENT_TYPES)})


_ONE = "/v1/webhook_endpoints/{webhook_endpoint_id}"
routes = [
    Route("/v1/webhook_endpoints", create, methods=["POST"]),
    Route("/v1/webhook_endpoints", list_endpoints, methods=["GET"]),
    Route(_ONE, retrieve, methods=["GET"]),
    Route(_ONE, update, methods=["POST"]),
    Route(_ONE, delete, methods=["DELETE"]),
    Route(_ONE + "/rotate_secret", rotate_secret, methods=["POST"]),
    Route(_ONE + "/test", test, methods=["POST"]),
    Route("/v1/webhook_event_types", event_types, methods=["GET"]),
]
