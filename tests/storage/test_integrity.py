"""The integrity check: damaged, missing and unreferenced blobs are found, repaired from a backup, resumable."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from storage.backup import BackupTarget, backup_archive
from storage.integrity import verify_archive

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from operations_archive import OperationsArchive


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


class TestHealthyArchive:
    def test_every_instance_is_checked_and_nothing_is_reported(self, ops: OperationsArchive) -> None:
        _, parts = ops.store_study(instances=3)
        report = verify_archive(ops.engine, ops.archive)
        assert report.checked == 3
        assert report.bytes_read == sum(len(part) for part in parts)
        assert report.problems == []
        assert report.unreferenced == []
        assert report.open_problems == 0


class TestDamage:
    def test_a_flipped_byte_is_reported_as_corrupt(self, ops: OperationsArchive) -> None:
        study, _ = ops.store_study(instances=2)
        flip_a_byte(ops.blob_path(study, 1))
        report = verify_archive(ops.engine, ops.archive)
        (problem,) = report.problems
        assert problem.kind == "corrupt"
        assert problem.sop_uid == ops.archive.instances(study)[1].sop_instance_uid
        assert "SHA-256" in problem.detail
        assert report.open_problems == 1

    def test_a_truncated_blob_is_reported_with_its_sizes(self, ops: OperationsArchive) -> None:
        study, parts = ops.store_study()
        path = ops.blob_path(study)
        path.write_bytes(path.read_bytes()[:-10])
        (problem,) = verify_archive(ops.engine, ops.archive).problems
        assert (problem.kind, problem.detail) == (
            "corrupt",
            f"{len(parts[0]) - 10} bytes, {len(parts[0])} recorded at ingest",
        )

    def test_a_deleted_blob_is_reported_as_missing(self, ops: OperationsArchive) -> None:
        study, _ = ops.store_study()
        key = ops.archive.instances(study)[0].blob_key
        ops.blob_path(study).unlink()
        (problem,) = verify_archive(ops.engine, ops.archive).problems
        assert (problem.kind, problem.blob_key, problem.study_uid) == ("missing", key, study)


class TestRepair:
    def test_damaged_and_missing_blobs_come_back_from_a_backup(self, ops: OperationsArchive, tmp_path: Path) -> None:
        study, parts = ops.store_study(instances=2)
        backup = BackupTarget(str(tmp_path / "backup"))
        backup_archive(ops.engine, ops.archive.blobs, backup)
        flip_a_byte(ops.blob_path(study, 0))
        ops.blob_path(study, 1).unlink()
        report = verify_archive(ops.engine, ops.archive, repair=True, backup=backup.blobs)
        assert sorted(p.kind for p in report.problems) == ["corrupt", "missing"]
        assert all(p.repaired for p in report.problems)
        assert report.open_problems == 0
        restored = [b"".join(ops.archive.blobs.open_range(i.blob_key)) for i in ops.archive.instances(study)]
        assert sorted(restored) == sorted(parts)
        assert verify_archive(ops.engine, ops.archive).problems == []

    def test_without_a_good_copy_the_row_is_reported_and_kept(self, ops: OperationsArchive, tmp_path: Path) -> None:
        study, _ = ops.store_study()
        backup = BackupTarget(str(tmp_path / "empty-backup"))
        ops.blob_path(study).unlink()
        report = verify_archive(ops.engine, ops.archive, repair=True, backup=backup.blobs)
        (problem,) = report.problems
        assert not problem.repaired
        assert report.open_problems == 1
        assert len(ops.archive.instances(study)) == 1

    def test_a_damaged_backup_copy_is_not_used(self, ops: OperationsArchive, tmp_path: Path) -> None:
        study, _ = ops.store_study()
        backup = BackupTarget(str(tmp_path / "backup"))
        backup_archive(ops.engine, ops.archive.blobs, backup)
        key = ops.archive.instances(study)[0].blob_key
        flip_a_byte(tmp_path / "backup" / "blobs" / key)
        ops.blob_path(study).unlink()
        (problem,) = verify_archive(ops.engine, ops.archive, repair=True, backup=backup.blobs).problems
        assert not problem.repaired


class TestUnreferenced:
    def test_a_blob_no_row_names_is_reported_then_removed_by_repair(self, ops: OperationsArchive) -> None:
        ops.store_study()
        stray = ops.blob_dir / "20200101" / "stray.dcm"
        stray.parent.mkdir(parents=True)
        stray.write_bytes(b"left by a crash")
        assert verify_archive(ops.engine, ops.archive).unreferenced == ["20200101/stray.dcm"]
        assert stray.exists()
        report = verify_archive(ops.engine, ops.archive, repair=True)
        assert report.unreferenced_removed == 1
        assert not stray.exists()
        assert verify_archive(ops.engine, ops.archive).open_problems == 0

    def test_a_blob_being_stored_elsewhere_is_not_reported(self, ops: OperationsArchive) -> None:
        ops.archive.index.journal.begin("20200101/in-flight.dcm", "another-host")
        path = ops.blob_dir / "20200101" / "in-flight.dcm"
        path.parent.mkdir(parents=True)
        path.write_bytes(b"half")
        report = verify_archive(ops.engine, ops.archive, repair=True, grace_seconds=3600)
        assert report.unreferenced == []
        assert path.exists()


def interrupted_after(count: int) -> Callable[[int], None]:
    """An on_instance callback that stops the check (as Ctrl-C would) at the `count`-th instance."""
    seen: list[int] = []

    def callback(size: int) -> None:
        seen.append(size)
        if len(seen) == count:
            raise KeyboardInterrupt

    return callback


class TestResume:
    def test_an_interrupted_check_carries_on_after_the_last_page(self, ops: OperationsArchive) -> None:
        study, _ = ops.store_study(instances=6)
        flip_a_byte(ops.blob_path(study, 0))  # the lowest id: found by the first, interrupted run
        with pytest.raises(KeyboardInterrupt):
            verify_archive(ops.engine, ops.archive, on_instance=interrupted_after(3), page_size=2)
        report = verify_archive(ops.engine, ops.archive, resume=True, page_size=2)
        assert (report.resumed_checked, report.checked) == (2, 4)
        assert report.resumed_corrupt == 1
        assert report.open_problems == 1

    def test_a_complete_check_leaves_nothing_to_resume(self, ops: OperationsArchive) -> None:
        ops.store_study(instances=3)
        verify_archive(ops.engine, ops.archive, page_size=2)
        report = verify_archive(ops.engine, ops.archive, resume=True, page_size=2)
        assert (report.resumed_checked, report.checked) == (0, 3)

    def test_without_resume_an_interrupted_check_starts_over(self, ops: OperationsArchive) -> None:
        ops.store_study(instances=4)
        with pytest.raises(KeyboardInterrupt):
            verify_archive(ops.engine, ops.archive, on_instance=interrupted_after(3), page_size=2)
        report = verify_archive(ops.engine, ops.archive, page_size=2)
        assert (report.resumed_checked, report.checked) == (0, 4)
