"""The BlobStore on a local folder: one file per blob, under `root/<key>`.

A blob appears under its key only complete and durable: the bytes are fsynced first, then hard-linked
to the key's name (a link never replaces an existing file, which makes blobs write-once even between
concurrent writers), then the directory is fsynced. A crash leaves either nothing under the key or
the whole blob; at worst a dot-named temporary file, which `keys` never lists.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Final

from storage.blobs.base import CHUNK_SIZE
from storage.blobs.keys import check_key, check_prefix, check_range
from storage.errors import BlobError, BlobExists, BlobNotFound

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["FilesystemBlobStore"]

# Keys never start a segment with "." (storage/blobs/keys.py): these names cannot collide with one.
_STAGING: Final = ".staging"
_TEMPORARY: Final = ".tmp-"
_NOT_A_FILE: Final = (FileNotFoundError, IsADirectoryError, NotADirectoryError)


class FilesystemBlobStore:
    """Blobs as files under `root` (the embedded default). The filesystem must support hard links."""

    def __init__(self, root: Path) -> None:
        """Use the folder `root`, creating it if needed.

        Raises:
            BlobError: the folder cannot be created.
        """
        self.root = root.absolute()
        self._staging = self.root / _STAGING
        self.staging_dir()

    def __repr__(self) -> str:
        """Name the folder, for logs."""
        return f"FilesystemBlobStore({str(self.root)!r})"

    def staging_dir(self) -> Path:
        """The folder for files about to be put: on the blobs' filesystem, so a put is a link.

        Raises:
            BlobError: the folder cannot be created.
        """
        try:
            self._staging.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BlobError(f"cannot create the blob staging folder {self._staging}: {exc}") from exc
        return self._staging

    def put_file(self, key: str, source: Path) -> int:
        """Store the file at `source` under `key`, durably, and return its size.

        The source is linked into place when it is on the same filesystem (no copy), else copied;
        then it is removed. On failure nothing is stored under `key` and `source` is left in place.

        Raises:
            BlobExists: `key` is taken (blobs are write-once).
            InvalidBlobKey: `key` is malformed.
            BlobError: the source is missing or the filesystem failed.
        """
        target = self._path(key)
        if target.exists():
            raise BlobExists(f"a blob is already stored under key {key!r}; blobs are write-once")
        try:
            self._make_parents(target.parent)
            _fsync(source)  # the bytes must be on disk before a name points at them
            try:
                os.link(source, target)
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
                _copy_in(source, target)
            try:
                _fsync(target.parent)
                size = target.stat().st_size
                source.unlink()
            except OSError:
                target.unlink(missing_ok=True)  # keep the promise: a failed put stores nothing
                raise
        except FileExistsError as exc:
            raise BlobExists(f"a blob is already stored under key {key!r}; blobs are write-once") from exc
        except OSError as exc:
            raise BlobError(f"cannot store {source} under blob key {key!r}: {exc}") from exc
        return size

    def open_range(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Stream bytes [start, end) of the blob (end=None: to its end) in chunks of CHUNK_SIZE at most.

        A range past the end of the blob is cut at the end (possibly to nothing).

        Raises:
            BlobNotFound: nothing is stored under `key` (raised on the first next()).
            InvalidBlobKey: `key` is malformed (raised on the first next()).
            ValueError: start is negative or end is before start.
        """
        check_range(start, None if end is None else end - start)
        path = self._path(key)
        try:
            blob = path.open("rb", buffering=0)
        except _NOT_A_FILE as exc:
            raise BlobNotFound(f"no blob under key {key!r}") from exc
        with blob:
            blob.seek(start)
            remaining = end - start if end is not None else None
            while remaining is None or remaining > 0:
                chunk = blob.read(CHUNK_SIZE if remaining is None else min(CHUNK_SIZE, remaining))
                if not chunk:
                    return
                if remaining is not None:
                    remaining -= len(chunk)
                yield chunk

    def read_range(self, key: str, start: int, length: int) -> bytes:
        """Return `length` bytes from `start` (fewer if the blob ends first); for small reads such as one frame.

        Raises:
            BlobNotFound: nothing is stored under `key`.
            InvalidBlobKey: `key` is malformed.
            ValueError: start or length is negative.
        """
        check_range(start, length)
        path = self._path(key)
        try:
            with path.open("rb") as blob:
                blob.seek(start)
                return blob.read(length)
        except _NOT_A_FILE as exc:
            raise BlobNotFound(f"no blob under key {key!r}") from exc

    def local_path(self, key: str) -> Path:
        """The blob's file, for readers that need one (pydicom, codecs).

        Raises:
            BlobNotFound: nothing is stored under `key`.
            InvalidBlobKey: `key` is malformed.
        """
        path = self._path(key)
        if not path.is_file():
            raise BlobNotFound(f"no blob under key {key!r}")
        return path

    def size(self, key: str) -> int:
        """Size in bytes.

        Raises:
            BlobNotFound: nothing is stored under `key`.
            InvalidBlobKey: `key` is malformed.
        """
        path = self._path(key)
        if not path.is_file():
            raise BlobNotFound(f"no blob under key {key!r}")
        return path.stat().st_size

    def delete(self, key: str) -> None:
        """Remove the blob; removing a missing blob is not an error (deletes are retried).

        Folders are kept: removing them would race with a concurrent put into the same folder.

        Raises:
            InvalidBlobKey: `key` is malformed.
            BlobError: the file exists but cannot be removed.
        """
        path = self._path(key)
        try:
            path.unlink(missing_ok=True)
        except (IsADirectoryError, NotADirectoryError):
            return
        except OSError as exc:
            raise BlobError(f"cannot delete the blob under key {key!r}: {exc}") from exc

    def keys(self, prefix: str = "") -> Iterator[str]:
        """Every stored key starting with `prefix`, in sorted order per folder; temporary files excluded.

        Raises:
            InvalidBlobKey: `prefix` could not start any valid key.
        """
        check_prefix(prefix)
        folder, _, _ = prefix.rpartition("/")
        top = self.root / folder
        for directory, subdirectories, files in os.walk(top):
            relative = Path(directory).relative_to(self.root).as_posix()
            base = "" if relative == "." else relative + "/"
            # Dot-named entries are the staging folder and temporary files, never blobs.
            subdirectories[:] = sorted(
                name for name in subdirectories if not name.startswith(".") and _may_hold(base + name + "/", prefix)
            )
            for name in sorted(files):
                key = base + name
                if not name.startswith(".") and key.startswith(prefix):
                    yield key

    def check(self) -> None:
        """Raise BlobError when the folder is missing or not writable (readiness probe).

        Raises:
            BlobError: a probe file cannot be created and removed in the folder.
        """
        try:
            fd, name = tempfile.mkstemp(prefix=".check-", dir=self.staging_dir())
            os.close(fd)
            Path(name).unlink()
        except OSError as exc:
            raise BlobError(f"the blob folder {self.root} is not writable: {exc}") from exc

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*check_key(key))

    def _make_parents(self, directory: Path) -> None:
        """Create the missing folders down to `directory`, each made durable in its parent."""
        missing: list[Path] = []
        while not directory.exists():
            missing.append(directory)
            directory = directory.parent
        for folder in reversed(missing):
            try:
                folder.mkdir()
            except FileExistsError:
                continue  # a concurrent put made it
            _fsync(folder.parent)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _copy_in(source: Path, target: Path) -> None:
    """Copy `source` across filesystems to a temporary file beside `target`, fsync it, link it to `target`."""
    fd, name = tempfile.mkstemp(prefix=_TEMPORARY, dir=target.parent)
    os.close(fd)
    temporary = Path(name)
    try:
        shutil.copyfile(source, temporary)
        _fsync(temporary)
        os.link(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)


def _may_hold(folder: str, prefix: str) -> bool:
    """Whether keys under `folder` (ending with "/") can start with `prefix`."""
    return folder.startswith(prefix) or prefix.startswith(folder)
