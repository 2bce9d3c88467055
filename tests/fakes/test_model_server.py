"""Tests of the fake OpenAI model server used by batchd's end-to-end tests."""

from __future__ import annotations

import asyncio
import base64
import struct
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import httpx
import openai
import orjson
import pytest
from openai.types import Completion, CreateEmbeddingResponse, ModerationCreateResponse
from openai.types.chat import ChatCompletion
from openai.types.responses import Response

from tests.fakes.model_server import (
    BATCH_ID_HEADER,
    CUSTOM_ID_HEADER,
    REQUEST_ID_HEADER,
    FakeModelServer,
    FaultConfig,
    FaultRule,
    embedding_vector,
    loaded_latency_ms,
    running_model_server,
    start_model_server_process,
    stop_model_server_process,
)

CHAT_BODY = {"model": "gpt-test", "messages": [{"role": "user", "content": "hello there"}]}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def server() -> AsyncIterator[FakeModelServer]:
    async with running_model_server() as fake:
        yield fake


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@dataclass
class Reply:
    status: int
    headers: Mapping[str, str]
    body: Any


async def post(
    client: aiohttp.ClientSession,
    url: str,
    payload: object = CHAT_BODY,
    *,
    custom_id: str | None = None,
    batch_id: str | None = None,
    timeout_seconds: float = 5.0,
) -> Reply:
    headers = {"Content-Type": "application/json"}
    if custom_id is not None:
        headers[CUSTOM_ID_HEADER] = custom_id
    if batch_id is not None:
        headers[BATCH_ID_HEADER] = batch_id
    data = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    client_timeout = aiohttp.ClientTimeout(total=timeout_seconds)
    async with client.post(url, data=data, headers=headers, timeout=client_timeout) as response:
        return await _reply(response)


async def get(client: aiohttp.ClientSession, url: str) -> Reply:
    async with client.get(url) as response:
        return await _reply(response)


async def _reply(response: aiohttp.ClientResponse) -> Reply:
    raw = await response.read()
    is_json = response.content_type == "application/json"
    return Reply(response.status, response.headers, orjson.loads(raw) if is_json else raw.decode())


def chat_url(server: FakeModelServer) -> str:
    return server.base_url + "/chat/completions"


# ---------------------------------------------------------------- happy shapes


@pytest.mark.anyio
async def test_chat_completion_echoes_the_last_user_message(
    server: FakeModelServer, client: aiohttp.ClientSession
) -> None:
    payload = {
        "model": "gpt-test",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "one two three"}]},
        ],
    }
    reply = await post(client, chat_url(server), payload)

    assert reply.status == 200
    completion = ChatCompletion.model_validate(reply.body)
    assert completion.id.startswith("chatcmpl-")
    assert completion.object == "chat.completion"
    assert completion.model == "gpt-test"
    assert completion.choices[0].message.content == "echo: one two three"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (5, 4)
    assert completion.usage.total_tokens == 9
    assert reply.headers[REQUEST_ID_HEADER].startswith("req_")


@pytest.mark.anyio
async def test_official_sdk_client_parses_the_chat_completion(server: FakeModelServer) -> None:
    async with openai.AsyncOpenAI(base_url=server.base_url, api_key="sk-fake") as sdk:
        completion = await sdk.chat.completions.create(
            model="gpt-test", messages=[{"role": "user", "content": "hi"}]
        )
    assert completion.choices[0].message.content == "echo: hi"


@pytest.mark.anyio
async def test_text_completion_answers_one_choice_per_prompt(
    server: FakeModelServer, client: aiohttp.ClientSession
) -> None:
    payload = {"model": "gpt-test", "prompt": ["say this", "and that"]}
    reply = await post(client, server.base_url + "/completions", payload)

    assert reply.status == 200
    completion = Completion.model_validate(reply.body)
    assert completion.object == "text_completion"
    assert [choice.text for choice in completion.choices] == ["echo: say this", "echo: and that"]
    assert [choice.index for choice in completion.choices] == [0, 1]
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == 4


@pytest.mark.anyio
async def test_embeddings_are_deterministic_per_text(
    server: FakeModelServer, client: aiohttp.ClientSession
) -> None:
    payload = {"model": "text-embedding-test", "input": ["alpha", "beta", "alpha"]}
    reply = await post(client, server.base_url + "/embeddings", payload)

    assert reply.status == 200
    response = CreateEmbeddingResponse.model_validate(reply.body)
    vectors = [item.embedding for item in response.data]
    assert [item.index for item in response.data] == [0, 1, 2]
    assert all(len(vector) == 8 for vector in vectors)
    assert vectors[0] == vectors[2] == embedding_vector("alpha")
    assert vectors[0] != vectors[1]
    assert response.usage.prompt_tokens == 3


@pytest.mark.anyio
async def test_embeddings_in_base64_are_little_endian_float32(
    server: FakeModelServer, client: aiohttp.ClientSession
) -> None:
    payload = {"model": "text-embedding-test", "input": "alpha", "encoding_format": "base64"}
    reply = await post(client, server.base_url + "/embeddings", payload)

    encoded = reply.body["data"][0]["embedding"]
    assert list(struct.unpack("<8f", base64.b64decode(encoded))) == embedding_vector("alpha")


@pytest.mark.anyio
async def test_embeddings_accept_token_arrays(
    server: FakeModelServer, client: aiohttp.ClientSession
) -> None:
    payload = {"model": "text-embedding-test", "input": [[1, 2, 3], [4]]}
    reply = await post(client, server.base_url + "/embeddings", payload)

    assert reply.status == 200
    assert len(reply.body["data"]) == 2
    assert reply.body["usage"] == {"prompt_tokens": 4, "total_tokens": 4}


@pytest.mark.anyio
async def test_responses_endpoint_answers_a_completed_response(
    server: FakeModelServer, client: aiohttp.ClientSession
) -> None:
    payload = {
        "model": "gpt-test",
        "input": [{"role": "user", "content": [{"type": "input_text", "text": "ping pong"}]}],
    }
    reply = await post(client, server.base_url + "/responses", payload)

    assert reply.status == 200
    response = Response.model_validate(reply.body)
    assert response.id.startswith("resp_")
    assert response.status == "completed"
    assert response.output_text == "echo: ping pong"
    assert response.usage is not None
    assert (response.usage.input_tokens, response.usage.output_tokens) == (2, 3)


@pytest.mark.anyio
async def test_responses_endpoint_accepts_a_plain_string_input(
    server: FakeModelServer, client: aiohttp.ClientSession
) -> None:
    reply = await post(client, server.base_url + "/responses", {"model": "m", "input": "hey"})
    assert Response.model_validate(reply.body).output_text == "echo: hey"


@pytest.mark.anyio
async def test_moderations_answer_one_unflagged_result_per_input(
    server: FakeModelServer, client: aiohttp.ClientSession
) -> None:
    reply = await post(client, server.base_url + "/moderations", {"input": ["a", "b"]})

    assert reply.status == 200
    moderation = ModerationCreateResponse.model_validate(reply.body)
    assert moderation.id.startswith("modr-")
    assert [result.flagged for result in moderation.results] == [False, False]


@pytest.mark.anyio
async def test_models_lists_the_served_models(client: aiohttp.ClientSession) -> None:
    async with running_model_server(models=["m1", "m2"]) as server:
        reply = await get(client, server.base_url + "/models")
        single = await get(client, server.base_url + "/models/m1")

    assert reply.body["object"] == "list"
    assert [model["id"] for model in reply.body["data"]] == ["m1", "m2"]
    assert single.body["object"] == "model"


# ---------------------------------------------------------------- request errors


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("path", "payload", "param"),
    [
        ("/chat/completions", {"model": "m"}, "messages"),
        ("/chat/completions", {"messages": [{"role": "user", "content": "x"}]}, "model"),
        ("/completions", {"model": "m"}, "prompt"),
        ("/embeddings", {"model": "m"}, "input"),
        ("/responses", {"model": "m"}, "input"),
        ("/moderations", {"model": "m"}, "input"),
    ],
)
async def test_missing_required_field_answers_400(
    server: FakeModelServer,
    client: aiohttp.ClientSession,
    path: str,
    payload: dict[str, Any],
    param: str,
) -> None:
    reply = await post(client, server.base_url + path, payload)

    assert reply.status == 400
    assert reply.body["error"]["type"] == "invalid_request_error"
    assert reply.body["error"]["param"] == param
    assert set(reply.body["error"]) == {"message", "type", "param", "code"}


@pytest.mark.anyio
async def test_malformed_json_answers_400(
    server: FakeModelServer, client: aiohttp.ClientSession
) -> None:
    reply = await post(client, chat_url(server), b"{not json")
    assert reply.status == 400
    assert reply.body["error"]["type"] == "invalid_request_error"


@pytest.mark.anyio
async def test_unknown_model_answers_404_when_models_are_configured(
    client: aiohttp.ClientSession,
) -> None:
    async with running_model_server(models=["known"]) as server:
        unknown = await post(client, chat_url(server), {**CHAT_BODY, "model": "other"})
        known = await post(client, chat_url(server), {**CHAT_BODY, "model": "known"})

    assert unknown.status == 404
    assert unknown.body["error"]["code"] == "model_not_found"
    assert known.status == 200


@pytest.mark.anyio
async def test_every_response_carries_a_request_id(
    server: FakeModelServer, client: aiohttp.ClientSession
) -> None:
    replies = [
        await post(client, chat_url(server)),
        await post(client, chat_url(server), {"model": "m"}),
        await post(client, server.base_url + "/no/such/endpoint", {}),
        await get(client, server.root_url + "/_stats"),
    ]
    request_ids = [reply.headers[REQUEST_ID_HEADER] for reply in replies]
    assert all(request_id.startswith("req_") for request_id in request_ids)
    assert len(set(request_ids)) == len(request_ids)


# ---------------------------------------------------------------- faults


@pytest.mark.anyio
async def test_capacity_answers_429_with_retry_after(
    server: FakeModelServer, client: aiohttp.ClientSession
) -> None:
    server.set_faults(
        FaultConfig(capacity=1, retry_after=2, rules=[FaultRule(fault="hang", custom_id="^hog$")])
    )
    hog = asyncio.create_task(post(client, chat_url(server), custom_id="hog"))
    await server.wait_for_stats(lambda stats: stats["in_flight"] == 1)

    rejected = await post(client, chat_url(server), custom_id="other")
    hog.cancel()
    await server.wait_for_stats(lambda stats: stats["in_flight"] == 0)
    admitted = await post(client, chat_url(server), custom_id="other")

    assert rejected.status == 429
    assert rejected.headers["Retry-After"] == "2"
    assert rejected.body["error"]["type"] == "rate_limit_error"
    assert admitted.status == 200
    assert server.stats()["peak_in_flight"] == 1


def test_past_the_knee_latency_grows_with_the_requests_in_flight() -> None:
    """Up to ``knee`` requests in flight are served at ``latency_ms``; past it each waits in
    proportion, as in a server whose batch is full; without a knee load changes nothing."""
    knee = FaultConfig(latency_ms=50, knee=10)
    assert [loaded_latency_ms(knee, n) for n in (1, 10, 15, 20)] == [50, 50, 75, 100]
    assert loaded_latency_ms(FaultConfig(latency_ms=50), 100) == 50


@pytest.mark.anyio
async def test_the_knee_is_set_at_run_time_through_faults(
    server: FakeModelServer, client: aiohttp.ClientSession
) -> None:
    """``POST /_faults`` takes a knee (the bench moves the server's hidden capacity with it)."""
    config = {"latency_ms": 5, "knee": 16, "capacity": 32}
    reply = await client.post(server.root_url + "/_faults", json=config)
    assert reply.status == 200
    assert server.faults.knee == 16
    assert (await post(client, chat_url(server))).status == 200


@pytest.mark.anyio
async def test_rule_with_times_fails_that_many_requests_per_custom_id(
    server: FakeModelServer, client: aiohttp.ClientSession
) -> None:
    server.set_faults({"rules": [{"custom_id": "^flaky", "fault": "status", "times": 2}]})

    first_id = [
        (await post(client, chat_url(server), custom_id="flaky-1")).status for _ in range(3)
    ]
    second_id = (await post(client, chat_url(server), custom_id="flaky-2")).status
    unmatched = (await post(client, chat_url(server), custom_id="steady")).status

    assert first_id == [500, 500, 200]
    assert second_id == 500
    assert unmatched == 200


@pytest.mark.anyio
async def test_status_rule_sends_retry_headers_and_the_error_envelope(
    server: FakeModelServer, client: aiohttp.ClientSession
) -> None:
    rule = {"fault": "status", "status": 429, "retry_after": 3, "retry_after_ms": 2500}
    server.set_faults({"rules": [rule]})

    reply = await post(client, chat_url(server), custom_id="any")

    assert reply.status == 429
    assert reply.headers["Retry-After"] == "3"
    assert reply.headers["retry-after-ms"] == "2500"
    assert reply.body["error"]["type"] == "rate_limit_error"


@pytest.mark.anyio
async def test_status_rule_can_send_a_custom_body(
    server: FakeModelServer, client: aiohttp.ClientSession
) -> None:
    server.set_faults(
        {
            "rules": [
                {"custom_id": "json", "fault": "status", "status": 400, "body": {"oops": 1}},
                {"custom_id": "text", "fault": "status", "status": 502, "body": "Bad Gateway"},
            ]
        }
    )
    json_reply = await post(client, chat_url(server), custom_id="json")
    text_reply = await post(client, chat_url(server), custom_id="text")

    assert (json_reply.status, json_reply.body) == (400, {"oops": 1})
    assert (text_reply.status, text_reply.body) == (502, "Bad Gateway")


@pytest.mark.anyio
async def test_rule_can_match_on_model(
    server: FakeModelServer, client: aiohttp.ClientSession
) -> None:
    server.set_faults({"rules": [{"model": "broken", "fault": "status", "status": 503}]})

    broken = await post(client, chat_url(server), {**CHAT_BODY, "model": "broken"})
    fine = await post(client, chat_url(server), {**CHAT_BODY, "model": "fine"})

    assert (broken.status, fine.status) == (503, 200)


@pytest.mark.anyio
async def test_reset_rule_drops_the_connection_without_an_answer(
    server: FakeModelServer, client: aiohttp.ClientSession
) -> None:
    server.set_faults({"rules": [{"custom_id": "^doomed$", "fault": "reset"}]})

    with pytest.raises((aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)):
        await post(client, chat_url(server), custom_id="doomed")
    survivor = await post(client, chat_url(server), custom_id="survivor")

    assert survivor.status == 200
    assert server.stats()["faults_injected"] == {"reset": 1}
    assert server.stats()["responses_by_status"] == {"200": 1}


@pytest.mark.anyio
async def test_hang_rule_never_answers_and_ends_with_the_client(
    server: FakeModelServer, client: aiohttp.ClientSession
) -> None:
    server.set_faults({"rules": [{"custom_id": "^stuck$", "fault": "hang"}]})

    with pytest.raises(TimeoutError):
        await post(client, chat_url(server), custom_id="stuck", timeout_seconds=0.3)

    stats = await server.wait_for_stats(lambda stats: stats["in_flight"] == 0)
    assert stats["received"] == {"stuck": 1}
    assert stats["responses_by_status"] == {}


@pytest.mark.anyio
async def test_latency_delays_every_answer(client: aiohttp.ClientSession) -> None:
    async with running_model_server({"latency_ms": 50}) as server:
        started = time.monotonic()
        reply = await post(client, chat_url(server))
        elapsed = time.monotonic() - started

    assert reply.status == 200
    assert elapsed >= 0.05


@pytest.mark.anyio
async def test_latency_rule_adds_delay_for_matching_requests(
    server: FakeModelServer, client: aiohttp.ClientSession
) -> None:
    server.set_faults({"rules": [{"custom_id": "^slow$", "fault": "latency", "latency_ms": 80}]})

    started = time.monotonic()
    reply = await post(client, chat_url(server), custom_id="slow")

    assert reply.status == 200
    assert time.monotonic() - started >= 0.08


@pytest.mark.anyio
async def test_down_mode_answers_503_to_everything(
    server: FakeModelServer, client: aiohttp.ClientSession
) -> None:
    server.set_faults({"down": True})

    chat = await post(client, chat_url(server), custom_id="a")
    embeddings = await post(client, server.base_url + "/embeddings", {"model": "m", "input": "x"})
    models = await get(client, server.base_url + "/models")

    assert (chat.status, embeddings.status, models.status) == (503, 503, 503)
    assert chat.body["error"]["type"] == "server_error"
    assert server.stats()["responses_by_status"] == {"503": 2}


# ---------------------------------------------------------------- observation and control


@pytest.mark.anyio
async def test_stats_count_requests_per_custom_id_and_batch(
    server: FakeModelServer, client: aiohttp.ClientSession
) -> None:
    for custom_id in ["a", "a", "b"]:
        await post(client, chat_url(server), custom_id=custom_id, batch_id="batch_1")
    await post(client, chat_url(server), {"model": "m"}, custom_id="c")

    stats = (await get(client, server.root_url + "/_stats")).body

    assert stats == server.stats()
    assert stats["received"] == {"a": 2, "b": 1, "c": 1}
    assert stats["received_by_batch"] == {"batch_1": 3}
    assert stats["total"] == 4
    assert stats["responses_by_status"] == {"200": 3, "400": 1}
    assert (stats["in_flight"], stats["peak_in_flight"]) == (0, 1)


@pytest.mark.anyio
async def test_peak_in_flight_tracks_concurrent_requests(
    server: FakeModelServer, client: aiohttp.ClientSession
) -> None:
    server.set_faults({"rules": [{"custom_id": "^parked", "fault": "hang"}]})
    parked = [
        asyncio.create_task(post(client, chat_url(server), custom_id=f"parked-{index}"))
        for index in range(3)
    ]
    await server.wait_for_stats(lambda stats: stats["in_flight"] == 3)
    for task in parked:
        task.cancel()

    stats = await server.wait_for_stats(lambda stats: stats["in_flight"] == 0)
    assert stats["peak_in_flight"] == 3


@pytest.mark.anyio
async def test_reset_endpoint_clears_counters_and_faults(
    server: FakeModelServer, client: aiohttp.ClientSession
) -> None:
    server.set_faults({"down": True})
    await post(client, chat_url(server), custom_id="a")

    reply = await post(client, server.root_url + "/_reset", {})
    after = await post(client, chat_url(server), custom_id="b")

    assert reply.status == 200
    assert after.status == 200
    assert server.stats()["received"] == {"b": 1}
    assert server.stats()["total"] == 1


@pytest.mark.anyio
async def test_faults_endpoint_replaces_the_config(
    server: FakeModelServer, client: aiohttp.ClientSession
) -> None:
    config = {"latency_ms": 0, "rules": [{"custom_id": "x", "fault": "status", "status": 418}]}

    reply = await post(client, server.root_url + "/_faults", config)
    current = await get(client, server.root_url + "/_faults")
    teapot = await post(client, chat_url(server), custom_id="x")

    assert reply.status == 200
    assert current.body["rules"][0]["status"] == 418
    assert teapot.status == 418
    assert server.faults.rules[0].fault == "status"


@pytest.mark.anyio
@pytest.mark.parametrize(
    "config",
    [
        {"rules": [{"fault": "explode"}]},
        {"rules": [{"fault": "hang", "custom_id": "("}]},
        {"no_such_field": 1},
        ["not", "an", "object"],
    ],
)
async def test_faults_endpoint_rejects_an_invalid_config(
    server: FakeModelServer, client: aiohttp.ClientSession, config: object
) -> None:
    reply = await post(client, server.root_url + "/_faults", config)

    assert reply.status == 400
    assert reply.body["error"]["type"] == "invalid_request_error"
    assert server.faults == FaultConfig()


def test_fault_config_round_trips_through_dicts() -> None:
    config = FaultConfig(
        latency_ms=5,
        capacity=3,
        rules=[FaultRule(fault="status", custom_id="^a", status=502, times=1)],
    )
    assert FaultConfig.from_dict(config.to_dict()) == config


# ---------------------------------------------------------------- separate process


@pytest.mark.anyio
async def test_process_launcher_serves_and_takes_runtime_faults(tmp_path: Path) -> None:
    process, base_url = await anyio.to_thread.run_sync(
        lambda: start_model_server_process(tmp_path, capacity=4, models=["a", "b"])
    )
    root_url = base_url.removesuffix("/v1")
    try:
        async with httpx.AsyncClient() as http:
            models = (await http.get(base_url + "/models")).json()
            served = await http.post(
                base_url + "/chat/completions", json={**CHAT_BODY, "model": "a"}
            )
            await http.post(root_url + "/_faults", json={"down": True})
            refused = await http.post(base_url + "/chat/completions", json=CHAT_BODY)
            stats = (await http.get(root_url + "/_stats")).json()
    finally:
        exit_code = await anyio.to_thread.run_sync(stop_model_server_process, process)

    assert [model["id"] for model in models["data"]] == ["a", "b"]
    assert served.status_code == 200
    assert refused.status_code == 503
    assert stats["responses_by_status"] == {"200": 1, "503": 1}
    assert exit_code == 0
