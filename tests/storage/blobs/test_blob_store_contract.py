"""The BlobStore contract: every adapter must pass this suite (filesystem, and S3 over real HTTP).

Add an adapter by adding a param to the `store` fixture; tests use only the Protocol. The S3
variant talks to moto_server (the `s3_server` fixture), a bucket per test.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from storage.blobs.base import CHUNK_SIZE, BlobStore
from storage.blobs.filesystem import FilesystemBlobStore
from storage.blobs.s3 import S3BlobStore
from storage.errors import BlobError, BlobExists, BlobNotFound, InvalidBlobKey

if TYPE_CHECKING:
    from pathlib import Path

    from s3_server import S3Server

DATA = bytes(range(256)) * 40  # 10240 bytes, every byte value


@pytest.fixture(params=["filesystem", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    if request.param == "filesystem":
        return FilesystemBlobStore(tmp_path / "blobs")
    if request.param == "s3":
        server: S3Server = request.getfixturevalue("s3_server")
        return S3BlobStore(server.new_bucket(), "archive/blobs", server.options(staging_dir=tmp_path / "staging"))
    raise AssertionError(request.param)


def staged(store: BlobStore, data: bytes, name: str = "incoming") -> Path:
    """A file in the store's staging folder, as the STOW edge spools one."""
    path = store.staging_dir() / name
    path.write_bytes(data)
    return path


def put(store: BlobStore, key: str, data: bytes) -> int:
    return store.put_file(key, staged(store, data))


class TestWriteOnce:
    def test_put_returns_the_size_and_the_bytes_read_back_unchanged(self, store: BlobStore) -> None:
        assert put(store, "studies/1.2.3/a.dcm", DATA) == len(DATA)
        assert b"".join(store.open_range("studies/1.2.3/a.dcm")) == DATA
        assert store.size("studies/1.2.3/a.dcm") == len(DATA)

    def test_put_consumes_the_source_file(self, store: BlobStore) -> None:
        source = staged(store, DATA)
        store.put_file("a", source)
        assert not source.exists()

    def test_an_empty_blob_is_stored(self, store: BlobStore) -> None:
        assert put(store, "empty", b"") == 0
        assert list(store.open_range("empty")) == []

    def test_second_put_under_a_key_raises_blob_exists_and_keeps_the_first_bytes(self, store: BlobStore) -> None:
        put(store, "k", DATA)
        second = staged(store, b"other bytes", "second")
        with pytest.raises(BlobExists, match="'k'"):
            store.put_file("k", second)
        assert b"".join(store.open_range("k")) == DATA
        assert second.read_bytes() == b"other bytes"  # left for the caller to clean up

    def test_put_of_a_missing_source_fails_and_stores_nothing(self, store: BlobStore, tmp_path: Path) -> None:
        with pytest.raises(BlobError):
            store.put_file("k", tmp_path / "missing")
        with pytest.raises(BlobNotFound):
            store.size("k")
        assert list(store.keys()) == []


class TestRanges:
    SIZE = len(DATA)

    @pytest.mark.parametrize(
        ("start", "end", "expected"),
        [
            (0, None, DATA),
            (0, 10, DATA[:10]),
            (100, 356, DATA[100:356]),
            (SIZE - 1, None, DATA[-1:]),
            (0, 0, b""),
            (7, 7, b""),
            (SIZE, None, b""),
            (SIZE + 10, None, b""),
            (SIZE - 3, SIZE + 100, DATA[-3:]),
        ],
    )
    def test_open_range_streams_exactly_the_range_cut_at_the_end(
        self, store: BlobStore, start: int, end: int | None, expected: bytes
    ) -> None:
        put(store, "k", DATA)
        assert b"".join(store.open_range("k", start, end)) == expected

    def test_open_range_yields_chunks_of_chunk_size_at_most(self, store: BlobStore) -> None:
        data = DATA * (2 * CHUNK_SIZE // len(DATA) + 1)
        put(store, "big", data)
        chunks = list(store.open_range("big"))
        assert len(chunks) == 3
        assert all(0 < len(chunk) <= CHUNK_SIZE for chunk in chunks)
        assert b"".join(chunks) == data

    @pytest.mark.parametrize(
        ("start", "length", "expected"),
        [(0, SIZE, DATA), (5, 3, DATA[5:8]), (SIZE - 2, 10, DATA[-2:]), (SIZE, 4, b""), (3, 0, b"")],
    )
    def test_read_range_returns_the_bytes_or_fewer_at_the_end(
        self, store: BlobStore, start: int, length: int, expected: bytes
    ) -> None:
        put(store, "k", DATA)
        assert store.read_range("k", start, length) == expected

    def test_negative_start_is_refused(self, store: BlobStore) -> None:
        put(store, "k", DATA)
        with pytest.raises(ValueError, match="start=-1"):
            store.read_range("k", -1, 2)
        with pytest.raises(ValueError, match="start=-1"):
            next(store.open_range("k", -1))

    def test_end_before_start_is_refused(self, store: BlobStore) -> None:
        put(store, "k", DATA)
        with pytest.raises(ValueError, match="invalid byte range"):
            next(store.open_range("k", 10, 5))


class TestMissingBlob:
    def test_open_range_raises_blob_not_found_on_first_next_not_on_call(self, store: BlobStore) -> None:
        stream = store.open_range("nothing/here")
        with pytest.raises(BlobNotFound, match="nothing/here"):
            next(stream)

    def test_read_range_and_size_raise_blob_not_found(self, store: BlobStore) -> None:
        with pytest.raises(BlobNotFound):
            store.read_range("nothing", 0, 1)
        with pytest.raises(BlobNotFound):
            store.size("nothing")

    def test_local_path_of_a_missing_blob_is_not_found_or_none_for_remote_stores(self, store: BlobStore) -> None:
        put(store, "present", DATA)
        if store.local_path("present") is None:  # no local files (S3)
            assert store.local_path("nothing") is None
        else:
            with pytest.raises(BlobNotFound):
                store.local_path("nothing")

    def test_a_folder_of_blobs_is_not_a_blob(self, store: BlobStore) -> None:
        put(store, "studies/1/a", DATA)
        with pytest.raises(BlobNotFound):
            store.size("studies/1")
        with pytest.raises(BlobNotFound):
            next(store.open_range("studies"))


class TestDelete:
    def test_delete_removes_the_blob(self, store: BlobStore) -> None:
        put(store, "a/b", DATA)
        store.delete("a/b")
        with pytest.raises(BlobNotFound):
            store.size("a/b")
        assert list(store.keys()) == []

    def test_deleting_twice_or_a_never_stored_key_is_not_an_error(self, store: BlobStore) -> None:
        put(store, "a/b", DATA)
        store.delete("a/b")
        store.delete("a/b")
        store.delete("never/stored")

    def test_delete_leaves_other_blobs_alone(self, store: BlobStore) -> None:
        put(store, "a/b", DATA)
        put(store, "a/c", DATA)
        store.delete("a/b")
        assert list(store.keys()) == ["a/c"]


class TestKeys:
    KEYS = ("studies/1.2.3/s/a.dcm", "studies/1.2.3/s/b.dcm", "studies/1.23/s/c.dcm", "studies/2/d.dcm", "top")

    @pytest.fixture
    def filled(self, store: BlobStore) -> BlobStore:
        for key in self.KEYS:
            put(store, key, key.encode())
        return store

    def test_keys_lists_every_stored_key(self, filled: BlobStore) -> None:
        assert sorted(filled.keys()) == sorted(self.KEYS)

    @pytest.mark.parametrize(
        ("prefix", "expected"),
        [
            ("studies/1.2", KEYS[:3]),
            ("studies/1.2.3/", KEYS[:2]),
            ("studies/1.2.3/s/b", KEYS[1:2]),
            ("studies/", KEYS[:4]),
            ("t", KEYS[4:]),
            ("studies/9", ()),
            ("absent/", ()),
        ],
    )
    def test_keys_under_a_prefix_are_those_starting_with_it(
        self, filled: BlobStore, prefix: str, expected: tuple[str, ...]
    ) -> None:
        assert sorted(filled.keys(prefix)) == sorted(expected)

    def test_staged_files_are_not_keys(self, filled: BlobStore) -> None:
        staged(filled, b"spooled but not put")
        assert sorted(filled.keys()) == sorted(self.KEYS)

    def test_an_invalid_prefix_is_refused(self, store: BlobStore) -> None:
        with pytest.raises(InvalidBlobKey):
            list(store.keys("../"))


BAD_KEYS = [
    "",
    "/absolute",
    "a//b",
    "a/",
    "a/../b",
    "..",
    ".",
    "a/./b",
    ".hidden",
    "a/.hidden",
    "with space",
    "back\\slash",
    "caf\u00e9",
    "a/b?c",
    "x" * 1025,
    "s/" + "x" * 256,
]


class TestKeyRules:
    @pytest.mark.parametrize("key", BAD_KEYS)
    def test_malformed_keys_are_refused_by_every_method(self, store: BlobStore, key: str) -> None:
        source = staged(store, DATA)
        with pytest.raises(InvalidBlobKey):
            store.put_file(key, source)
        assert source.exists()
        with pytest.raises(InvalidBlobKey):
            store.read_range(key, 0, 1)
        with pytest.raises(InvalidBlobKey):
            next(store.open_range(key))
        with pytest.raises(InvalidBlobKey):
            store.size(key)
        with pytest.raises(InvalidBlobKey):
            store.delete(key)
        assert list(store.keys()) == []

    @pytest.mark.parametrize("key", ["a", "A-b_c.9", "studies/1.2.840.113619/series/2.25.1/x.dcm", "s/" + "x" * 255])
    def test_well_formed_keys_are_accepted(self, store: BlobStore, key: str) -> None:
        put(store, key, DATA)
        assert list(store.keys()) == [key]


class TestReadiness:
    def test_check_passes_on_a_working_store(self, store: BlobStore) -> None:
        store.check()

    def test_the_staging_folder_exists_and_takes_files(self, store: BlobStore) -> None:
        assert store.staging_dir().is_dir()
        assert staged(store, DATA).read_bytes() == DATA
