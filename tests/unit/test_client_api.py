"""The client's HTTP seam: error translation, paging and polling, against httpx's MockTransport."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from rich.console import Console

from batchd.client.api import BatchAPI, every_page
from batchd.client.errors import ServerError, Unreachable
from batchd.client.progress import ChangeLines
from batchd.client.watch import Follower, OnInterrupt, interrupt_policy

Handler = Callable[[httpx.Request], httpx.Response]


def api(handler: Handler) -> BatchAPI:
    return BatchAPI("http://batch.test/v1/", "sk-x", transport=httpx.MockTransport(handler))


def test_requests_go_under_the_base_url_with_the_bearer_key() -> None:
    """Paths are joined under /v1, ids are escaped, the key is a bearer token."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"id": "b", "object": "batch"})

    api(handler).batch("a/b")
    assert str(seen[0].url) == "http://batch.test/v1/batches/a%2Fb"
    assert seen[0].headers["authorization"] == "Bearer sk-x"


def test_an_error_envelope_becomes_a_server_error_with_every_field() -> None:
    """The OpenAI envelope's message, type, code and param, the status and the request id."""
    envelope = {"error": {"message": "nope", "type": "t", "param": "p", "code": "c"}}

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(409, json=envelope, headers={"x-request-id": "req_1"})

    with pytest.raises(ServerError) as caught:
        api(handler).cancel("b")
    error = caught.value
    assert (error.status_code, error.message, error.type) == (409, "nope", "t")
    assert (error.code, error.param, error.request_id) == ("c", "p", "req_1")


def test_an_error_that_is_not_json_keeps_its_text() -> None:
    """A proxy's HTML 502 is shown by its text, not lost."""
    with pytest.raises(ServerError) as caught:
        api(lambda request: httpx.Response(502, text="Bad Gateway")).batch("b")
    assert caught.value.status_code == 502 and caught.value.message == "Bad Gateway"


def test_a_success_that_is_not_json_is_an_error() -> None:
    """A base URL pointing at something else says so."""
    with pytest.raises(ServerError, match="did not answer with JSON"):
        api(lambda request: httpx.Response(200, text="<html>")).batch("b")


def test_no_connection_is_unreachable_naming_the_base_url() -> None:
    """Transport failures become Unreachable with the base URL in the message."""

    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused")

    with pytest.raises(Unreachable) as caught:
        api(handler).batches(limit=1, after=None)
    assert caught.value.message == (
        "Cannot reach the server at http://batch.test/v1: connection refused."
    )


def test_download_streams_the_bytes_into_the_sink() -> None:
    """File content is written as it arrives."""
    sink = io.BytesIO()
    written = api(lambda request: httpx.Response(200, content=b"a\nb\n")).download("f", sink)
    assert written == 4 and sink.getvalue() == b"a\nb\n"


def test_every_page_follows_has_more_from_the_last_id() -> None:
    """Pages are asked for with after=<last id> until has_more is false."""
    pages = {None: ["a", "b"], "b": ["c"]}
    asked: list[str | None] = []

    def fetch(after: str | None) -> dict[str, Any]:
        asked.append(after)
        ids = pages[after]
        return {"data": [{"id": i} for i in ids], "has_more": after is None}

    page = every_page(fetch, None)
    assert asked == [None, "b"]
    assert [item["id"] for item in page["data"]] == ["a", "b", "c"]
    assert (page["first_id"], page["last_id"], page["has_more"]) == ("a", "c", False)


def answers(*responses: httpx.Response | Exception) -> Handler:
    queue: Iterator[httpx.Response | Exception] = iter(responses)

    def handler(request: httpx.Request) -> httpx.Response:
        answer = next(queue)
        if isinstance(answer, Exception):
            raise answer
        return answer

    return handler


def batch(status: str) -> httpx.Response:
    return httpx.Response(200, json={"id": "b", "status": status, "request_counts": {}})


def test_following_rides_out_a_restarting_server() -> None:
    """Refused connections and 503s while polling are retried; the terminal batch is returned."""
    handler = answers(
        httpx.ConnectError("refused"), httpx.Response(503, json={}), batch("completed")
    )
    follower = Follower(api(handler), {"id": "b", "status": "in_progress"}, 0.0, _quiet)
    assert follower.run()["status"] == "completed"


def test_following_stops_at_an_error_that_will_not_pass() -> None:
    """A 404 while polling ends the watch with that error."""
    handler = answers(httpx.Response(404, json={"error": {"message": "gone"}}))
    follower = Follower(api(handler), {"id": "b", "status": "in_progress"}, 0.0, _quiet)
    with pytest.raises(ServerError, match="gone"):
        follower.run()


def test_nobody_to_ask_means_ctrl_c_detaches() -> None:
    """ask becomes detach with --json or without a terminal on stdin; explicit choices stay."""
    assert interrupt_policy(OnInterrupt.ASK, as_json=True) is OnInterrupt.DETACH
    assert interrupt_policy(OnInterrupt.CANCEL, as_json=True) is OnInterrupt.CANCEL


def _quiet() -> ChangeLines:
    return ChangeLines(Console(file=io.StringIO()))


def test_following_says_which_model_server_holds_the_batch_up() -> None:
    """While the batch runs, an upstream in trouble with batches is shown once, with its reason;
    a server without ``GET /v1/upstreams`` is not asked again."""
    polls = iter([batch("in_progress"), batch("in_progress"), batch("completed")])
    trouble = {"name": "gpu-1", "state": "failing", "reason": "connection refused", "batches": 1}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/upstreams"):
            return httpx.Response(200, json={"object": "list", "data": [trouble]})
        return next(polls)

    sink = io.StringIO()
    display = ChangeLines(Console(file=sink, width=200))
    follower = Follower(api(handler), {"id": "b", "status": "in_progress"}, 0.0, lambda: display)
    follower.run()
    shown = sink.getvalue()
    assert shown.count("b model server gpu-1 failing (connection refused), retrying") == 1

    states = iter(["in_progress", "in_progress", "in_progress", "completed"])
    upstream_asks = 0

    def not_batchd(request: httpx.Request) -> httpx.Response:
        nonlocal upstream_asks
        if request.url.path.endswith("/upstreams"):
            upstream_asks += 1
            return httpx.Response(404, json={"error": {"message": "no such route"}})
        return batch(next(states))

    Follower(api(not_batchd), {"id": "b", "status": "in_progress"}, 0.0, _quiet).run()
    assert upstream_asks == 1
