"""A thin client of the Files and Batches HTTP API, over httpx: the same calls the SDKs make.

Objects are the API's JSON as dicts. httpx errors and error answers are translated here, at the
seam, into ``ServerError`` and ``Unreachable``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Self
from urllib.parse import quote

import httpx

from batchd.client.errors import LocalFileError, ServerError, Unreachable

Json = dict[str, Any]

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"
TIMEOUT = httpx.Timeout(60.0, connect=10.0)


class BatchAPI:
    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(
            base_url=self.base_url + "/", headers=headers, timeout=TIMEOUT, transport=transport
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._http.close()

    # ------------------------------------------------------------------ files

    def upload(self, path: Path, purpose: str = "batch") -> Json:
        """Upload a file; httpx streams it from disk."""
        try:
            handle = path.open("rb")
        except OSError as exc:
            raise LocalFileError.of("read", path, exc) from exc
        with handle:
            files = {"file": (path.name, handle, "application/jsonl")}
            return self._json("POST", "files", files=files, data={"purpose": purpose})

    def files(
        self, *, purpose: str | None, limit: int, after: str | None, order: str = "desc"
    ) -> Json:
        params = _params(purpose=purpose, limit=limit, after=after, order=order)
        return self._json("GET", "files", params=params)

    def file(self, file_id: str) -> Json:
        return self._json("GET", f"files/{_segment(file_id)}")

    def delete_file(self, file_id: str) -> Json:
        return self._json("DELETE", f"files/{_segment(file_id)}")

    def download(self, file_id: str, sink: IO[bytes]) -> int:
        """Stream a file's bytes into ``sink``; the number of bytes written."""
        written = 0
        url = f"files/{_segment(file_id)}/content"
        with (
            self._translated(),
            self._http.stream("GET", url, headers={"Accept": "application/binary"}) as response,
        ):
            _raise_for_error(response)
            for chunk in response.iter_bytes():
                sink.write(chunk)
                written += len(chunk)
        return written

    # ---------------------------------------------------------------- batches

    def create_batch(
        self, *, input_file_id: str, endpoint: str, window: str, metadata: dict[str, str]
    ) -> Json:
        body: Json = {
            "input_file_id": input_file_id,
            "endpoint": endpoint,
            "completion_window": window,
        }
        if metadata:
            body["metadata"] = metadata
        return self._json("POST", "batches", json=body)

    def batch(self, batch_id: str) -> Json:
        return self._json("GET", f"batches/{_segment(batch_id)}")

    def cancel(self, batch_id: str) -> Json:
        return self._json("POST", f"batches/{_segment(batch_id)}/cancel")

    def upstreams(self) -> Json:
        """batchd's own ``GET /v1/upstreams``: how each model server is doing."""
        return self._json("GET", "upstreams")

    def batches(self, *, limit: int, after: str | None) -> Json:
        return self._json("GET", "batches", params=_params(limit=limit, after=after))

    # ---------------------------------------------------------------- the seam

    def _json(self, method: str, url: str, **kwargs: Any) -> Json:
        with self._translated():
            response = self._http.request(method, url, **kwargs)
        _raise_for_error(response)
        try:
            document = response.json()
        except ValueError:
            document = None
        if not isinstance(document, dict):
            raise ServerError(
                response.status_code, f"The server at {self.base_url} did not answer with JSON."
            )
        return document

    @contextmanager
    def _translated(self) -> Iterator[None]:
        try:
            yield
        except httpx.TimeoutException as exc:
            raise Unreachable(self.base_url, "no answer in time") from exc
        except httpx.TransportError as exc:
            raise Unreachable(self.base_url, _reason(exc)) from exc


def every_page(fetch: Callable[..., Json], after: str | None) -> Json:
    """Follow ``has_more`` from ``after`` on; one list page holding every item."""
    data: list[Json] = []
    while True:
        page = fetch(after=after)
        items = page.get("data") or []
        data += items
        if not page.get("has_more") or not items:
            break
        after = str(data[-1]["id"])
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": False,
    }


def _raise_for_error(response: httpx.Response) -> None:
    if response.is_success:
        return
    response.read()
    error = _envelope(response)
    raise ServerError(
        response.status_code,
        _text(error.get("message")) or _fallback_message(response),
        type=_text(error.get("type")),
        code=_text(error.get("code")),
        param=_text(error.get("param")),
        request_id=response.headers.get("x-request-id"),
    )


def _envelope(response: httpx.Response) -> dict[str, Any]:
    try:
        document = response.json()
    except ValueError:
        return {}
    error = document.get("error") if isinstance(document, dict) else None
    return error if isinstance(error, dict) else {}


def _fallback_message(response: httpx.Response) -> str:
    text = response.text.strip()[:200]
    return text or f"HTTP {response.status_code} {response.reason_phrase}"


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def _reason(exc: httpx.TransportError) -> str:
    """``[Errno 111] Connection refused`` → ``connection refused``."""
    text = re.sub(r"^\[Errno -?\d+\]\s*", "", str(exc))
    return text[:1].lower() + text[1:] if text else type(exc).__name__


def _segment(identifier: str) -> str:
    return quote(identifier, safe="")


def _params(**values: object) -> dict[str, str]:
    return {name: str(value) for name, value in values.items() if value is not None}
