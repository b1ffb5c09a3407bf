"""Backup and restore: incremental blob copies, one consistent snapshot, byte-exact restores across databases."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import pytest
from operations_archive import OperationsArchive, open_archive
from sqlalchemy import MetaData, func, select

from storage.backup import BackupError, BackupTarget, backup_archive, restore_archive
from storage.blobs import open_blob_store
from storage.copy_archive import CopyMismatch
from storage.errors import BlobError
from storage.retention import set_keep

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from s3_server import S3Server  # tests/s3_server.py
    from sqlalchemy.engine import Engine

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def source(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OperationsArchive]:
    archive = open_archive(request.param, tmp_path / "source")
    yield archive
    archive.close()


@pytest.fixture(params=BACKENDS)
def restored(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OperationsArchive]:
    archive = open_archive(request.param, tmp_path / "restored")
    yield archive
    archive.close()


def contents(ops: OperationsArchive, studies: list[str]) -> dict[str, list[tuple[str, bytes, bytes]]]:
    """Per study: each instance's UID, bytes and stored metadata, in order."""
    result = {}
    for study in studies:
        instances = ops.archive.instances(study)
        metadata = ops.archive.index.metadata(study)
        result[study] = [
            (i.sop_instance_uid, b"".join(ops.archive.blobs.open_range(i.blob_key)), meta)
            for i, meta in zip(instances, metadata, strict=True)
        ]
    return result


def flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def row_counts(engine: Engine) -> dict[str, int]:
    tables = MetaData()
    tables.reflect(engine)
    with engine.connect() as connection:
        return {
            t.name: connection.execute(select(func.count()).select_from(t)).scalar_one() for t in tables.sorted_tables
        }


class TestRestore:
    def test_backup_then_restore_gives_the_same_studies_byte_for_byte(
        self, source: OperationsArchive, restored: OperationsArchive, tmp_path: Path
    ) -> None:
        studies = [source.store_study(instances=3)[0], source.store_study(modality="MR", instances=2)[0]]
        set_keep(source.engine, studies[0], keep=True, by="tests")
        target = BackupTarget(str(tmp_path / "backup"))
        report = backup_archive(source.engine, source.archive.blobs, target)
        assert (report.instances, report.studies, report.blobs_copied) == (5, 2, 5)
        restore_archive(target, restored.url, restored.archive.blobs)
        assert contents(restored, studies) == contents(source, studies)
        assert row_counts(restored.engine) == {**row_counts(source.engine), "alembic_version": 1}

    def test_a_restored_archive_takes_new_instances(
        self, source: OperationsArchive, restored: OperationsArchive, tmp_path: Path
    ) -> None:
        source.store_study(instances=2)
        target = BackupTarget(str(tmp_path / "backup"))
        backup_archive(source.engine, source.archive.blobs, target)
        restore_archive(target, restored.url, restored.archive.blobs)
        study, _ = restored.store_study(instances=2)  # ids continue after the restored ones
        assert len(restored.archive.instances(study)) == 2

    def test_an_installation_in_use_is_refused(self, source: OperationsArchive, tmp_path: Path) -> None:
        source.store_study()
        target = BackupTarget(str(tmp_path / "backup"))
        backup_archive(source.engine, source.archive.blobs, target)
        with pytest.raises(BackupError, match="not empty"):
            restore_archive(target, source.url, source.archive.blobs)

    def test_an_older_snapshot_can_be_chosen(self, source: OperationsArchive, tmp_path: Path) -> None:
        first, _ = source.store_study()
        target = BackupTarget(str(tmp_path / "backup"))
        older = backup_archive(source.engine, source.archive.blobs, target).snapshot
        source.store_study()
        backup_archive(source.engine, source.archive.blobs, target)
        assert target.snapshot_keys()[0] == older
        fresh = open_archive("sqlite", tmp_path / "fresh")
        try:
            restore_archive(target, fresh.url, fresh.archive.blobs, snapshot=older)
            assert fresh.archive.index.counts().studies == 1
            assert fresh.archive.instances(first)
        finally:
            fresh.close()

    def test_a_damaged_backup_blob_stops_the_restore(self, source: OperationsArchive, tmp_path: Path) -> None:
        study, _ = source.store_study()
        target = BackupTarget(str(tmp_path / "backup"))
        backup_archive(source.engine, source.archive.blobs, target)
        copy = tmp_path / "backup" / "blobs" / source.archive.instances(study)[0].blob_key
        flip_last_byte(copy)
        fresh = open_archive("sqlite", tmp_path / "fresh")
        try:
            with pytest.raises(CopyMismatch, match="SHA-256"):
                restore_archive(target, fresh.url, fresh.archive.blobs)
            assert fresh.archive.index.counts().instances == 0  # rows follow blobs: none came
        finally:
            fresh.close()

    def test_an_empty_folder_is_not_a_backup(self, tmp_path: Path) -> None:
        fresh = open_archive("sqlite", tmp_path / "fresh")
        try:
            with pytest.raises(BackupError, match="no snapshot"):
                restore_archive(BackupTarget(str(tmp_path / "nothing")), fresh.url, fresh.archive.blobs)
        finally:
            fresh.close()


class TestIncremental:
    def test_only_blobs_the_backup_lacks_are_copied(self, source: OperationsArchive, tmp_path: Path) -> None:
        source.store_study(instances=3)
        target = BackupTarget(str(tmp_path / "backup"))
        backup_archive(source.engine, source.archive.blobs, target)
        again = backup_archive(source.engine, source.archive.blobs, target)
        assert (again.blobs_copied, again.blobs_present) == (0, 3)
        source.store_study(instances=1)
        third = backup_archive(source.engine, source.archive.blobs, target, verify=True)
        assert (third.blobs_copied, third.blobs_present) == (1, 3)
        assert len(target.snapshot_keys()) == 3

    def test_a_damaged_source_blob_stops_the_backup_and_stores_no_snapshot(
        self, source: OperationsArchive, tmp_path: Path
    ) -> None:
        study, _ = source.store_study()
        path = source.blob_path(study)
        flip_last_byte(path)
        target = BackupTarget(str(tmp_path / "backup"))
        with pytest.raises(CopyMismatch, match="SHA-256"):
            backup_archive(source.engine, source.archive.blobs, target)
        assert target.snapshot_keys() == []


class TestS3Target:
    def test_a_backup_in_a_bucket_restores_byte_for_byte(self, s3_server: S3Server, tmp_path: Path) -> None:
        source = open_archive("sqlite", tmp_path / "source")
        fresh = open_archive("sqlite", tmp_path / "fresh")
        try:
            studies = [source.store_study(instances=2)[0]]
            bucket = s3_server.new_bucket()
            target = BackupTarget(f"s3://{bucket}/pacs-backup", s3=s3_server.options(staging_dir=tmp_path / "staging"))
            assert backup_archive(source.engine, source.archive.blobs, target).blobs_copied == 2
            assert backup_archive(source.engine, source.archive.blobs, target).blobs_present == 2
            listed = s3_server.client().list_objects_v2(Bucket=bucket, Prefix="pacs-backup/snapshots/")
            assert len(listed["Contents"]) == 2
            restore_archive(target, fresh.url, fresh.archive.blobs)
            assert contents(fresh, studies) == contents(source, studies)
        finally:
            source.close()
            fresh.close()


class TestMirror:
    def test_every_stored_instance_is_in_the_mirror_and_a_backup_there_copies_nothing(self, tmp_path: Path) -> None:
        ops = open_archive("sqlite", tmp_path / "archive")
        try:
            ops.archive.mirror = BackupTarget(str(tmp_path / "backup")).blobs
            study, parts = ops.store_study(instances=3)
            mirrored = [b"".join(ops.archive.mirror.open_range(i.blob_key)) for i in ops.archive.instances(study)]
            assert sorted(mirrored) == sorted(parts)
            report = backup_archive(ops.engine, ops.archive.blobs, BackupTarget(str(tmp_path / "backup")))
            assert (report.blobs_copied, report.blobs_present) == (0, 3)
            ops.archive.delete(study)  # a backup keeps what the archive deletes
            assert len(list(ops.archive.mirror.keys())) == 3
        finally:
            ops.close()

    def test_a_resent_instance_leaves_no_second_copy_in_the_mirror(self, tmp_path: Path) -> None:
        ops = open_archive("sqlite", tmp_path / "archive")
        try:
            ops.archive.mirror = BackupTarget(str(tmp_path / "backup")).blobs
            study, parts = ops.store_study()
            staged = ops.archive.blobs.staging_dir() / "again"
            staged.write_bytes(parts[0])
            assert ops.archive.store(staged, hashlib.sha256(parts[0]).hexdigest()).outcome == "already_present"
            assert list(ops.archive.mirror.keys()) == [ops.archive.instances(study)[0].blob_key]
        finally:
            ops.close()

    def test_when_the_mirror_fails_nothing_is_stored(self, s3_server: S3Server, tmp_path: Path) -> None:
        ops = open_archive("sqlite", tmp_path / "archive")
        try:
            missing_bucket = f"s3://no-such-bucket-{tmp_path.name.lower()[-8:]}/blobs"
            options = s3_server.options(staging_dir=tmp_path / "staging", max_attempts=1)
            ops.archive.mirror = open_blob_store(missing_bucket, s3=options)
            with pytest.raises(BlobError):
                ops.store_study()
            assert ops.archive.index.counts().instances == 0
            assert list(ops.archive.blobs.keys()) == []
            assert "mirror" in ops.archive.readiness_problems()
        finally:
            ops.close()
