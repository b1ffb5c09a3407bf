from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file

from storage.archive import Archive
from storage.blobs import open_blob_store
from storage.errors import InvalidInstance, NotFound
from storage.index import Index
from storage.index.database import migrate, open_engine

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture
def archive(tmp_path: Path) -> Iterator[Archive]:
    url = f"sqlite:///{tmp_path / 'index.sqlite3'}"
    migrate(url)
    engine = open_engine(url)
    yield Archive(Index(engine), open_blob_store(str(tmp_path / "blobs")))
    engine.dispose()


def spooled(archive: Archive, source: Path | bytes) -> tuple[Path, str]:
    """A copy of `source` in the staging folder, as STOW leaves it, with its SHA-256."""
    data = source if isinstance(source, bytes) else source.read_bytes()
    staging = archive.blobs.staging_dir()
    staging.mkdir(parents=True, exist_ok=True)
    path = staging / f"part-{hashlib.sha256(data).hexdigest()[:12]}"
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def blob_files(archive: Archive) -> list[str]:
    return sorted(archive.blobs.keys())


CT = Path(str(get_testdata_file("CT_small.dcm")))


class TestStore:
    def test_stored_bytes_are_the_received_bytes(self, archive: Archive) -> None:
        result = archive.store(*spooled(archive, CT))
        assert result.outcome == "stored"
        (stored,) = archive.instances(result.study_uid)
        assert b"".join(archive.blobs.open_range(stored.blob_key)) == CT.read_bytes()

    def test_the_spooled_part_is_consumed(self, archive: Archive) -> None:
        path, digest = spooled(archive, CT)
        archive.store(path, digest)
        assert not path.exists()

    def test_identical_bytes_again_change_nothing(self, archive: Archive) -> None:
        archive.store(*spooled(archive, CT))
        again = archive.store(*spooled(archive, CT))
        assert again.outcome == "already_present"
        assert len(blob_files(archive)) == 1

    def test_new_bytes_for_the_same_instance_replace_the_old(self, archive: Archive, tmp_path: Path) -> None:
        archive.store(*spooled(archive, CT))
        dataset = dcmread(CT)
        dataset.PatientName = "CHANGED^NAME"
        changed = tmp_path / "changed.dcm"
        dataset.save_as(changed)
        result = archive.store(*spooled(archive, changed))
        assert result.outcome == "replaced"
        (stored,) = archive.instances(result.study_uid)
        assert b"".join(archive.blobs.open_range(stored.blob_key)) == changed.read_bytes()
        assert blob_files(archive) == [stored.blob_key]

    def test_a_study_mismatch_stores_nothing(self, archive: Archive) -> None:
        with pytest.raises(InvalidInstance, match="belongs to study") as caught:
            archive.store(*spooled(archive, CT), study_uid="1.2.3")
        assert caught.value.failure_reason == 0xA900
        assert blob_files(archive) == []

    def test_an_invalid_instance_stores_nothing(self, archive: Archive) -> None:
        with pytest.raises(InvalidInstance):
            archive.store(*spooled(archive, b"not dicom at all" * 100))
        assert blob_files(archive) == []


class TestDelete:
    def test_delete_removes_rows_then_bytes(self, archive: Archive) -> None:
        result = archive.store(*spooled(archive, CT))
        assert archive.delete(result.study_uid) == 1
        assert blob_files(archive) == []
        with pytest.raises(NotFound):
            archive.instances(result.study_uid)

    def test_deleting_nothing_is_not_found(self, archive: Archive) -> None:
        with pytest.raises(NotFound):
            archive.delete("1.2.3.4")


class TestOrphanSweep:
    def test_a_blob_without_index_row_or_journal_row_is_removed_whatever_its_age(self, archive: Archive) -> None:
        result = archive.store(*spooled(archive, CT))
        (stored,) = archive.instances(result.study_uid)
        orphan_key = stored.blob_key.rsplit("/", 1)[0] + "/orphan.dcm"
        source, _ = spooled(archive, b"bytes that were never indexed")
        archive.blobs.put_file(orphan_key, source)
        assert archive.sweep_orphans(grace_seconds=3600) == 1
        assert blob_files(archive) == [stored.blob_key]

    def test_a_store_in_flight_on_another_host_is_spared_within_the_grace_period(self, archive: Archive) -> None:
        key = put_journaled(archive, "other-host")
        assert archive.sweep_orphans(grace_seconds=3600, after_restart=True) == 0
        assert blob_files(archive) == [key]

    def test_a_journaled_blob_older_than_the_grace_period_is_removed_with_its_row(self, archive: Archive) -> None:
        put_journaled(archive, "other-host")
        assert archive.sweep_orphans(grace_seconds=0) == 1
        assert blob_files(archive) == []
        assert archive.index.journal.stale(older_than=datetime.now(UTC), host=None) == []

    def test_after_a_restart_this_hosts_own_journaled_blobs_are_removed_at_once(self, archive: Archive) -> None:
        put_journaled(archive, archive.host)
        assert archive.sweep_orphans(grace_seconds=3600) == 0  # maybe a store of this running host
        assert archive.sweep_orphans(grace_seconds=3600, after_restart=True) == 1
        assert blob_files(archive) == []

    def test_a_journal_row_whose_put_never_happened_is_cleared(self, archive: Archive) -> None:
        archive.index.journal.begin(archive_key_today(archive), archive.host)
        archive.sweep_orphans(grace_seconds=3600, after_restart=True)
        assert archive.index.journal.entries([archive_key_today(archive)]) == {}


class TestBlobJournal:
    def test_a_stored_instance_leaves_no_journal_row(self, archive: Archive) -> None:
        result = archive.store(*spooled(archive, CT))
        (stored,) = archive.instances(result.study_uid)
        assert archive.index.journal.entries([stored.blob_key]) == {}

    def test_a_refused_instance_leaves_neither_blob_nor_journal_row(self, archive: Archive) -> None:
        with pytest.raises(InvalidInstance):
            archive.store(*spooled(archive, CT), study_uid="1.2.3.999")
        assert blob_files(archive) == []
        assert archive.index.journal.stale(older_than=datetime.now(UTC), host=archive.host) == []

    def test_every_store_gets_a_key_of_its_own_even_for_identical_bytes(self, archive: Archive) -> None:
        first = archive.store(*spooled(archive, CT))
        (stored,) = archive.instances(first.study_uid)
        archive.store(*spooled(archive, CT))
        (again,) = archive.instances(first.study_uid)
        assert again.blob_key == stored.blob_key  # identical bytes: the first blob stays
        assert blob_files(archive) == [stored.blob_key]  # the second write's own blob went


def put_journaled(archive: Archive, host: str) -> str:
    """A blob put under a journal row of `host`, never indexed: a store in flight or a dead one."""
    key = archive_key_today(archive)
    archive.index.journal.begin(key, host)
    source, _ = spooled(archive, b"in flight")
    archive.blobs.put_file(key, source)
    return key


def archive_key_today(archive: Archive) -> str:
    return datetime.now(UTC).strftime("%Y%m%d") + "/1.2/3.4/5.6.in-flight.dcm"
