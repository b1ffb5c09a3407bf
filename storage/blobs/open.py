"""Build the BlobStore named by the `WEBPACS_BLOB_URL` setting."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from storage.blobs.filesystem import FilesystemBlobStore
from storage.errors import BlobError

if TYPE_CHECKING:
    from storage.blobs.base import BlobStore

__all__ = ["open_blob_store"]


def open_blob_store(url: str) -> BlobStore:
    """Open the blob store at `url`: `file:///absolute/path` or a plain folder path.

    Raises:
        BlobError: the URL names a store this build cannot open (S3 comes with the scale-out
            issue), or the folder cannot be created.
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
        raise BlobError(
            f"blob store URL {url!r}: S3 blob stores arrive with the scale-out issue; "
            "use a local folder (file:///absolute/path or a plain path) for now"
        )
    raise BlobError(f"blob store URL {url!r} has an unknown scheme {parts.scheme!r}; use file:///absolute/path")
