"""The store remembers what an idempotency key made, for both engines: once per key while it is
fresh, and a key past its day can make something new."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from batchd import ids
from batchd.models import Remembered
from batchd.store import SqlStore
from tests.contract.test_store import DAY, NOW, make_batch

pytestmark = pytest.mark.anyio


def made(batch_id: str, key: str = "k", fingerprint: str = "f", at: int = NOW) -> Remembered:
    return Remembered("batch", key, fingerprint, batch_id, at)


async def test_a_key_makes_one_batch(store: SqlStore) -> None:
    """A batch inserted with a key is found by it; a second insert with the key is refused and
    inserts nothing."""
    first, second = ids.batch_id(), ids.batch_id()
    batch = await make_batch(store, id=first)  # without a key
    assert await store.insert_batch(replace(batch, id=second), made(second), since=NOW - DAY)
    third = ids.batch_id()

    inserted = await store.insert_batch(replace(batch, id=third), made(third), since=NOW - DAY)

    assert not inserted
    assert await store.get_batch(third) is None
    found = await store.idempotency.find("default", "batch", "k", NOW - DAY)
    assert found == made(second)


async def test_keys_are_per_project_and_operation(store: SqlStore) -> None:
    """The same key in another project is another key."""
    batch = await make_batch(store)
    other = replace(batch, id=ids.batch_id(), project="other")

    assert await store.insert_batch(other, made(other.id), since=NOW - DAY)
    assert await store.idempotency.find("default", "batch", "k", NOW - DAY) is None


async def test_a_key_past_its_day_makes_a_new_batch(store: SqlStore) -> None:
    """A record older than ``since`` is replaced; ``find`` no longer returns it."""
    batch = await make_batch(store)
    old, new = ids.batch_id(), ids.batch_id()
    await store.insert_batch(replace(batch, id=old), made(old, at=NOW))
    later = NOW + DAY + 1

    assert await store.idempotency.find("default", "batch", "k", later - DAY) is None
    assert await store.insert_batch(replace(batch, id=new), made(new, at=later), since=later - DAY)
    assert await store.idempotency.find("default", "batch", "k", later - DAY) == made(new, at=later)


async def test_racing_inserts_with_one_key_make_one_batch(store: SqlStore) -> None:
    """Of concurrent inserts with the same key, exactly one succeeds."""
    template = await make_batch(store)
    batch_ids = [ids.batch_id() for _ in range(6)]

    results = await asyncio.gather(
        *(
            store.insert_batch(
                replace(template, id=batch_id),
                made(batch_id),
                since=NOW - DAY,
            )
            for batch_id in batch_ids
        ),
        return_exceptions=True,
    )

    assert results.count(True) == 1, results
    assert all(result is False for result in results if result is not True)


async def test_old_keys_are_forgotten(store: SqlStore) -> None:
    """``forget_before`` deletes records older than its time."""
    batch = await make_batch(store)
    await store.insert_batch(replace(batch, id=ids.batch_id()), made("x", at=NOW))

    await store.idempotency.forget_before(NOW + 1)

    assert await store.idempotency.find("default", "batch", "k", 0) is None
