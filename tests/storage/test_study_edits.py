"""Study management in the archive core: rewriting headers, editing, moving, the recycle bin (SQLite and PostgreSQL)."""

from __future__ import annotations

import hashlib
import io
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest
from dicomdata import BUNDLED_FILES, Patient, SeriesSpec, StudySpec, build_instances, bundled, part10, sample_study
from pydicom import dcmread
from sqlalchemy import select

from storage.archive import Archive
from storage.blobs import open_blob_store
from storage.dicom.ingest_compression import ORIGINALS_PREFIX, CompressionPolicy
from storage.errors import ConflictingInstance, NotFound
from storage.index import Index
from storage.index.database import write_transaction
from storage.index.edits import purge_recycled, switch_study
from storage.index.models import change_table
from storage.index.query import Level, parse_query
from storage.study_edits import (
    InvalidEdit,
    PatientKey,
    _rewrite,
    edit_study,
    merge_patients,
    move_series_to_study,
    purge_expired,
    recycle,
    recycle_bin,
    restore,
    rewrite_instance,
    set_attributes,
)

if TYPE_CHECKING:
    from pathlib import Path

    from operations_archive import OperationsArchive
    from sqlalchemy.engine import Engine


@pytest.fixture
def engine(ops: OperationsArchive) -> Engine:
    """The index engine of an empty archive on SQLite or PostgreSQL (tests/storage/conftest.py)."""
    return ops.engine


@pytest.fixture
def archive(ops: OperationsArchive) -> Archive:
    """That archive."""
    return ops.archive


def store(archive: Archive, *parts: bytes) -> None:
    staging = archive.blobs.staging_dir()
    staging.mkdir(parents=True, exist_ok=True)
    for data in parts:
        digest = hashlib.sha256(data).hexdigest()
        path = staging / f"part-{digest[:16]}"
        path.write_bytes(data)
        archive.store(path, digest)


def stored_datasets(archive: Archive, study_uid: str) -> list[tuple[bytes, object]]:
    """(bytes, dataset) of every stored instance of the study."""
    found = []
    for stored in archive.instances(study_uid):
        data = b"".join(archive.blobs.open_range(stored.blob_key))
        found.append((data, dcmread(io.BytesIO(data))))
    return found


def study_rows(archive: Archive, **keys: str) -> list[dict[str, object]]:
    query = parse_query(Level.STUDY, list(keys.items()))
    return archive.index.search(query, max_results=100).rows


def _rewritten(data: bytes, tmp_path: Path, **values: str) -> bytes:
    source = tmp_path / "source.dcm"
    source.write_bytes(data)
    out = io.BytesIO()
    rewrite_instance(source, out, set_attributes(values))
    return out.getvalue()


class TestRewriteInstance:
    @pytest.mark.parametrize("name", BUNDLED_FILES)
    def test_only_the_attribute_changes_and_the_pixel_data_stays_byte_for_byte(self, name: str, tmp_path: Path) -> None:
        data = bundled(name)
        before = dcmread(io.BytesIO(data))
        after = dcmread(io.BytesIO(_rewritten(data, tmp_path, PatientName="EDITED^NAME")))
        assert str(after.PatientName) == "EDITED^NAME"
        assert after.file_meta.TransferSyntaxUID == before.file_meta.TransferSyntaxUID
        if "PixelData" in before:
            assert after.PixelData == before.PixelData
        unchanged = {int(e.tag) for e in before if e.keyword not in {"PatientName", "PixelData"} and e.tag.element}
        assert {tag: after[tag].value for tag in unchanged} == {tag: before[tag].value for tag in unchanged}

    def test_a_value_the_character_set_cannot_hold_switches_the_header_to_utf8(self, tmp_path: Path) -> None:
        data = bundled("chrFren.dcm")  # ISO_IR 100 (Latin-1)
        before = dcmread(io.BytesIO(data))
        after = dcmread(io.BytesIO(_rewritten(data, tmp_path, PatientName="王^小明")))
        assert after.SpecificCharacterSet == "ISO_IR 192"
        assert str(after.PatientName) == "王^小明"
        others = [e.keyword for e in before if e.VR in {"PN", "LO", "SH"} and e.keyword != "PatientName"]
        assert others
        assert {k: str(after[k].value) for k in others} == {k: str(before[k].value) for k in others}


class TestEditStudy:
    def test_every_instance_index_row_and_blob_carries_the_new_values(self, archive: Archive, engine: Engine) -> None:
        spec, parts = sample_study(instances=3)
        store(archive, *parts)
        old_keys = {s.blob_key for s in archive.instances(spec.study_uid)}
        result = edit_study(engine, archive, spec.study_uid, {"PatientName": "NEW^NAME", "PatientID": "NEW-ID"})
        assert result.instances == 3
        assert result.before == {"PatientName": spec.patient.name, "PatientID": spec.patient.id}
        assert result.after == {"PatientName": "NEW^NAME", "PatientID": "NEW-ID"}
        stored = stored_datasets(archive, spec.study_uid)
        assert {(str(ds.PatientName), ds.PatientID) for _, ds in stored} == {("NEW^NAME", "NEW-ID")}
        original_pixels = {dcmread(io.BytesIO(p)).SOPInstanceUID: dcmread(io.BytesIO(p)).PixelData for p in parts}
        assert {ds.SOPInstanceUID: ds.PixelData for _, ds in stored} == original_pixels
        assert not old_keys & set(archive.blobs.keys()), "old blobs were not deleted"
        assert len(list(archive.blobs.keys())) == 3
        assert study_rows(archive, PatientID=spec.patient.id) == []
        (row,) = study_rows(archive, PatientID="NEW-ID")
        assert row["00100010"]["Value"] == [{"Alphabetic": "NEW^NAME"}]
        assert row["00201208"]["Value"] == [3]
        with engine.connect() as connection:
            kinds = connection.execute(
                select(change_table.c.kind).where(change_table.c.study_instance_uid == spec.study_uid)
            ).scalars()
            assert sorted(kinds) == ["stored"] * 6  # 3 stores, 3 edits

    def test_invalid_values_are_refused_naming_them(self, archive: Archive, engine: Engine) -> None:
        spec, parts = sample_study()
        store(archive, *parts)
        with pytest.raises(InvalidEdit, match="PatientBirthDate"):
            edit_study(engine, archive, spec.study_uid, {"PatientBirthDate": "1970-01-01"})
        with pytest.raises(InvalidEdit, match="SOPInstanceUID cannot be edited"):
            edit_study(engine, archive, spec.study_uid, {"SOPInstanceUID": "1.2.3"})
        with pytest.raises(InvalidEdit, match="PatientBirthDate"):
            edit_study(engine, archive, spec.study_uid, {"PatientBirthDate": "19700101-19800101"})  # a range
        with pytest.raises(InvalidEdit, match="PatientSex"):
            edit_study(engine, archive, spec.study_uid, {"PatientSex": "X"})

    def test_an_unknown_study_is_not_found(self, archive: Archive, engine: Engine) -> None:
        with pytest.raises(NotFound):
            edit_study(engine, archive, "1.2.3.4", {"PatientName": "X"})

    def test_old_bytes_a_crash_leaves_after_the_switch_are_removed_by_the_restart_sweep(
        self, archive: Archive, engine: Engine
    ) -> None:
        spec, parts = sample_study(instances=2)
        store(archive, *parts)
        stored = archive.instances(spec.study_uid)
        # edit_study's steps one at a time, to stop between the switch and the deletes.
        rewritten = [_rewrite(archive, item, set_attributes({"PatientName": "AFTER^CRASH"})) for item in stored]
        with write_transaction(engine) as connection:
            assert switch_study(connection, spec.study_uid, rewritten, host=archive.host) == []
        # The process dies here, before deleting the old bytes: they stay journaled for this host.
        old_keys = {item.blob_key for item in stored}
        assert set(archive.index.journal.entries(list(old_keys))) == old_keys
        archive.sweep_orphans(grace_seconds=3600, recent_days=0, after_restart=True)  # no day prefix walked
        assert set(archive.blobs.keys()) == {r.item.blob_key for r in rewritten}
        assert {str(ds.PatientName) for _, ds in stored_datasets(archive, spec.study_uid)} == {"AFTER^CRASH"}

    def test_a_switch_missing_an_instance_stored_meanwhile_writes_nothing(
        self, archive: Archive, engine: Engine
    ) -> None:
        spec, parts = sample_study(instances=2)
        store(archive, *parts)
        first, second = archive.instances(spec.study_uid)
        with write_transaction(engine) as connection:
            stale = switch_study(connection, spec.study_uid, [], host=archive.host)
        assert stale == sorted([first.sop_instance_uid, second.sop_instance_uid])
        assert [s.blob_key for s in archive.instances(spec.study_uid)] == [first.blob_key, second.blob_key]


class TestKeptOriginals:
    def test_the_original_kept_beside_a_compressed_instance_is_edited_with_it(
        self, engine: Engine, tmp_path: Path
    ) -> None:
        policy = CompressionPolicy.parse("*=1.2.840.10008.1.2.4.80", keep_original=True)  # JPEG-LS lossless
        archive = Archive(Index(engine), open_blob_store(str(tmp_path / "blobs")), compression=policy)
        data = bundled("MR_small.dcm")
        study_uid = dcmread(io.BytesIO(data)).StudyInstanceUID
        store(archive, data)
        edit_study(engine, archive, study_uid, {"PatientName": "KEPT^ORIGINAL"})
        (stored,) = archive.instances(study_uid)
        originals = list(archive.blobs.keys(ORIGINALS_PREFIX))
        assert originals == [ORIGINALS_PREFIX + stored.blob_key]
        original = dcmread(io.BytesIO(b"".join(archive.blobs.open_range(originals[0]))))
        assert str(original.PatientName) == "KEPT^ORIGINAL"
        assert original.PixelData == dcmread(io.BytesIO(data)).PixelData


class TestMergePatients:
    def test_every_study_of_the_merged_patient_takes_the_kept_patients_attributes(
        self, archive: Archive, engine: Engine
    ) -> None:
        merged, kept = Patient("OLD^NAME", "P-OLD", "19800101", "M"), Patient("KEPT^NAME", "P-KEPT", "19810202", "F")
        first, first_parts = sample_study(merged)
        second, second_parts = sample_study(merged)
        _third, third_parts = sample_study(kept)
        store(archive, *first_parts, *second_parts, *third_parts)
        result = merge_patients(engine, archive, PatientKey("P-OLD"), PatientKey("P-KEPT"))
        assert sorted(s.study_uid for s in result.studies) == sorted([first.study_uid, second.study_uid])
        assert study_rows(archive, PatientID="P-OLD") == []
        assert len(study_rows(archive, PatientID="P-KEPT")) == 3
        for _, ds in stored_datasets(archive, first.study_uid):
            assert (str(ds.PatientName), ds.PatientBirthDate, ds.PatientSex) == ("KEPT^NAME", "19810202", "F")
        again = merge_patients(engine, archive, PatientKey("P-OLD"), PatientKey("P-KEPT"))
        assert again.studies == []

    def test_merging_into_an_unknown_patient_is_not_found(self, archive: Archive, engine: Engine) -> None:
        spec, parts = sample_study()
        store(archive, *parts)
        with pytest.raises(NotFound, match="NOBODY"):
            merge_patients(engine, archive, PatientKey(spec.patient.id), PatientKey("NOBODY"))


class TestMoveSeries:
    def test_the_series_joins_the_other_study_and_both_counts_follow(self, archive: Archive, engine: Engine) -> None:
        patient = Patient("MOVE^ME", "P-MOVE")
        moved, stays = SeriesSpec("MR", 2, number=1), SeriesSpec("CT", 1, number=2)
        source = StudySpec(patient, "20240101", "ACC-SRC", (moved, stays))
        target = StudySpec(Patient("TARGET^PAT", "P-TGT"), "20240202", "ACC-TGT", (SeriesSpec("CT", 1),))
        store(archive, *(part10(ds) for ds in build_instances(source)), *(part10(ds) for ds in build_instances(target)))
        result = move_series_to_study(engine, archive, source.study_uid, moved.series_uid, target.study_uid)
        assert result.instances == 2
        (source_row,) = study_rows(archive, StudyInstanceUID=source.study_uid)
        (target_row,) = study_rows(archive, StudyInstanceUID=target.study_uid)
        assert (source_row["00201206"]["Value"], source_row["00201208"]["Value"]) == ([1], [1])
        assert (target_row["00201206"]["Value"], target_row["00201208"]["Value"]) == ([2], [3])
        assert source_row["00080061"]["Value"] == ["CT"]
        assert sorted(target_row["00080061"]["Value"]) == ["CT", "MR"]
        moved_instances = archive.instances(target.study_uid, moved.series_uid)
        assert len(moved_instances) == 2
        for stored in moved_instances:
            ds = dcmread(io.BytesIO(b"".join(archive.blobs.open_range(stored.blob_key))))
            assert (ds.StudyInstanceUID, ds.SeriesInstanceUID) == (target.study_uid, moved.series_uid)
            assert (str(ds.PatientName), ds.PatientID, ds.AccessionNumber) == ("TARGET^PAT", "P-TGT", "ACC-TGT")
        with pytest.raises(NotFound):
            archive.instances(source.study_uid, moved.series_uid)

    def test_a_latin1_series_moved_to_a_study_with_a_chinese_name_is_rewritten_in_utf8(
        self, archive: Archive, engine: Engine
    ) -> None:
        latin1 = bundled("chrFren.dcm")  # ISO_IR 100
        source = dcmread(io.BytesIO(latin1))
        target, target_parts = sample_study(Patient("王^小明", "P-CN"))
        store(archive, latin1, *target_parts)
        move_series_to_study(engine, archive, source.StudyInstanceUID, source.SeriesInstanceUID, target.study_uid)
        (moved,) = archive.instances(target.study_uid, source.SeriesInstanceUID)
        ds = dcmread(io.BytesIO(b"".join(archive.blobs.open_range(moved.blob_key))))
        assert (ds.SpecificCharacterSet, str(ds.PatientName), ds.PatientID) == ("ISO_IR 192", "王^小明", "P-CN")
        assert ds.StudyInstanceUID == target.study_uid

    def test_moving_the_last_series_removes_the_empty_study(self, archive: Archive, engine: Engine) -> None:
        source, source_parts = sample_study()
        target, target_parts = sample_study()
        store(archive, *source_parts, *target_parts)
        move_series_to_study(engine, archive, source.study_uid, source.series[0].series_uid, target.study_uid)
        assert study_rows(archive, StudyInstanceUID=source.study_uid) == []
        assert len(archive.instances(target.study_uid)) == 2

    def test_moving_into_the_same_study_is_a_conflict(self, archive: Archive, engine: Engine) -> None:
        spec, parts = sample_study()
        store(archive, *parts)
        with pytest.raises(ConflictingInstance):
            move_series_to_study(engine, archive, spec.study_uid, spec.series[0].series_uid, spec.study_uid)
        assert len(list(archive.blobs.keys())) == 1, "the rewritten blobs were not discarded"


class TestRecycleBin:
    def test_a_recycled_study_is_hidden_restorable_and_purged_after_its_period(
        self, archive: Archive, engine: Engine
    ) -> None:
        spec, parts = sample_study(instances=2)
        store(archive, *parts)
        assert recycle(engine, spec.study_uid, by="tests") == 2
        assert study_rows(archive, StudyInstanceUID=spec.study_uid) == []
        with pytest.raises(NotFound):
            archive.instances(spec.study_uid)
        with pytest.raises(NotFound):
            recycle(engine, spec.study_uid, by="tests")
        assert [s.study_instance_uid for s in recycle_bin(engine)] == [spec.study_uid]
        restore(engine, spec.study_uid)
        assert len(archive.instances(spec.study_uid)) == 2
        recycle(engine, spec.study_uid, by="tests")
        assert purge_expired(engine, archive, days=30) == []
        later = datetime.now(UTC) + timedelta(days=31)
        assert purge_expired(engine, archive, days=30, now=later) == [spec.study_uid]
        assert recycle_bin(engine) == []
        assert list(archive.blobs.keys()) == []
        with pytest.raises(NotFound):
            restore(engine, spec.study_uid)

    def test_bytes_a_crash_leaves_after_the_purge_commit_are_removed_by_the_restart_sweep(
        self, archive: Archive, engine: Engine
    ) -> None:
        spec, parts = sample_study(instances=2)
        store(archive, *parts)
        recycle(engine, spec.study_uid, by="tests")
        with write_transaction(engine) as connection:
            keys = purge_recycled(connection, spec.study_uid, host=archive.host)
        # The process dies here, before deleting the bytes: they stay journaled for this host.
        assert set(archive.index.journal.entries(keys)) == set(keys)
        # Whatever their ingest day: no day prefix is walked (recent_days=0), the journal finds them.
        archive.sweep_orphans(grace_seconds=3600, recent_days=0, after_restart=True)
        assert list(archive.blobs.keys()) == []
        assert archive.index.journal.entries(keys) == {}
