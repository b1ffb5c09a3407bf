"""Build the BlobStore named by the `WEBPACS_BLOB_URL` setting."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from storage.blobs.filesystem import FilesystemBlobStore
from storage.blobs.s3 import S3BlobStore, S3Options
from storage.errors import BlobError

if TYPE_CHECKING:
    from storage.blobs.base import BlobStore

__all__ = ["open_blob_store"]


def open_blob_store(url: str, *, s3: S3Options | None = None) -> BlobStore:
    """Open the blob store at `url`: `file:///absolute/path`, a plain folder path or `s3://bucket/prefix`.

    Args:
        url: where the blobs are.
        s3: endpoint, region, credentials... for an s3:// URL (see S3Options); no request is made
            here, call `check()` to find out whether the bucket is usable.

    Raises:
        BlobError: the URL is malformed or has an unknown scheme, or the folder cannot be created.
    """
    parts = urlsplit(url)
    if parts.scheme == "":
        return FilesystemBlobStore(Path(url))
    if parts.scheme == "file":
        path = unquote(parts.path)
        if parts.netloc not in ("", "localhost") or not path.startswith("/"):
            raise BlobError(
                f"blob store URL {url!r} is not file:///absolute/path; write a plain path for a relative one"
            )
        return FilesystemBlobStore(Path(path))
    if parts.scheme == "s3":
        if not parts.netloc or parts.query or parts.fragment:
            raise BlobError(f"blob store URL {url!r} is not s3://bucket or s3://bucket/prefix")
        return S3BlobStore(parts.netloc, unquote(parts.path), s3)
    raise BlobError(
        f"blob store URL {url!r} has an unknown scheme {parts.scheme!r}; use file:///absolute/path or s3://bucket/prefix"
    )
