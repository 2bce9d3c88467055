"""Pure ASGI middleware: a request id on every response, and the caller's project from its key."""

from __future__ import annotations

from collections.abc import Mapping

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from batchd import ids
from batchd.api.errors import envelope
from batchd.models import DEFAULT_PROJECT


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = ids.request_id()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)["x-request-id"] = request_id
            await send(message)

        await self.app(scope, receive, send_with_id)


class AuthMiddleware:
    """With no keys configured every caller is in the default project; otherwise the bearer key
    names the project, and anything else is a 401."""

    def __init__(self, app: ASGIApp, projects_by_key: Mapping[str, str]) -> None:
        self.app = app
        self.projects_by_key = projects_by_key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        project = self._project(Headers(scope=scope).get("authorization", ""))
        if project is None:
            response = envelope(
                401,
                "Incorrect API key provided.",
                "authentication_error",
                code="invalid_api_key",
            )
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})["project"] = project
        await self.app(scope, receive, send)

    def _project(self, authorization: str) -> str | None:
        if not self.projects_by_key:
            return DEFAULT_PROJECT
        scheme, _, key = authorization.partition(" ")
        if scheme.lower() != "bearer":
            return None
        return self.projects_by_key.get(key.strip())
