"""GET /v1/models lists what batchd serves, in OpenAI's shape, through the official SDK."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.e2e.conftest import MODELS, ServerFactory, wait_for_batch
from tests.e2e.lines import request_line, submit
from tests.fakes.model_server import start_model_server_process, stop_model_server_process


@pytest.fixture
def listing_server(tmp_path: Path) -> Iterator[str]:
    """A model server that lists its own models (and serves only those)."""
    process, base_url = start_model_server_process(tmp_path, models=["llama-3", "org/mistral"])
    try:
        yield base_url
    finally:
        stop_model_server_process(process)


def test_named_models_are_listed_and_retrieved(client: openai.OpenAI) -> None:
    """The models named in --upstream are listed, and each can be retrieved by id."""
    listed = client.models.list()

    assert sorted(model.id for model in listed) == sorted(MODELS)
    model = client.models.retrieve("gpt-test")
    assert (model.id, model.object, model.owned_by) == ("gpt-test", "model", "upstream-0")


def test_an_unknown_model_is_model_not_found(client: openai.OpenAI) -> None:
    """Retrieving a model nothing serves is a 404 ``model_not_found``."""
    with pytest.raises(openai.NotFoundError) as raised:
        client.models.retrieve("no-such-model")

    assert raised.value.code == "model_not_found"


def test_a_catch_all_upstream_lists_what_its_server_lists(
    start_server: ServerFactory, listing_server: str
) -> None:
    """An upstream serving any model lists the models its own server lists, slashes and all."""
    client = start_server("--upstream", listing_server, upstream=False).client()

    assert sorted(model.id for model in client.models.list()) == ["llama-3", "org/mistral"]
    assert client.models.retrieve("org/mistral").owned_by == "upstream-0"


def test_a_batch_for_an_unserved_model_names_the_models_served(
    client: openai.OpenAI, tmp_path: Path
) -> None:
    """The validation error for an unserved model says which models are served."""
    batch = submit(client, tmp_path, [request_line(1, model="gpt-5")])

    failed = wait_for_batch(client, batch.id)

    assert failed.status == "failed"
    message = failed.errors.data[0].message
    assert message == ("The model 'gpt-5' does not exist. Models served: embed-test, gpt-test.")
