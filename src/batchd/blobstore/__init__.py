"""Where file bytes live, chosen by URL: ``file://PATH`` (S3-compatible stores come later)."""

from __future__ import annotations

from pathlib import Path

from batchd.blobstore.base import BlobInfo, BlobStore, BlobWriter
from batchd.blobstore.local import LocalBlobStore

__all__ = ["BlobInfo", "BlobStore", "BlobWriter", "LocalBlobStore", "open_blobstore"]


def open_blobstore(root: Path) -> BlobStore:
    return LocalBlobStore(root)
