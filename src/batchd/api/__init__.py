"""The HTTP layer: parse, call a use case, render the OpenAI shape. No SQL, no rules."""

from __future__ import annotations

from starlette.routing import BaseRoute

from batchd.api import batches, files, health, models, openapi, upstreams, webhooks

routes: list[BaseRoute] = [
    *files.routes,
    *batches.routes,
    *models.routes,
    *upstreams.routes,
    *webhooks.routes,
    *health.routes,
    *openapi.routes,
]
