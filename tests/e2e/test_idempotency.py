"""Idempotent create through the official SDK: the `Idempotency-Key` header, or llama-stack's
`idempotency_key` body field, returns the batch the key made; other parameters are a 409."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

from tests.e2e.conftest import ServerFactory


def create(client: openai.OpenAI, file_id: str, **extra: object) -> object:
    return client.batches.create(
        input_file_id=file_id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        **extra,  # type: ignore[arg-type]
    )


def test_same_key_same_parameters_is_the_same_batch(client: openai.OpenAI) -> None:
    """llama-stack's test: the same key and parameters (metadata in another order) a second later
    answer the batch the first request made."""
    first = client.batches.create(
        input_file_id="bogus-id",
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"test_type": "idempotency_success", "purpose": "integration_test"},
        extra_body={"idempotency_key": "test-idempotency-token-1"},
    )
    time.sleep(1)
    second = client.batches.create(
        input_file_id="bogus-id",
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"purpose": "integration_test", "test_type": "idempotency_success"},
        extra_body={"idempotency_key": "test-idempotency-token-1"},
    )

    assert second.id == first.id
    assert second.created_at == first.created_at
    assert second.metadata == first.metadata
    assert [b.id for b in client.batches.list()] == [first.id]


def test_same_key_other_parameters_is_a_conflict(client: openai.OpenAI) -> None:
    """llama-stack's test: the same key with another file and metadata is a 409, and the first
    batch stays as it was."""
    first = client.batches.create(
        input_file_id="bogus-id-1",
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"test_type": "conflict_test_1"},
        extra_body={"idempotency_key": "conflict-token"},
    )

    with pytest.raises(openai.ConflictError) as raised:
        client.batches.create(
            input_file_id="bogus-id-2",
            endpoint="/v1/chat/completions",
            completion_window="24h",
            metadata={"test_type": "conflict_test_2"},
            extra_body={"idempotency_key": "conflict-token"},
        )

    assert raised.value.status_code == 409
    assert raised.value.code == "idempotency_key_reused"
    assert "conflict" in str(raised.value).lower()
    assert client.batches.retrieve(first.id).input_file_id == "bogus-id-1"


def test_the_header_works_and_keys_are_per_project(start_server: ServerFactory) -> None:
    """``Idempotency-Key`` as a header; another project's identical key makes its own batch."""
    server = start_server("--api-key", "a:key-a", "--api-key", "b:key-b")
    a, b = server.client(api_key="key-a"), server.client(api_key="key-b")
    header = {"extra_headers": {"Idempotency-Key": "retry-1"}}

    first, again = create(a, "file-x", **header), create(a, "file-x", **header)
    other = create(b, "file-x", **header)

    assert first.id == again.id  # type: ignore[attr-defined]
    assert other.id != first.id  # type: ignore[attr-defined]


def test_concurrent_retries_make_one_batch(client: openai.OpenAI) -> None:
    """Eight clients sending the same create with one key at once get one batch between them."""
    with ThreadPoolExecutor(8) as pool:
        made = list(
            pool.map(
                lambda _: create(client, "file-y", extra_headers={"Idempotency-Key": "k"}).id,  # type: ignore[attr-defined]
                range(8),
            )
        )

    assert len(set(made)) == 1
    assert len(client.batches.list().data) == 1


def test_a_bad_key_is_a_400(client: openai.OpenAI) -> None:
    """A key that is not text, or is too long, is refused before anything is made."""
    with pytest.raises(openai.BadRequestError) as raised:
        create(client, "file-z", extra_body={"idempotency_key": "k" * 256})

    assert raised.value.code == "invalid_value"
    assert client.batches.list().data == []
