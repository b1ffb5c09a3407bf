"""Index writes and reads: add / replace / delete, counts, stored instances, metadata, concurrency."""

from __future__ import annotations

import json
import multiprocessing
import threading
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import pytest
from index_samples import MR_IMAGE, SR_DOCUMENT, Spec, add_in_process, create_database, drop_database, make_instance
from sqlalchemy import create_engine, event, select

from storage.dicom.records import Frame
from storage.errors import ArchiveError, ConflictingInstance, NotFound
from storage.index import AddOutcome, Index, IndexCounts, NewInstance
from storage.index.database import migrate, open_engine
from storage.index.models import (
    change_table,
    instance_table,
    series_table,
    study_modality_table,
    study_sop_class_table,
    study_table,
)
from storage.index.query import Level, parse_query
from storage.index.writes import _LOOKUP_AND_STORE

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from sqlalchemy.engine import Engine

STUDY = "1.2.3.1"


def add(index: Index, spec: Spec, key: str | None = None) -> AddOutcome:
    parsed, sha = make_instance(spec)
    return index.add_instance(parsed, blob_key=key or f"blobs/{spec.sop_uid}/{spec.payload}", size=100, sha256=sha)


def study_row(index: Index, uid: str = STUDY) -> dict[str, Any]:
    query = parse_query(Level.STUDY, [("StudyInstanceUID", uid), ("includefield", "SOPClassesInStudy")])
    rows = index.search(query, max_results=10).rows
    assert len(rows) == 1
    return rows[0]


def values(row: dict[str, Any], tag: str) -> list[Any]:
    return list(row[tag].get("Value", []))


def changes(engine: Engine) -> list[tuple[str, str]]:
    with engine.connect() as connection:
        rows = connection.execute(
            select(change_table.c.kind, change_table.c.sop_instance_uid).order_by(change_table.c.seq)
        ).all()
    return [(row.kind, row.sop_instance_uid) for row in rows]


def item(spec: Spec) -> NewInstance:
    parsed, sha = make_instance(spec)
    return NewInstance(parsed, f"blobs/{spec.sop_uid}/{spec.payload}", 100, sha)


def series_row(index: Index, uid: str) -> dict[str, Any]:
    query = parse_query(Level.SERIES, [("SeriesInstanceUID", uid), ("includefield", "SeriesDescription")])
    rows = index.search(query, max_results=10).rows
    assert len(rows) == 1
    return rows[0]


def snapshot(engine: Engine) -> dict[str, Any]:
    """Every row the index keeps, by UID instead of surrogate id, timestamps left out."""
    with engine.connect() as connection:
        study_uid = dict(connection.execute(select(study_table.c.id, study_table.c.study_instance_uid)).all())
        series_uid = dict(connection.execute(select(series_table.c.id, series_table.c.series_instance_uid)).all())

        def rows(table: Any, drop: set[str]) -> list[tuple[Any, ...]]:
            result = []
            for row in connection.execute(select(table)).mappings():
                values = {key: value for key, value in row.items() if key not in drop}
                if "study_id" in drop:
                    values["study"] = study_uid[row["study_id"]]
                if "series_id" in drop:
                    values["series"] = series_uid[row["series_id"]]
                result.append(tuple(sorted(values.items())))
            return sorted(result)

        changes = connection.execute(
            select(change_table.c.kind, change_table.c.sop_instance_uid).order_by(change_table.c.seq)
        ).all()
        return {
            "study": rows(study_table, {"id", "created_at", "updated_at"}),
            "series": rows(series_table, {"id", "study_id", "created_at"}),
            "instance": rows(instance_table, {"id", "study_id", "series_id", "created_at"}),
            "modalities": rows(study_modality_table, {"study_id"}),
            "sop_classes": rows(study_sop_class_table, {"study_id"}),
            "changes": [tuple(change) for change in changes],
        }


@pytest.fixture
def other_index(database_url: str, tmp_path: Path) -> Iterator[tuple[Index, Engine]]:
    """A second empty index, on the same kind of database as `index`."""
    (tmp_path / "other").mkdir()
    url = create_database(database_url.split(":", 1)[0].split("+", 1)[0], tmp_path / "other")
    migrate(url)
    engine = open_engine(url)
    yield Index(engine), engine
    engine.dispose()
    drop_database(url)


def two_series(index: Index) -> None:
    add(index, Spec(sop_uid="1.2.3.1.1.1", instance_number=1))
    add(index, Spec(sop_uid="1.2.3.1.1.2", instance_number=2))
    add(index, Spec(series_uid="1.2.3.1.2", sop_uid="1.2.3.1.2.1", modality="MR", sop_class=MR_IMAGE, series_number=2))


class TestAdd:
    def test_new_instance_is_stored_and_counted(self, index: Index) -> None:
        assert add(index, Spec()) == AddOutcome("stored", None)
        assert index.counts() == IndexCounts(studies=1, series=1, instances=1, bytes=100)

    def test_counts_and_sets_follow_adds(self, index: Index) -> None:
        two_series(index)
        row = study_row(index)
        assert values(row, "00201206") == [2]
        assert values(row, "00201208") == [3]
        assert values(row, "00080061") == ["CT", "MR"]
        assert values(row, "00080062") == ["1.2.840.10008.5.1.4.1.1.2", MR_IMAGE]

    def test_study_attributes_come_from_the_newest_instance(self, index: Index) -> None:
        add(index, Spec(patient_name="OLD^NAME"))
        add(index, Spec(sop_uid="1.2.3.1.1.2", patient_name="NEW^NAME"))
        assert values(study_row(index), "00100010") == [{"Alphabetic": "NEW^NAME"}]
        assert index.search(parse_query(Level.STUDY, [("PatientName", "OLD*")]), max_results=10).rows == []

    def test_change_feed_records_stores(self, index: Index, engine: Engine) -> None:
        two_series(index)
        assert changes(engine) == [("stored", "1.2.3.1.1.1"), ("stored", "1.2.3.1.1.2"), ("stored", "1.2.3.1.2.1")]

    def test_series_attributes_come_from_the_newest_instance(self, index: Index) -> None:
        add(index, Spec(series_description="OLD"))
        add(index, Spec(sop_uid="1.2.3.1.1.2", series_description="NEW", series_number=7))
        row = series_row(index, "1.2.3.1.1")
        assert (values(row, "0008103E"), values(row, "00200011"), values(row, "00201209")) == (["NEW"], [7], [2])

    def test_a_series_changing_modality_changes_the_studys_modalities(self, index: Index) -> None:
        add(index, Spec(modality="OT"))
        add(index, Spec(sop_uid="1.2.3.1.1.2", modality="CT"))
        assert values(study_row(index), "00080061") == ["CT"]
        assert index.search(parse_query(Level.STUDY, [("ModalitiesInStudy", "OT")]), max_results=10).rows == []

    def test_an_unchanged_instance_after_a_change_keeps_the_newest_values(self, index: Index) -> None:
        add(index, Spec(patient_name="A^B"))
        add(index, Spec(sop_uid="1.2.3.1.1.2", patient_name="C^D"))
        add(index, Spec(sop_uid="1.2.3.1.1.3", patient_name="C^D"))
        assert values(study_row(index), "00100010") == [{"Alphabetic": "C^D"}]
        assert values(study_row(index), "00201208") == [3]


class TestDuplicates:
    def test_same_bytes_again_changes_nothing(self, index: Index, engine: Engine) -> None:
        _, sha = make_instance(Spec())
        add(index, Spec())
        parsed, _ = make_instance(Spec(patient_name="IGNORED^NAME"))  # only the sha256 counts
        outcome = index.add_instance(parsed, blob_key="blobs/other", size=100, sha256=sha)
        assert outcome == AddOutcome("already_present", None)
        assert values(study_row(index), "00100010") == [{"Alphabetic": "DOE^JOHN"}]
        assert index.counts().instances == 1
        assert changes(engine) == [("stored", "1.2.3.1.1.1")]
        assert [s.blob_key for s in index.stored_instances(STUDY)] == ["blobs/1.2.3.1.1.1/v1"]

    def test_other_bytes_replace_the_row_and_return_the_old_blob(self, index: Index) -> None:
        add(index, Spec())
        outcome = add(index, Spec(payload="v2", rows=256))
        assert outcome == AddOutcome("replaced", "blobs/1.2.3.1.1.1/v1")
        [stored] = index.stored_instances(STUDY)
        assert (stored.blob_key, stored.rows) == ("blobs/1.2.3.1.1.1/v2", 256)
        assert json.loads(index.metadata(STUDY)[0])["payload"] == "v2"
        assert index.counts() == IndexCounts(1, 1, 1, 100)
        assert not index.is_referenced("blobs/1.2.3.1.1.1/v1")

    def test_replacing_with_another_sop_class_updates_the_set(self, index: Index) -> None:
        add(index, Spec())
        add(index, Spec(payload="v2", sop_class=SR_DOCUMENT))
        assert values(study_row(index), "00080062") == [SR_DOCUMENT]

    def test_same_sop_uid_in_another_study_is_refused(self, index: Index) -> None:
        add(index, Spec())
        with pytest.raises(ConflictingInstance, match=r"1\.2\.3\.1\.1\.1 is already stored in study 1\.2\.3\.1 "):
            add(index, Spec(study_uid="9.9", series_uid="9.9.1", payload="v2"))
        assert index.counts() == IndexCounts(1, 1, 1, 100)  # the new study row was rolled back

    def test_same_sop_uid_in_another_series_is_refused(self, index: Index) -> None:
        add(index, Spec())
        with pytest.raises(ConflictingInstance, match="SOP Instance UID"):
            add(index, Spec(series_uid="1.2.3.1.9", payload="v2"))

    def test_series_uid_of_another_study_is_refused(self, index: Index) -> None:
        add(index, Spec())
        with pytest.raises(ConflictingInstance, match=r"Series Instance UID 1\.2\.3\.1\.1 .* study 1\.2\.3\.1"):
            add(index, Spec(study_uid="9.9", sop_uid="9.9.1.1"))
        assert index.counts().studies == 1


class TestAddBatch:
    def test_each_item_reports_its_own_outcome(self, index: Index) -> None:
        add(index, Spec())
        items = []
        for spec in (
            Spec(sop_uid="1.2.3.1.1.2"),
            Spec(study_uid="9.9", series_uid="9.9.1"),  # conflicts: 1.2.3.1.1.1 is in 1.2.3.1
            Spec(study_uid="0.1", series_uid="0.1.1", sop_uid="0.1.1.1"),
            Spec(),
        ):
            parsed, sha = make_instance(spec)
            items.append(NewInstance(parsed, f"k/{spec.sop_uid}", 100, sha))
        outcomes = index.add_instances(items)
        assert outcomes[0] == AddOutcome("stored")
        assert isinstance(outcomes[1], ConflictingInstance)
        assert outcomes[2] == AddOutcome("stored")
        assert outcomes[3] == AddOutcome("already_present")
        assert index.counts() == IndexCounts(studies=2, series=2, instances=3, bytes=300)

    def test_a_refused_item_of_a_new_study_leaves_no_row(self, index: Index, engine: Engine) -> None:
        add(index, Spec())
        conflicting = Spec(study_uid="9.9", series_uid="9.9.1", payload="v2")  # SOP UID of study 1.2.3.1
        outcomes = index.add_instances([item(conflicting), item(Spec(sop_uid="1.2.3.1.1.2"))])
        assert isinstance(outcomes[0], ConflictingInstance)
        assert outcomes[1] == AddOutcome("stored")
        assert index.counts() == IndexCounts(studies=1, series=1, instances=2, bytes=200)
        with pytest.raises(NotFound):
            index.stored_instances("9.9")
        assert changes(engine) == [("stored", "1.2.3.1.1.1"), ("stored", "1.2.3.1.1.2")]

    def test_the_same_instance_twice_in_a_batch(self, index: Index) -> None:
        outcomes = index.add_instances([item(Spec()), item(Spec()), item(Spec(payload="v2"))])
        assert outcomes == [
            AddOutcome("stored"),
            AddOutcome("already_present"),
            AddOutcome("replaced", "blobs/1.2.3.1.1.1/v1"),
        ]
        assert index.counts() == IndexCounts(1, 1, 1, 100)
        assert values(study_row(index), "00201208") == [1]

    def test_a_batch_leaves_the_index_as_adding_one_at_a_time_does(
        self, index: Index, engine: Engine, other_index: tuple[Index, Engine]
    ) -> None:
        specs = [
            Spec(),
            Spec(sop_uid="1.2.3.1.1.2", patient_name="NEWER^NAME", series_description="NEWER"),
            Spec(series_uid="1.2.3.1.2", sop_uid="1.2.3.1.2.1", modality="MR", sop_class=MR_IMAGE),
            Spec(series_uid="1.2.3.1.2", sop_uid="1.2.3.1.2.2", modality="SR", sop_class=SR_DOCUMENT),
            Spec(sop_uid="1.2.3.1.1.2", payload="v2", sop_class=SR_DOCUMENT),  # replaces
            Spec(),  # already present
            Spec(study_uid="0.1", series_uid="0.1.1", sop_uid="0.1.1.1", patient_id="P2"),
            Spec(study_uid="0.1", series_uid="0.1.1", sop_uid="0.1.1.2", patient_id="P2", accession="A2"),
            Spec(study_uid="5.5", series_uid="1.2.3.1.1", sop_uid="5.5.1.1"),  # series of another study
            Spec(study_uid="0.1", series_uid="0.1.2", sop_uid="1.2.3.1.2.1"),  # SOP UID of another study
        ]
        batch = index.add_instances([item(spec) for spec in specs])
        other, other_engine = other_index
        # A batch takes its items in Study Instance UID order.
        order = sorted(range(len(specs)), key=lambda i: specs[i].study_uid)
        by_position: dict[int, AddOutcome | ArchiveError] = {}
        for position in order:
            new = item(specs[position])
            try:
                by_position[position] = other.add_instance(
                    new.parsed, blob_key=new.blob_key, size=new.size, sha256=new.sha256
                )
            except ArchiveError as exc:
                by_position[position] = exc
        one_at_a_time = [by_position[position] for position in range(len(specs))]
        assert [repr(outcome) for outcome in batch] == [repr(outcome) for outcome in one_at_a_time]
        assert snapshot(engine) == snapshot(other_engine)


class TestDelete:
    def test_deleting_an_instance_fixes_counts(self, index: Index, engine: Engine) -> None:
        two_series(index)
        assert index.delete(STUDY, "1.2.3.1.1", "1.2.3.1.1.2") == ["blobs/1.2.3.1.1.2/v1"]
        row = study_row(index)
        assert (values(row, "00201206"), values(row, "00201208")) == ([2], [2])
        assert changes(engine)[-1] == ("deleted", "1.2.3.1.1.2")

    def test_deleting_the_last_instance_of_a_series_removes_series_and_modality(self, index: Index) -> None:
        two_series(index)
        assert index.delete(STUDY, "1.2.3.1.2", "1.2.3.1.2.1") == ["blobs/1.2.3.1.2.1/v1"]
        row = study_row(index)
        assert values(row, "00201206") == [1]
        assert values(row, "00080061") == ["CT"]
        assert values(row, "00080062") == ["1.2.840.10008.5.1.4.1.1.2"]
        assert index.counts() == IndexCounts(1, 1, 2, 200)

    def test_deleting_a_series(self, index: Index) -> None:
        two_series(index)
        assert sorted(index.delete(STUDY, "1.2.3.1.1")) == ["blobs/1.2.3.1.1.1/v1", "blobs/1.2.3.1.1.2/v1"]
        assert values(study_row(index), "00080061") == ["MR"]

    def test_deleting_the_study_removes_everything(self, index: Index, engine: Engine) -> None:
        two_series(index)
        assert len(index.delete(STUDY)) == 3
        assert index.counts() == IndexCounts(0, 0, 0, 0)
        assert [kind for kind, _ in changes(engine)] == ["stored"] * 3 + ["deleted"] * 3
        assert list(index.referenced_keys()) == []

    def test_deleting_an_instance_named_without_its_series(self, index: Index, engine: Engine) -> None:
        two_series(index)
        assert index.delete(STUDY, None, "1.2.3.1.2.1") == ["blobs/1.2.3.1.2.1/v1"]
        assert values(study_row(index), "00080061") == ["CT"]
        assert changes(engine)[-1] == ("deleted", "1.2.3.1.2.1")

    def test_deleting_a_series_records_each_instance(self, index: Index, engine: Engine) -> None:
        two_series(index)
        index.delete(STUDY, "1.2.3.1.1")
        assert sorted(changes(engine)[3:]) == [("deleted", "1.2.3.1.1.1"), ("deleted", "1.2.3.1.1.2")]
        assert index.counts() == IndexCounts(1, 1, 1, 100)

    def test_deleting_the_last_instance_removes_the_study(self, index: Index) -> None:
        add(index, Spec())
        index.delete(STUDY, "1.2.3.1.1", "1.2.3.1.1.1")
        assert index.counts() == IndexCounts(0, 0, 0, 0)

    @pytest.mark.parametrize(
        ("uids", "named"),
        [
            (("9.9",), "study 9.9"),
            ((STUDY, "9.9"), "series 9.9 of study"),
            ((STUDY, "1.2.3.1.1", "9.9"), "instance 9.9 of series"),
        ],
    )
    def test_deleting_what_is_not_there_is_not_found(self, index: Index, uids: tuple[str, ...], named: str) -> None:
        add(index, Spec())
        with pytest.raises(NotFound, match=named):
            index.delete(*uids)
        assert index.counts().instances == 1


class TestRetrieve:
    def test_stored_instances_in_series_then_instance_order(self, index: Index) -> None:
        add(index, Spec(series_uid="1.2.3.1.2", series_number=2, sop_uid="1.2.3.1.2.1"))
        add(index, Spec(sop_uid="1.2.3.1.1.9", instance_number=None))
        add(index, Spec(sop_uid="1.2.3.1.1.2", instance_number=2))
        add(index, Spec(sop_uid="1.2.3.1.1.1", instance_number=1))
        assert [s.sop_instance_uid for s in index.stored_instances(STUDY)] == [
            "1.2.3.1.1.1",
            "1.2.3.1.1.2",
            "1.2.3.1.1.9",
            "1.2.3.1.2.1",
        ]
        assert [len(m) > 0 for m in index.metadata(STUDY)] == [True] * 4

    def test_stored_instance_fields(self, index: Index) -> None:
        add(index, Spec(frames=2, rows=10, columns=10, bits=8))
        [stored] = index.stored_instances(STUDY, "1.2.3.1.1", "1.2.3.1.1.1")
        assert stored.frames == (Frame(((1000, 100),)), Frame(((1100, 100),)))
        assert (stored.number_of_frames, stored.rows, stored.columns, stored.bits_allocated) == (2, 10, 10, 8)
        assert (stored.sop_class_uid, stored.size, stored.blob_key) == (
            "1.2.840.10008.5.1.4.1.1.2",
            100,
            "blobs/1.2.3.1.1.1/v1",
        )

    def test_metadata_is_the_stored_bytes(self, index: Index) -> None:
        spec = Spec(patient_name="山田^太郎")
        parsed, sha = make_instance(spec)
        index.add_instance(parsed, blob_key="k", size=1, sha256=sha)
        assert index.metadata(STUDY, "1.2.3.1.1") == [parsed.metadata]

    @pytest.mark.parametrize("uids", [("9.9",), (STUDY, "9.9"), (STUDY, "1.2.3.1.1", "9.9")])
    def test_unknown_uids_are_not_found(self, index: Index, uids: tuple[str, ...]) -> None:
        add(index, Spec())
        with pytest.raises(NotFound, match=r"9\.9"):
            index.metadata(*uids)
        with pytest.raises(NotFound, match=r"9\.9"):
            index.stored_instances(*uids)

    def test_referenced_keys_lists_every_blob(self, index: Index) -> None:
        two_series(index)
        assert sorted(index.referenced_keys()) == [
            "blobs/1.2.3.1.1.1/v1",
            "blobs/1.2.3.1.1.2/v1",
            "blobs/1.2.3.1.2.1/v1",
        ]
        assert index.is_referenced("blobs/1.2.3.1.1.2/v1")
        assert not index.is_referenced("blobs/other")


class TestConcurrentWriters:
    THREADS = 8
    PER_THREAD = 12

    def test_threads_adding_to_one_study_keep_counts_exact(self, index: Index) -> None:
        barrier = threading.Barrier(self.THREADS)

        def work(thread: int) -> list[AddOutcome]:
            barrier.wait()
            outcomes = []
            for i in range(self.PER_THREAD):
                # Threads share series 0..3, so series creation races as well as instance adds.
                series = (thread + i) % 4
                spec = Spec(
                    series_uid=f"1.2.3.1.{series}",
                    sop_uid=f"1.2.3.1.{series}.{thread}.{i}",
                    modality=["CT", "MR", "PT", "SR"][series],
                    series_number=series,
                )
                outcomes.append(add(index, spec))
            return outcomes

        with ThreadPoolExecutor(self.THREADS) as pool:
            results = [o for outcomes in pool.map(work, range(self.THREADS)) for o in outcomes]
        assert all(o.kind == "stored" for o in results)
        total = self.THREADS * self.PER_THREAD
        row = study_row(index)
        assert (values(row, "00201206"), values(row, "00201208")) == ([4], [total])
        assert values(row, "00080061") == ["CT", "MR", "PT", "SR"]
        series = index.search(parse_query(Level.SERIES, [], study_uid=STUDY), max_results=10).rows
        assert sum(values(r, "00201209")[0] for r in series) == total
        assert index.counts() == IndexCounts(1, 4, total, total * 100)

    def test_threads_storing_the_same_instance_store_it_once(self, index: Index) -> None:
        barrier = threading.Barrier(self.THREADS)

        def work(_: int) -> AddOutcome:
            barrier.wait()
            return add(index, Spec(), key="blobs/same")

        with ThreadPoolExecutor(self.THREADS) as pool:
            kinds = sorted(o.kind for o in pool.map(work, range(self.THREADS)))
        assert kinds == ["already_present"] * (self.THREADS - 1) + ["stored"]
        assert index.counts() == IndexCounts(1, 1, 1, 100)

    def test_threads_storing_one_uid_in_two_studies_store_one(self, index: Index) -> None:
        barrier = threading.Barrier(2)

        def work(study: str) -> AddOutcome | ConflictingInstance:
            barrier.wait()
            try:
                return add(index, replace(Spec(), study_uid=study, series_uid=f"{study}.1"))
            except ConflictingInstance as exc:
                return exc

        with ThreadPoolExecutor(2) as pool:
            outcomes = list(pool.map(work, ["1.1", "2.2"]))
        assert sorted(type(o).__name__ for o in outcomes) == ["AddOutcome", "ConflictingInstance"]
        assert index.counts() == IndexCounts(1, 1, 1, 100)


class TestConcurrentProcesses:
    """Workers are processes: the study lock must hold across engines, not only across threads."""

    PROCESSES = 3
    PER_PROCESS = 8

    def test_processes_adding_to_one_study_keep_counts_exact(self, index: Index, database_url: str) -> None:
        work = [
            [
                Spec(
                    series_uid=f"1.2.3.1.{(process + i) % 3}",
                    sop_uid=f"1.2.3.1.{(process + i) % 3}.{process}.{i}",
                    modality=["CT", "MR", "PT"][(process + i) % 3],
                    series_number=(process + i) % 3,
                )
                for i in range(self.PER_PROCESS)
            ]
            for process in range(self.PROCESSES)
        ]
        # Half the processes add one instance per transaction, the others in batches.
        batches = [1 if process % 2 == 0 else 3 for process in range(self.PROCESSES)]
        with ProcessPoolExecutor(self.PROCESSES, mp_context=multiprocessing.get_context("spawn")) as pool:
            kinds = [k for ks in pool.map(add_in_process, [database_url] * self.PROCESSES, work, batches) for k in ks]
        total = self.PROCESSES * self.PER_PROCESS
        assert kinds == ["stored"] * total
        row = study_row(index)
        assert (values(row, "00201206"), values(row, "00201208")) == ([3], [total])
        assert values(row, "00080061") == ["CT", "MR", "PT"]
        series = index.search(parse_query(Level.SERIES, [], study_uid=STUDY), max_results=10).rows
        assert sorted(values(r, "00201209")[0] for r in series) == [self.PER_PROCESS] * 3
        assert index.counts() == IndexCounts(1, 3, total, total * 100)


def counting(engine: Engine) -> list[str]:
    """The SQL statements `engine` runs from now on (BEGIN left out)."""
    statements: list[str] = []

    def record(_connection: object, _cursor: object, statement: str, *_: object) -> None:
        if not statement.startswith("BEGIN"):
            statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    return statements


class TestStatementBudget:
    """The common add (a new instance of a known series) stays a handful of statements."""

    def test_adding_to_a_known_series(self, index: Index, engine: Engine) -> None:
        add(index, Spec())
        statements = counting(engine)
        add(index, Spec(sop_uid="1.2.3.1.1.2"))
        # SQLite: lock, look up, insert, count series and study, record; PostgreSQL: lock, one statement.
        # Both: the blob's journal row removed (storage/index/journal.py).
        assert len(statements) <= (3 if engine.dialect.name == "postgresql" else 7), statements

    def test_a_batch_counts_and_records_once(self, index: Index, engine: Engine) -> None:
        add(index, Spec())
        statements = counting(engine)
        index.add_instances([item(Spec(sop_uid=f"1.2.3.1.1.{n}")) for n in range(2, 12)])
        # The study is locked once; then two statements an instance at most, plus four at the end
        # (counts, changes, the blobs' journal rows).
        assert len(statements) <= 1 + 2 * 10 + 4, statements

    def test_the_postgresql_add_statement_is_short_enough_for_psycopgs_cache(self) -> None:
        # psycopg parses a query longer than this again on every execution (psycopg/_queries.py).
        dialect = create_engine("postgresql+psycopg://").dialect  # no connection: only its compiler
        assert len(str(_LOOKUP_AND_STORE.compile(dialect=dialect))) <= 4096
