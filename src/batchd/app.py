"""create_app(settings): the ASGI application, with a lifespan that opens and closes everything."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from starlette.applications import Starlette
from starlette.middleware import Middleware

from batchd.api import openapi, routes
from batchd.api.errors import EXCEPTION_HANDLERS
from batchd.api.middleware import AuthMiddleware, RequestIdMiddleware
from batchd.batches import Batches
from batchd.blobstore import open_blobstore
from batchd.catalog import Catalog
from batchd.clock import Clock, SystemClock
from batchd.dashboard import routes as dashboard_routes
from batchd.files import Files
from batchd.keys import Authenticator
from batchd.metrics import Metrics
from batchd.settings import Settings
from batchd.store import open_store
from batchd.upstreams import build_upstreams
from batchd.webhooks import Webhooks
from batchd.worker import Worker

log = logging.getLogger("batchd")

SHUTDOWN_GRACE = 10.0


def create_app(
    settings: Settings, clock: Clock | None = None, on_fatal: Callable[[], None] = lambda: None
) -> Starlette:
    """The app. ``on_fatal`` is called once a worker task keeps failing: the process is to stop
    and exit non-zero (``app.state.fatal`` names the task)."""
    clock = clock or SystemClock()

    def fatal(task: str) -> None:
        app.state.fatal = task
        on_fatal()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        store = await open_store(settings.resolved_database_url)
        blobs = open_blobstore(settings.resolved_blob_url)
        await blobs.check()
        router = build_upstreams(settings)
        await router.open()
        metrics = Metrics()
        worker = (
            Worker(settings, store, blobs, router, clock, metrics, on_fatal=fatal)
            if settings.run_worker
            else None
        )
        app.state.store, app.state.blobs, app.state.metrics = store, blobs, metrics
        app.state.worker, app.state.clock, app.state.settings = worker, clock, settings
        app.state.files = Files(settings, store, blobs, clock)
        app.state.catalog = Catalog(router, clock)
        app.state.webhooks = Webhooks(store, clock, settings.webhook_timeout)
        app.state.batches = Batches(
            settings, store, blobs, clock, on_change=worker.notify if worker else lambda: None
        )
        if not settings.upstreams:
            log.warning("no_upstreams: no --upstream given, so every batch will fail validation")
        app.state.authenticator = authenticator = Authenticator(
            {k.key: k.project for k in settings.api_keys},
            store.keys,
            open_without_keys=settings.may_serve_without_keys,
        )
        if await authenticator.is_open():
            log.warning(
                "auth_disabled: no API key is configured or stored, so any bearer token is "
                "accepted until `batchd keys create` makes one"
            )
        if worker is not None:
            await worker.start()
        try:
            yield
        finally:
            if worker is not None:
                await worker.stop(SHUTDOWN_GRACE)
            await router.close()
            await store.close()

    app = Starlette(
        routes=[*routes, *dashboard_routes],
        lifespan=lifespan,
        exception_handlers=EXCEPTION_HANDLERS,
        middleware=[
            Middleware(RequestIdMiddleware),
            Middleware(AuthMiddleware),
        ],
    )
    app.state.fatal = None
    app.state.openapi = openapi.document_bytes(settings.completion_windows)
    return app
