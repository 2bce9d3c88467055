"""/v1/upstreams, batchd's own: how each model server is doing, as the workers report it."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from batchd.api.responses import JSONResponse
from batchd.api.schemas import upstream_object
from batchd.models import merged

STALE_AFTER_LEASES = 3
"""A worker's report older than this many leases is from a worker that is gone."""


async def list_upstreams(request: Request) -> Response:
    state = request.app.state
    fresh_since = state.clock.now() - STALE_AFTER_LEASES * state.settings.lease_seconds
    statuses = merged(await state.store.upstream_status(fresh_since))
    return JSONResponse({"object": "list", "data": [upstream_object(*seen) for seen in statuses]})


routes = [Route("/v1/upstreams", list_upstreams, methods=["GET"])]
