"""Where file bytes live, chosen by URL: ``file://PATH`` (a local folder) or
``s3://BUCKET/PREFIX`` (an S3-compatible bucket; needs ``batchd[s3]``)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from batchd.blobstore.base import BlobInfo, BlobStore, BlobWriter
from batchd.blobstore.local import LocalBlobStore
from batchd.errors import ConfigurationError

__all__ = ["BlobInfo", "BlobStore", "BlobWriter", "LocalBlobStore", "open_blobstore"]


def open_blobstore(url: str | Path) -> BlobStore:
    """The blob store at ``url``; a bare path is a local folder."""
    if isinstance(url, Path):
        return LocalBlobStore(url)
    parts = urlsplit(url)
    if parts.scheme == "file":
        return LocalBlobStore(Path(parts.netloc + parts.path))
    if parts.scheme == "s3" and parts.netloc:
        return _s3(parts.netloc, parts.path.strip("/"))
    raise ConfigurationError(
        f"{url!r} is not a blob store: give file:///PATH or s3://BUCKET/PREFIX."
    )


def _s3(bucket: str, prefix: str) -> BlobStore:
    try:
        from batchd.blobstore.s3 import S3BlobStore
    except ImportError as exc:
        raise ConfigurationError(
            "An s3:// blob store needs obstore: pip install 'batchd[s3]'"
        ) from exc
    return S3BlobStore(bucket, prefix)
