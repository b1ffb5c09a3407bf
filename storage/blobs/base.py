"""The BlobStore port: write-once immutable objects addressed by key, read as streams or ranges."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

__all__ = ["CHUNK_SIZE", "BlobStore"]

CHUNK_SIZE = 1024 * 1024


class BlobStore(Protocol):
    """Where instance bytes live. Adapters: filesystem (embedded), S3 (scale-out).

    Every method is blocking; callers on the event loop run them in a worker thread.
    """

    def staging_dir(self) -> Path:
        """A local directory where callers write files they are about to `put_file`.

        On disk it is on the blobs' filesystem, so `put_file` from it is a rename rather than a copy;
        on S3 it is a local temporary directory. Files left there by a crash may be swept.
        """
        ...

    def put_file(self, key: str, source: Path) -> int:
        """Store the file at `source` under `key`, durably, and return its size.

        The source file is consumed: it may be moved (same filesystem) or copied then removed.
        Returns only when the bytes are durable (fsync on disk; completed upload on S3). On failure
        nothing is stored under `key` and `source` is left in place.

        Raises:
            BlobExists: `key` is taken (blobs are write-once).
            InvalidBlobKey: `key` is malformed.
            BlobError: the backend failed (source missing, disk full, unreachable...).
        """
        ...

    def open_range(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Stream bytes [start, end) of the blob (end=None: to the end) in chunks of CHUNK_SIZE at most.

        Raises:
            BlobNotFound: nothing is stored under `key` (raised on the first next()).
        """
        ...

    def read_range(self, key: str, start: int, length: int) -> bytes:
        """Return `length` bytes from `start` (fewer if the blob ends first); for small reads such as one frame.

        Raises:
            BlobNotFound: nothing is stored under `key`.
        """
        ...

    def local_path(self, key: str) -> Path | None:
        """The blob as a local file when the adapter has one (filesystem), else None.

        Raises:
            BlobNotFound: the adapter has local files but none under `key`.
        """
        ...

    def size(self, key: str) -> int:
        """Size in bytes. Raises BlobNotFound."""
        ...

    def delete(self, key: str) -> None:
        """Remove the blob; removing a missing blob is not an error (deletes are retried)."""
        ...

    def keys(self, prefix: str = "") -> Iterator[str]:
        """Every stored key under `prefix` (for the orphan sweep and integrity checks)."""
        ...

    def check(self) -> None:
        """Raise BlobError when the store is unreachable or not writable (readiness probe)."""
        ...
