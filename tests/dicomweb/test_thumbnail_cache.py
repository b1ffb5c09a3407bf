"""The thumbnail cache (dicomweb/thumbnail_cache.py): hits, the size bound, least recently used first out."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from dicomweb.thumbnail_cache import ThumbnailCache

if TYPE_CHECKING:
    from pathlib import Path


def _size(folder: Path) -> int:
    return sum(entry.stat().st_size for entry in folder.glob("*/*"))


class TestThumbnailCache:
    def test_what_is_put_is_got_back_and_a_miss_is_none(self, tmp_path: Path) -> None:
        cache = ThumbnailCache(tmp_path, 10_000)
        cache.put("a", b"jpeg bytes")
        assert cache.get("a") == b"jpeg bytes"
        assert cache.get("b") is None

    def test_the_folder_stays_within_its_bound(self, tmp_path: Path) -> None:
        cache = ThumbnailCache(tmp_path, 10_000)
        for number in range(100):
            cache.put(f"key {number}", bytes(1_000))
        assert _size(tmp_path) <= 10_000

    def test_the_least_recently_used_go_first(self, tmp_path: Path) -> None:
        cache = ThumbnailCache(tmp_path, 10_000)
        for number in range(8):
            cache.put(f"key {number}", bytes(1_000))
            os.utime(cache.path(f"key {number}"), (number, number))  # an age order the clock cannot blur
        assert cache.get("key 0") is not None  # a hit: now the most recently used
        for number in range(8, 12):
            cache.put(f"key {number}", bytes(1_000))
        assert cache.get("key 0") is not None
        assert cache.get("key 1") is None

    def test_another_worker_sees_the_same_entries(self, tmp_path: Path) -> None:
        ThumbnailCache(tmp_path, 10_000).put("shared", b"png")
        assert ThumbnailCache(tmp_path, 10_000).get("shared") == b"png"

    def test_size_zero_turns_it_off(self, tmp_path: Path) -> None:
        cache = ThumbnailCache(tmp_path / "off", 0)
        cache.put("a", b"x")
        assert cache.get("a") is None
        assert not (tmp_path / "off").exists()
