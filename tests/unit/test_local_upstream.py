"""The local upstream: OpenAI-shaped embeddings responses, micro-batched forward passes, clear
errors. A stand-in model keeps these tests free of torch; tests/local runs the real one."""

from __future__ import annotations

import asyncio
import base64
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from batchd.settings import Settings
from batchd.upstreams import build_upstreams
from batchd.upstreams.local import LocalUpstream
from batchd.upstreams.sentence import Embeddings

pytestmark = pytest.mark.anyio

DIMENSIONS = 4


class StandInModel:
    """Embeds text i as a vector whose first value is its length; counts words as tokens.

    ``gate`` holds every forward pass until it is set, so a test can let requests pile up."""

    dimensions = DIMENSIONS

    def __init__(self) -> None:
        self.passes: list[list[str]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.fail_next = False

    def embed(self, texts: list[str]) -> Embeddings:
        self.gate.wait(timeout=10)
        self.passes.append(texts)
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("out of memory")
        vectors = np.zeros((len(texts), DIMENSIONS), dtype=np.float32)
        vectors[:, 0] = [len(t) for t in texts]
        vectors[:, 1] = 0.25
        return Embeddings(vectors, [len(t.split()) for t in texts])


@pytest.fixture
def model() -> StandInModel:
    return StandInModel()


@pytest.fixture
async def upstream(model: StandInModel) -> AsyncIterator[LocalUpstream]:
    local = LocalUpstream(
        name="local",
        models=frozenset({"mini"}),
        max_concurrency=64,
        batch_size=8,
        load_embedder=lambda: model,
    )
    await local.open()
    yield local
    model.gate.set()
    await local.close()


async def embed(upstream: LocalUpstream, **body: Any) -> tuple[int, dict[str, Any]]:
    response = await upstream.send("/v1/embeddings", orjson.dumps({"model": "mini", **body}), {})
    return response.status, orjson.loads(response.body)


async def test_a_string_input_gets_one_openai_shaped_embedding(upstream: LocalUpstream) -> None:
    status, body = await embed(upstream, input="three word sentence")

    assert status == 200
    assert body["object"] == "list"
    assert body["model"] == "mini"
    assert body["usage"] == {"prompt_tokens": 3, "total_tokens": 3}
    embedding = [19.0, 0.25, 0.0, 0.0]
    assert body["data"] == [{"object": "embedding", "index": 0, "embedding": embedding}]


async def test_a_list_input_gets_one_embedding_per_item_in_order(upstream: LocalUpstream) -> None:
    status, body = await embed(upstream, input=["a", "bb bb", "ccc"])

    assert status == 200
    assert [d["index"] for d in body["data"]] == [0, 1, 2]
    assert [d["embedding"][0] for d in body["data"]] == [1.0, 5.0, 3.0]
    assert body["usage"]["prompt_tokens"] == 4


async def test_base64_is_the_little_endian_float32_bytes(upstream: LocalUpstream) -> None:
    _, as_floats = await embed(upstream, input="some text")
    _, as_base64 = await embed(upstream, input="some text", encoding_format="base64")

    decoded = np.frombuffer(base64.b64decode(as_base64["data"][0]["embedding"]), dtype="<f4")
    assert decoded.tolist() == as_floats["data"][0]["embedding"]


async def test_waiting_requests_share_forward_passes(
    upstream: LocalUpstream, model: StandInModel
) -> None:
    model.gate.clear()  # the first pass blocks, so the other requests queue behind it
    sends = [asyncio.create_task(embed(upstream, input=f"line {i}")) for i in range(17)]
    await asyncio.sleep(0.1)
    model.gate.set()
    answers = await asyncio.gather(*sends)

    firsts = [body["data"][0]["embedding"][0] for _, body in answers]
    assert firsts == [len(f"line {i}") for i in range(17)]
    assert all(len(texts) <= 8 for texts in model.passes)
    assert len(model.passes) == 1 + 2  # the first alone, then two passes of 8
    assert upstream.forward_passes == 3


async def test_a_failed_pass_fails_its_requests_with_a_500_and_the_next_pass_works(
    upstream: LocalUpstream, model: StandInModel
) -> None:
    model.fail_next = True
    status, body = await embed(upstream, input="x")
    assert status == 500
    assert body["error"]["type"] == "server_error"
    assert "out of memory" in body["error"]["message"]

    status, _ = await embed(upstream, input="x")
    assert status == 200


async def test_a_cancelled_request_does_not_stop_the_others(
    upstream: LocalUpstream, model: StandInModel
) -> None:
    model.gate.clear()
    first = asyncio.create_task(embed(upstream, input="first"))
    await asyncio.sleep(0.05)
    abandoned = asyncio.create_task(embed(upstream, input="abandoned"))
    kept = asyncio.create_task(embed(upstream, input="kept"))
    await asyncio.sleep(0.05)
    abandoned.cancel()
    model.gate.set()

    assert (await first)[0] == 200
    assert (await kept)[0] == 200


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": ""}, "input"),
        ({"input": []}, "input"),
        ({"input": ["ok", ""]}, "input"),
        ({"input": [1, 2, 3]}, "input"),
        ({"input": None}, "input"),
        ({"input": ["x"] * 2049}, "input"),
        ({"input": "x", "encoding_format": "int8"}, "encoding_format"),
        ({"input": "x", "dimensions": 2}, "dimensions"),
        ({"input": "x", "model": ""}, "model"),
    ],
)
async def test_bad_requests_get_a_400_naming_the_parameter(
    upstream: LocalUpstream, body: dict[str, Any], param: str
) -> None:
    status, answer = await embed(upstream, **body)

    assert status == 400
    assert answer["error"]["type"] == "invalid_request_error"
    assert answer["error"]["param"] == param
    assert answer["error"]["message"]


async def test_the_native_dimensions_may_be_asked_for(upstream: LocalUpstream) -> None:
    status, body = await embed(upstream, input="x", dimensions=DIMENSIONS)

    assert status == 200
    assert len(body["data"][0]["embedding"]) == DIMENSIONS


async def test_a_body_that_is_not_json_gets_a_400(upstream: LocalUpstream) -> None:
    response = await upstream.send("/v1/embeddings", b"{not json", {})

    assert response.status == 400


async def test_other_endpoints_get_a_404(upstream: LocalUpstream) -> None:
    response = await upstream.send("/v1/chat/completions", b"{}", {})

    assert response.status == 404
    assert "/v1/embeddings" in orjson.loads(response.body)["error"]["message"]


@pytest.mark.parametrize(
    ("flag", "models"),
    [
        ("local", {"all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"}),
        ("text-embedding-3-small@local", {"text-embedding-3-small"}),
        ("local:{models}/bge-small-en", {"bge-small-en"}),
    ],
)
def test_local_upstreams_answer_to_the_packaged_model_the_folder_or_the_names_given(
    flag: str, models: set[str], tmp_path: Path
) -> None:
    (tmp_path / "bge-small-en").mkdir()
    (tmp_path / "bge-small-en" / "modules.json").write_text("[]")
    settings = Settings(upstreams=[flag.format(models=tmp_path)], local_batch_size=16)

    (upstream,) = build_upstreams(settings).upstreams

    assert isinstance(upstream, LocalUpstream)
    assert upstream.models == models
    assert upstream.batch_size == 16
    assert upstream.max_concurrency == 32  # two micro-batches: one running, one gathering


def test_a_local_upstream_keeps_an_explicit_concurrency() -> None:
    settings = Settings(upstreams=[{"url": "local", "max_concurrency": 5}])

    (upstream,) = build_upstreams(settings).upstreams

    assert upstream.max_concurrency == 5
