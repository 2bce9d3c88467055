"""Pure ASGI middleware: a request id on every response, and the caller's project from its key."""

from __future__ import annotations

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from batchd import ids
from batchd.api.errors import envelope
from batchd.keys import Authenticator


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
    """The bearer key names the caller's project (see ``keys.Authenticator``, which the lifespan
    puts in ``app.state.authenticator``); a caller it refuses gets a 401. The key is never
    logged."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        authenticator: Authenticator = scope["app"].state.authenticator
        project = await authenticator.project(_bearer(Headers(scope=scope)))
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


def _bearer(headers: Headers) -> str | None:
    scheme, _, key = headers.get("authorization", "").partition(" ")
    return key.strip() or None if scheme.lower() == "bearer" else None
