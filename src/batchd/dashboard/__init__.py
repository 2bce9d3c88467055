"""The web dashboard: one static page and its scripts, shipped in the package; no build step.

The page reads the same ``/v1`` API as any client, with the key the user types once (kept in the
browser's session storage), so it shows exactly what that key's project may see. The page and its
scripts hold nothing secret and are served to anyone; every response forbids anything but this
server's own scripts, styles and API (Content-Security-Policy).
"""

from __future__ import annotations

import os
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import PathLike, StaticFiles
from starlette.types import Scope

STATIC = Path(__file__).parent / "static"

SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    # Revalidate every time (a 304 is cheap): a new batchd never runs with the old scripts.
    "cache-control": "no-cache",
}


class DashboardFiles(StaticFiles):
    """The static files, each with the security headers."""

    def file_response(
        self,
        full_path: PathLike,
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers.update(SECURITY_HEADERS)
        return response


async def index(request: Request) -> Response:
    return FileResponse(STATIC / "index.html", headers=SECURITY_HEADERS)


routes: list[BaseRoute] = [
    Route("/", index, methods=["GET", "HEAD"]),
    Mount("/dashboard", DashboardFiles(directory=STATIC), name="dashboard"),
]
