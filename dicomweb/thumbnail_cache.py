"""A bounded on-disk cache of thumbnails, shared by the workers of one host.

Entries are keyed by the immutable blob key of the instance and the rendering options, so an entry
is never stale: a replaced instance has a new blob key. Workers share nothing but the folder: each
entry is written to a temporary file and renamed into place (atomic on POSIX), and any worker may
evict. When the folder outgrows its bound, the least recently used entries (by modification time,
which a hit refreshes) are removed until it is back under 80 % of it. Hosts that share a blob store
keep their own caches; losing one costs only re-rendering.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import threading
from pathlib import Path
from typing import Final

__all__ = ["ThumbnailCache"]

_LOW_WATER: Final = 0.8


class ThumbnailCache:
    """Rendered thumbnails under `folder`, at most about `max_bytes` of them."""

    def __init__(self, folder: Path, max_bytes: int) -> None:
        """Use (and create) `folder`; `max_bytes` 0 turns the cache off."""
        self._folder = folder
        self._max_bytes = max_bytes
        self._lock = threading.Lock()
        self._written_since_scan = max_bytes  # the first store measures what other workers left
        if max_bytes:
            folder.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        """The file of an entry: a hash of the key, fanned out over 256 sub-folders."""
        digest = hashlib.sha256(key.encode()).hexdigest()
        return self._folder / digest[:2] / digest[2:]

    def get(self, key: str) -> bytes | None:
        """The entry's bytes, or None on a miss; a hit becomes the most recently used."""
        if not self._max_bytes:
            return None
        path = self.path(key)
        try:
            data = path.read_bytes()
            os.utime(path)
        except FileNotFoundError:
            return None  # never stored, or evicted by another worker meanwhile
        return data

    def put(self, key: str, data: bytes) -> None:
        """Store an entry (atomically), then evict the oldest ones if the folder is over its bound."""
        if not self._max_bytes:
            return
        path = self.path(key)
        path.parent.mkdir(exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".", delete=False) as temporary:
            temporary.write(data)
        Path(temporary.name).replace(path)
        with self._lock:
            self._written_since_scan += len(data)
            if self._written_since_scan < self._max_bytes * (1 - _LOW_WATER):
                return
            self._written_since_scan = 0
        self._evict()

    def _evict(self) -> None:
        entries = []
        for entry in self._folder.glob("*/*"):
            with contextlib.suppress(FileNotFoundError):
                status = entry.stat()
                entries.append((status.st_mtime, status.st_size, entry))
        total = sum(size for _, size, _ in entries)
        if total <= self._max_bytes:
            return
        for _, size, entry in sorted(entries, key=lambda item: item[0]):
            if total <= self._max_bytes * _LOW_WATER:
                break
            entry.unlink(missing_ok=True)
            total -= size
