"""API keys: made and revoked by ``batchd keys``, kept in the store as hashes, and which project a
caller's bearer key names.

A key is ``sk-batchd-`` and 43 characters of ``secrets.token_urlsafe`` (256 random bits). The
store keeps its SHA-256 and its first characters (``prefix``), never the key. A fast hash is the
right one here: a slow one (bcrypt, scrypt) protects guessable passwords from a stolen table, but
nobody can guess their way to one of 2^256 keys, and the hash is computed on every request.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from batchd.clock import Clock, whole_seconds
from batchd.errors import BatchdError
from batchd.ids import key_id
from batchd.models import DEFAULT_PROJECT, ManagedKey
from batchd.store.keys import KeyStore
from batchd.text import storable

KEY_PREFIX = "sk-batchd-"
SHOWN_CHARS = len(KEY_PREFIX) + 6
"""How much of a key ``keys ls`` shows: its fixed start and 36 of its random bits."""
MAX_PROJECT, MAX_NAME = 200, 200
RECHECK_SECONDS = 1.0
"""How long an API process trusts its count of stored keys: a server started without keys
requires them within this long of the first ``batchd keys create``."""


def generate() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def shown(key: str) -> str:
    return key[:SHOWN_CHARS]


class KeyNotFound(BatchdError):
    """No key has that id or prefix."""


@dataclass(frozen=True)
class NewKey:
    record: ManagedKey
    secret: str
    """The key itself: shown once, then only its hash is kept."""


class Keys:
    """The use cases of ``batchd keys``: create, list, revoke."""

    def __init__(self, store: KeyStore, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    async def create(self, project: str, name: str | None = None) -> NewKey:
        if not project.strip() or not storable(project, MAX_PROJECT):
            raise ValueError(f"a project is 1 to {MAX_PROJECT} characters of text")
        if name is not None and not storable(name, MAX_NAME):
            raise ValueError(f"a key's name is at most {MAX_NAME} characters of text")
        secret = generate()
        record = ManagedKey(key_id(), project, name, shown(secret), whole_seconds(self._clock))
        await self._store.insert(record, digest(secret))
        return NewKey(record, secret)

    async def list(self, project: str | None = None) -> list[ManagedKey]:
        return await self._store.list(project)

    async def revoke(self, reference: str) -> ManagedKey:
        """Revoke the key with this id, this shown prefix (when only one key has it), or the key
        itself."""
        key = await self.find(reference)
        revoked = await self._store.revoke(key.id, whole_seconds(self._clock))
        assert revoked is not None  # keys are revoked, never deleted
        return revoked

    async def find(self, reference: str) -> ManagedKey:
        by_hash = await self._store.find(digest(reference))
        if by_hash is not None:
            return by_hash
        every = await self._store.list()
        matches = [k for k in every if k.id == reference] or [
            k for k in every if len(reference) > len(KEY_PREFIX) and k.prefix.startswith(reference)
        ]
        if len(matches) > 1:
            raise KeyNotFound(
                f"{len(matches)} keys start with {reference!r}: give the key's id instead."
            )
        if not matches:
            raise KeyNotFound(f"No key has the id or prefix {reference!r}.")
        return matches[0]


class Authenticator:
    """Which project a bearer key names: keys from the settings first, then keys in the store.

    With no key anywhere (none in the settings, none unrevoked in the store) every caller is in
    the default project, if ``open_without_keys`` allows it (a loopback address, or
    ``insecure_no_auth``). Stored keys are looked up on every request, so a revoked key is refused
    at once by every API process; only the count of stored keys is kept for ``RECHECK_SECONDS``.
    """

    def __init__(
        self,
        static: Mapping[str, str],
        store: KeyStore,
        *,
        open_without_keys: bool,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._static = dict(static)
        self._store = store
        self._open_without_keys = open_without_keys and not static
        self._monotonic = monotonic
        self._stored: tuple[float, int] | None = None  # (when counted, how many)

    async def project(self, key: str | None) -> str | None:
        """The caller's project, or None to refuse it."""
        if await self.is_open():
            return DEFAULT_PROJECT
        if not key:
            return None
        found = self._static.get(key)
        if found is not None or not key.startswith(KEY_PREFIX):
            return found  # every stored key starts so: anything else costs no store query
        return await self._store.project_of(digest(key))

    async def is_open(self) -> bool:
        """Whether every caller is let in, to the default project: there are no keys."""
        return self._open_without_keys and not await self.stored_keys()

    async def stored_keys(self) -> int:
        """How many unrevoked keys the store holds, counted at most ``RECHECK_SECONDS`` ago."""
        now = self._monotonic()
        if self._stored is None or now - self._stored[0] >= RECHECK_SECONDS:
            self._stored = (now, await self._store.count_active())
        return self._stored[1]
