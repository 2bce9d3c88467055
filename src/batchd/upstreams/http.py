"""An OpenAI-compatible model server over HTTP, through one aiohttp session per upstream.

aiohttp rather than httpx: at 64+ requests in flight it costs several times less CPU per request,
and per-request CPU is most of what batchd adds to a batch's wall time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import aiohttp

from batchd.errors import UpstreamDisconnected, UpstreamTimeout, UpstreamUnreachable
from batchd.upstreams.base import Upstream, UpstreamResponse


class HttpUpstream(Upstream):
    def __init__(
        self,
        *,
        name: str,
        base_url: str,
        models: frozenset[str],
        max_concurrency: int,
        api_key: str | None,
        request_timeout: float,
        connect_timeout: float,
    ) -> None:
        self.name = name
        self.models = models
        self.max_concurrency = max_concurrency
        self._base_url = base_url.rstrip("/")
        self._headers = {"Content-Type": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._timeout = aiohttp.ClientTimeout(total=request_timeout, sock_connect=connect_timeout)
        self._session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        connector = aiohttp.TCPConnector(limit=self.max_concurrency, limit_per_host=0)
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=self._timeout, headers=self._headers
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def url_for(self, endpoint: str) -> str:
        """``/v1/chat/completions`` → ``{base_url}/chat/completions`` (the base ends in /v1)."""
        return self._base_url + endpoint.removeprefix("/v1")

    async def send(
        self, endpoint: str, body: bytes, headers: Mapping[str, str]
    ) -> UpstreamResponse:
        assert self._session is not None, "open() first"
        try:
            async with self._session.post(
                self.url_for(endpoint), data=body, headers=headers
            ) as response:
                content = await response.read()
                return UpstreamResponse(
                    status=response.status,
                    body=content,
                    request_id=response.headers.get("x-request-id"),
                    headers=response.headers,
                )
        except TimeoutError as exc:
            raise UpstreamTimeout() from exc
        except (aiohttp.ClientConnectorError, ConnectionRefusedError) as exc:
            raise UpstreamUnreachable(
                f"The model server could not be reached ({type(exc).__name__})."
            ) from exc
        except (aiohttp.ClientError, asyncio.IncompleteReadError, OSError) as exc:
            raise UpstreamDisconnected(
                f"The model server closed the connection without answering ({type(exc).__name__})."
            ) from exc
