"""What the S3 blob store does in its bucket, beyond the contract: uploads a dead process left
unfinished are aborted once old enough."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from batchd.blobstore import LocalBlobStore, open_blobstore
from tests.conftest import REQUIRE_S3
from tests.contract.test_blobstore import listed

if not REQUIRE_S3:
    pytest.importorskip("obstore", reason="batchd[s3] is not installed")
from batchd.blobstore import s3 as s3_module

pytestmark = [pytest.mark.anyio, pytest.mark.s3]


async def test_discard_unfinished_aborts_only_uploads_begun_a_day_before(
    s3_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An upload past one part is a multipart upload until committed; left unfinished (its
    process died), it is aborted once it began ``LONGEST_UPLOAD`` before ``before`` (S3 does not
    say when its last part came: a younger one may still be going). Committed blobs, another
    prefix's uploads and uploads of keys batchd does not write stay."""
    monkeypatch.setattr(s3_module, "PART_SIZE", 5 << 20)
    blobs = open_blobstore(s3_url)
    other = open_blobstore(s3_url + "-other")  # another prefix's uploads are not ours
    for store, key in ((blobs, "files/dead"), (other, "files/dead"), (blobs, "elsewhere/dead")):
        dead = store.writer(key)
        await dead.write(bytes(11 << 20))  # two parts go up; the process dies
    kept = blobs.writer("files/kept")
    await kept.write(b"abc")
    await kept.commit()
    a_day_on = time.time() + s3_module.LONGEST_UPLOAD + 60

    assert await blobs.discard_unfinished(before=time.time() + 60) == 0  # may still be going
    assert await blobs.discard_unfinished(before=a_day_on) == 1
    assert await blobs.discard_unfinished(before=a_day_on) == 0
    assert await listed(blobs) == {"files/kept": 3}
    assert await other.discard_unfinished(before=a_day_on) == 1


def test_the_url_chooses_the_store(tmp_path: Path) -> None:
    """``s3://`` opens a bucket (nothing is asked of it until used), ``file://`` a folder."""
    assert isinstance(open_blobstore("s3://bucket/prefix"), s3_module.S3BlobStore)
    assert isinstance(open_blobstore(f"file://{tmp_path}"), LocalBlobStore)
    assert open_blobstore(f"file://{tmp_path}").root == tmp_path


async def test_without_keys_in_the_environment_unfinished_uploads_are_left(
    s3_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Credentials from elsewhere cannot sign the listing: nothing is aborted, nothing fails."""
    blobs = open_blobstore(s3_url)
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    assert await blobs.discard_unfinished(before=time.time() + 60) == 0
