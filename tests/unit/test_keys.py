"""API keys: made, found, revoked, and which project a bearer key names."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from batchd.keys import (
    KEY_PREFIX,
    RECHECK_SECONDS,
    Authenticator,
    KeyNotFound,
    Keys,
    digest,
    generate,
    shown,
)
from batchd.store import SqlStore, open_store

pytestmark = pytest.mark.anyio

NOW = 1_700_000_000


class FixedClock:
    def now(self) -> float:
        return NOW


class Ticks:
    """A monotonic clock moved by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqlStore]:
    opened = await open_store(f"sqlite:///{tmp_path / 'batchd.db'}")
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
def keys(store: SqlStore) -> Keys:
    return Keys(store.keys, FixedClock())


def test_a_key_is_long_random_and_url_safe() -> None:
    made = {generate() for _ in range(100)}
    assert len(made) == 100
    for key in made:
        assert key.startswith(KEY_PREFIX) and len(key) >= len(KEY_PREFIX) + 43
        assert all(c.isalnum() or c in "-_" for c in key)


def test_only_the_sha256_and_the_first_characters_are_kept() -> None:
    key = generate()
    assert digest(key) == hashlib.sha256(key.encode()).hexdigest()
    assert shown(key) == key[: len(KEY_PREFIX) + 6]


async def test_a_made_key_is_stored_as_its_hash(keys: Keys, store: SqlStore) -> None:
    made = await keys.create("team-a", "ci")
    assert made.record.project == "team-a" and made.record.name == "ci"
    assert made.record.prefix == shown(made.secret)
    assert made.record.created_at == NOW
    async with store.db.reader() as conn:
        rows = await conn.fetch("SELECT * FROM api_keys")
    assert not any(made.secret in str(value) for row in rows for value in tuple(row))
    assert rows[0]["hash"] == digest(made.secret)
    assert await store.keys.project_of(digest(made.secret)) == "team-a"


@pytest.mark.parametrize(("project", "name"), [(" ", None), ("a\x00b", None), ("a", "x" * 201)])
async def test_a_project_or_name_the_store_cannot_hold_is_refused(
    keys: Keys, store: SqlStore, project: str, name: str | None
) -> None:
    with pytest.raises(ValueError, match="characters of text"):
        await keys.create(project, name)
    assert await store.keys.list() == []


@pytest.mark.parametrize("by", ["id", "prefix", "key"])
async def test_a_key_is_revoked_by_id_prefix_or_itself(
    keys: Keys, store: SqlStore, by: str
) -> None:
    made = await keys.create("team-a")
    await keys.create("team-a")
    reference = {"id": made.record.id, "prefix": made.record.prefix, "key": made.secret}[by]

    revoked = await keys.revoke(reference)

    assert revoked.id == made.record.id and revoked.revoked_at == NOW
    assert await store.keys.project_of(digest(made.secret)) is None
    assert await store.keys.count_active() == 1


async def test_an_ambiguous_or_unknown_reference_revokes_nothing(
    keys: Keys, store: SqlStore
) -> None:
    await keys.create("team-a")
    await keys.create("team-a")
    for reference in (KEY_PREFIX, KEY_PREFIX[:-1], "key_nothing", ""):
        with pytest.raises(KeyNotFound):
            await keys.revoke(reference)
    assert await store.keys.count_active() == 2


# -- Authenticator ---------------------------------------------------------------------------


async def test_without_keys_every_caller_is_in_the_default_project(store: SqlStore) -> None:
    auth = Authenticator({}, store.keys, open_without_keys=True)
    assert await auth.project(None) == "default"
    assert await auth.project("anything") == "default"


async def test_without_leave_to_serve_openly_nobody_gets_in_without_a_key(
    store: SqlStore,
) -> None:
    """Off loopback, with every stored key revoked, the API stays closed."""
    auth = Authenticator({}, store.keys, open_without_keys=False)
    assert await auth.project(None) is None
    assert await auth.project("anything") is None


async def test_settings_keys_and_stored_keys_both_name_projects(
    keys: Keys, store: SqlStore
) -> None:
    made = await keys.create("team-b")
    auth = Authenticator({"sk-a": "team-a"}, store.keys, open_without_keys=True)
    assert await auth.project("sk-a") == "team-a"
    assert await auth.project(made.secret) == "team-b"
    assert await auth.project("sk-wrong") is None
    assert await auth.project(None) is None


async def test_a_revoked_key_is_refused_at_once(keys: Keys, store: SqlStore) -> None:
    made = await keys.create("team-b")
    auth = Authenticator({}, store.keys, open_without_keys=True)
    assert await auth.project(made.secret) == "team-b"
    await keys.revoke(made.record.id)
    await keys.create("team-b")  # another key keeps the API closed
    assert await auth.project(made.secret) is None


async def test_keys_made_while_open_are_required_after_the_recheck(
    keys: Keys, store: SqlStore
) -> None:
    """A server started without keys requires them within RECHECK_SECONDS of the first one."""
    ticks = Ticks()
    auth = Authenticator({}, store.keys, open_without_keys=True, monotonic=ticks)
    assert await auth.project("anything") == "default"
    made = await keys.create("team-a")

    ticks.now = RECHECK_SECONDS / 2
    assert await auth.project("anything") == "default"  # the count is still trusted
    ticks.now = RECHECK_SECONDS

    assert await auth.project("anything") is None
    assert await auth.project(made.secret) == "team-a"
