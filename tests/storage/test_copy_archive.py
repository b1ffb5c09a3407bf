"""Copying an archive (what `webpacs migrate-storage` runs): checksums catch damaged bytes, reruns resume."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from pydicom.data import get_testdata_file

from storage.archive import Archive
from storage.blobs import open_blob_store
from storage.copy_archive import CopyMismatch, copy_archive
from storage.index import Index
from storage.index.database import migrate, open_engine

if TYPE_CHECKING:
    from collections.abc import Iterator

    from sqlalchemy.engine import Engine

    from storage.blobs.base import BlobStore

FILES = ("CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm")


def archive_at(folder: Path) -> tuple[Engine, BlobStore]:
    folder.mkdir()
    url = f"sqlite:///{folder / 'index.sqlite3'}"
    migrate(url)
    return open_engine(url), open_blob_store(str(folder / "blobs"))


@pytest.fixture
def source(tmp_path: Path) -> Iterator[tuple[Engine, BlobStore]]:
    engine, blobs = archive_at(tmp_path / "source")
    archive = Archive(Index(engine), blobs)
    for name in FILES:
        data = Path(str(get_testdata_file(name))).read_bytes()
        part = blobs.staging_dir() / name
        part.write_bytes(data)
        archive.store(part, hashlib.sha256(data).hexdigest())
    yield engine, blobs
    engine.dispose()


@pytest.fixture
def target(tmp_path: Path) -> Iterator[tuple[Engine, BlobStore]]:
    engine, blobs = archive_at(tmp_path / "target")
    yield engine, blobs
    engine.dispose()


def keys(store: BlobStore) -> list[str]:
    return sorted(store.keys())


def damage(store: BlobStore, key: str) -> None:
    path = store.local_path(key)
    assert path is not None
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


class TestCopy:
    def test_every_blob_and_row_arrives_and_a_rerun_copies_nothing_again(
        self, source: tuple[Engine, BlobStore], target: tuple[Engine, BlobStore]
    ) -> None:
        first = copy_archive(source, target)
        assert (first.blobs_copied, first.blobs_present) == (3, 0)
        assert first.rows["instance"] == 3
        assert keys(target[1]) == keys(source[1])
        for key in keys(source[1]):
            assert b"".join(target[1].open_range(key)) == b"".join(source[1].open_range(key))
        again = copy_archive(source, target)
        assert (again.blobs_copied, again.blobs_present, again.rows) == (0, 3, first.rows)

    def test_progress_is_reported_in_bytes(
        self, source: tuple[Engine, BlobStore], target: tuple[Engine, BlobStore]
    ) -> None:
        sizes: list[int] = []
        totals: list[tuple[int, int]] = []
        copy_archive(source, target, on_start=lambda *total: totals.append(total), on_blob=sizes.append)
        assert totals == [(3, sum(sizes))]


class TestChecksums:
    def test_a_damaged_source_blob_stops_the_copy_naming_it_and_is_not_copied(
        self, source: tuple[Engine, BlobStore], target: tuple[Engine, BlobStore]
    ) -> None:
        key = keys(source[1])[0]
        damage(source[1], key)
        with pytest.raises(CopyMismatch, match="does not match its SHA-256 in the index"):
            copy_archive(source, target)
        assert key not in keys(target[1])

    def test_verify_reads_back_what_the_target_holds_and_finds_damage(
        self, source: tuple[Engine, BlobStore], target: tuple[Engine, BlobStore]
    ) -> None:
        copy_archive(source, target)
        damage(target[1], keys(target[1])[1])
        copy_archive(source, target)  # sizes match: without --verify a resumed copy trusts them
        with pytest.raises(CopyMismatch, match="the target's blob"):
            copy_archive(source, target, verify=True)
