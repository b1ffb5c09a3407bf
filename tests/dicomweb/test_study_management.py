"""Study management over HTTP and the CLI (issue #9): edit, merge patients, move series, the recycle bin.

Every test runs against real server processes on SQLite and on PostgreSQL, and checks what clients
see: QIDO-RS results and counts, WADO-RS bytes and metadata, the audit log.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any, Final

import httpx
import pytest
from dicomdata import Patient, SeriesSpec, StudySpec, build_instances, dataset_of, iter_instances, part10
from live_pacs import Pacs, first

if TYPE_CHECKING:
    from collections.abc import Iterator

    from conftest import LiveServer, ServerFactory  # tests/conftest.py

RECYCLE_DAYS: Final = 30
# The crash test's study: big enough that the edit is still rewriting when the server is killed.
CRASH_INSTANCES: Final = 120
CRASH_SIZE: Final = 512  # 512 x 512 x 16 bits: 0.5 MB per instance
WAIT: Final = 120.0  # seconds; a bound on waiting, never a pause

_PATIENT_ID: Final = "00100020"
_PATIENT_NAME: Final = "00100010"
_SOP_UID: Final = "00080018"
_SERIES_COUNT: Final = "00201206"
_INSTANCE_COUNT: Final = "00201208"
_MODALITIES: Final = "00080061"


def webpacs(*args: str, env: dict[str, str]) -> str:
    """`webpacs ARGS`' standard output; it must succeed (tests/conftest.py's helper is not importable here)."""
    done = subprocess.run(
        [sys.executable, "-m", "dicomweb.cli", *args], capture_output=True, text=True, check=False, env=env
    )
    assert done.returncode == 0, f"webpacs {' '.join(args)} failed: {done.stderr}"
    return done.stdout


def _store_study(pacs: Pacs, spec: StudySpec) -> dict[str, bytes]:
    """STOW the study's instances; their bytes by SOP Instance UID."""
    parts = {str(ds.SOPInstanceUID): part10(ds) for ds in build_instances(spec)}
    pacs.store(*parts.values())
    return parts


def _name(row: dict[str, Any]) -> str:
    value = first(row, _PATIENT_NAME)
    return str(value["Alphabetic"]) if value else ""


def _study(pacs: Pacs, study_uid: str) -> dict[str, Any]:
    (row,) = pacs.search("/studies", {"StudyInstanceUID": study_uid, "includefield": "all"})
    return row


def _stored_datasets(pacs: Pacs, study_uid: str) -> list[Any]:
    """Every instance of the study as WADO-RS serves it (as stored), parsed."""
    parts = pacs.retrieve(f"/dicomweb/studies/{study_uid}")
    return [dataset_of(part.content) for part in parts]


def _spec(patient: Patient | None = None, *series: SeriesSpec) -> StudySpec:
    patient = patient or Patient(f"EDIT^{uuid.uuid4().hex[:6].upper()}", f"E-{uuid.uuid4().hex[:10]}")
    return StudySpec(patient, "20240310", f"A{uuid.uuid4().hex[:8]}", series or (SeriesSpec("CT", 2),))


class TestEditStudy:
    def test_queries_retrievals_metadata_and_counts_all_carry_the_new_values(self, pacs: Pacs) -> None:
        spec = _spec(None, SeriesSpec("CT", 2, number=1), SeriesSpec("MR", 1, number=2))
        sent = _store_study(pacs, spec)
        blobs_before = len(pacs.blob_files())
        new_id = f"N-{uuid.uuid4().hex[:10]}"
        changes = {
            "PatientName": "Müller^Anna",
            "PatientID": new_id,
            "PatientBirthDate": "19650412",
            "PatientSex": "F",
            "AccessionNumber": "NEWACC01",
            "StudyDescription": "corrected description",
            "ReferringPhysicianName": "HOUSE^GREGORY",
        }
        response = pacs.http.patch(f"/api/studies/{spec.study_uid}", json=changes)
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["instances"] == 3
        assert answer["after"] == changes
        assert answer["before"]["PatientID"] == spec.patient.id

        assert pacs.search("/studies", {"PatientID": spec.patient.id}) == []
        (row,) = pacs.search("/studies", {"PatientID": new_id})
        assert (_name(row), first(row, "00080050"), first(row, "00100030")) == ("Müller^Anna", "NEWACC01", "19650412")
        assert (first(row, _SERIES_COUNT), first(row, _INSTANCE_COUNT)) == (2, 3)
        assert sorted(row[_MODALITIES]["Value"]) == ["CT", "MR"]
        assert len(pacs.search("/studies", {"PatientName": "muller*"})) >= 1
        for ds in _stored_datasets(pacs, spec.study_uid):
            assert (str(ds.PatientName), ds.PatientID, ds.AccessionNumber) == ("Müller^Anna", new_id, "NEWACC01")
            assert ds.PixelData == dataset_of(sent[str(ds.SOPInstanceUID)]).PixelData
        metadata = pacs.http.get(f"/dicomweb/studies/{spec.study_uid}/metadata").json()
        assert {first(item, _PATIENT_ID) for item in metadata} == {new_id}
        assert {first(item, _SOP_UID) for item in metadata} == set(sent)
        frame = pacs.http.get(f"{pacs.instance_path(next(iter(sent.values())))}/frames/1", headers={"Accept": "*/*"})
        assert frame.status_code == 200
        assert len(pacs.blob_files()) == blobs_before, "the old bytes were not deleted (or new ones are missing)"

    def test_the_audit_log_records_the_values_before_and_after(self, pacs: Pacs) -> None:
        spec = _spec()
        _store_study(pacs, spec)
        response = pacs.http.patch(f"/api/studies/{spec.study_uid}", json={"StudyDescription": "after edit"})
        assert response.status_code == 200, response.text
        events = pacs.http.get("/api/audit", params={"action": "administer", "study_uid": spec.study_uid}).json()
        details = [event["detail"] for event in events if event["detail"].startswith("edited:")]
        assert len(details) == 1, events
        recorded = json.loads(details[0].removeprefix("edited: "))
        assert recorded["after"] == {"StudyDescription": "after edit"}
        assert recorded["before"] == {"StudyDescription": f"CT study of {spec.patient.id}"}

    @pytest.mark.parametrize(
        ("changes", "named"),
        [
            ({"PatientBirthDate": "1965-04-12"}, "PatientBirthDate"),
            ({"PatientSex": "X"}, "PatientSex"),
            ({"AccessionNumber": "A" * 17}, "AccessionNumber"),
            ({"SOPInstanceUID": "1.2.3"}, "SOPInstanceUID"),
            ({}, "at least one attribute"),
        ],
    )
    def test_an_invalid_change_is_a_400_naming_it_and_changes_nothing(
        self, pacs: Pacs, changes: dict[str, str], named: str
    ) -> None:
        spec = _spec()
        sent = _store_study(pacs, spec)
        response = pacs.http.patch(f"/api/studies/{spec.study_uid}", json=changes)
        assert response.status_code == 400, response.text
        assert named in response.json()["detail"]
        assert all(pacs.stored_bytes(data) == data for data in sent.values())

    def test_an_unknown_study_is_a_404(self, pacs: Pacs) -> None:
        response = pacs.http.patch("/api/studies/1.2.3.999", json={"PatientName": "X"})
        assert response.status_code == 404, response.text


class TestMergePatients:
    def test_every_study_of_one_patient_moves_to_the_other_and_a_rerun_changes_nothing(self, pacs: Pacs) -> None:
        tag = uuid.uuid4().hex[:8]
        merged = Patient(f"WRONG^{tag}", f"M-{tag}", "19700101", "M")
        kept = Patient(f"RIGHT^{tag}", f"K-{tag}", "19710202", "F")
        first_study, second_study, kept_study = _spec(merged), _spec(merged), _spec(kept)
        for spec in (first_study, second_study, kept_study):
            _store_study(pacs, spec)
        body = {"from": {"PatientID": merged.id}, "into": {"PatientID": kept.id}}
        response = pacs.http.post("/api/patients/merge", json=body)
        assert response.status_code == 200, response.text
        answer = response.json()
        assert sorted(s["study_uid"] for s in answer["studies"]) == sorted(
            [first_study.study_uid, second_study.study_uid]
        )
        assert answer["patient"]["PatientName"] == kept.name
        assert pacs.search("/studies", {"PatientID": merged.id}) == []
        rows = pacs.search("/studies", {"PatientID": kept.id})
        assert {_name(row) for row in rows} == {kept.name}
        assert len(rows) == 3
        for ds in _stored_datasets(pacs, first_study.study_uid):
            assert (str(ds.PatientName), ds.PatientID, ds.PatientBirthDate, ds.PatientSex) == (
                kept.name,
                kept.id,
                "19710202",
                "F",
            )
        again = pacs.http.post("/api/patients/merge", json=body)
        assert again.status_code == 200, again.text
        assert again.json()["studies"] == []

    def test_merging_into_a_patient_the_archive_lacks_is_a_404(self, pacs: Pacs) -> None:
        spec = _spec()
        _store_study(pacs, spec)
        body = {"from": {"PatientID": spec.patient.id}, "into": {"PatientID": f"NOBODY-{uuid.uuid4().hex[:6]}"}}
        response = pacs.http.post("/api/patients/merge", json=body)
        assert response.status_code == 404, response.text
        assert "NOBODY" in response.json()["detail"]


class TestMoveSeries:
    def test_the_series_changes_study_with_its_uids_kept_and_both_counts_right(self, pacs: Pacs) -> None:
        moved, stays = SeriesSpec("MR", 2, number=1), SeriesSpec("CT", 1, number=2)
        source = _spec(None, moved, stays)
        target = _spec(None, SeriesSpec("CT", 1))
        sent = _store_study(pacs, source)
        _store_study(pacs, target)
        response = pacs.http.post(
            f"/api/studies/{source.study_uid}/series/{moved.series_uid}/move", json={"to_study": target.study_uid}
        )
        assert response.status_code == 200, response.text
        assert response.json()["instances"] == 2

        source_row, target_row = _study(pacs, source.study_uid), _study(pacs, target.study_uid)
        assert (first(source_row, _SERIES_COUNT), first(source_row, _INSTANCE_COUNT)) == (1, 1)
        assert (first(target_row, _SERIES_COUNT), first(target_row, _INSTANCE_COUNT)) == (2, 3)
        assert source_row[_MODALITIES]["Value"] == ["CT"]
        assert sorted(target_row[_MODALITIES]["Value"]) == ["CT", "MR"]
        listed = pacs.search(f"/studies/{target.study_uid}/series/{moved.series_uid}/instances")
        moved_uids = {uid for uid, data in sent.items() if dataset_of(data).SeriesInstanceUID == moved.series_uid}
        assert {first(row, _SOP_UID) for row in listed} == moved_uids
        parts = pacs.retrieve(f"/dicomweb/studies/{target.study_uid}/series/{moved.series_uid}")
        for part in parts:
            ds = dataset_of(part.content)
            assert (ds.StudyInstanceUID, ds.PatientID, str(ds.PatientName)) == (
                target.study_uid,
                target.patient.id,
                target.patient.name,
            )
            assert ds.PixelData == dataset_of(sent[str(ds.SOPInstanceUID)]).PixelData
        old = pacs.http.get(
            f"/dicomweb/studies/{source.study_uid}/series/{moved.series_uid}", headers={"Accept": "*/*"}
        )
        assert old.status_code == 404

    def test_moving_the_only_series_removes_the_emptied_study(self, pacs: Pacs) -> None:
        source, target = _spec(), _spec()
        _store_study(pacs, source)
        _store_study(pacs, target)
        series = source.series[0].series_uid
        response = pacs.http.post(
            f"/api/studies/{source.study_uid}/series/{series}/move", json={"to_study": target.study_uid}
        )
        assert response.status_code == 200, response.text
        assert pacs.search("/studies", {"StudyInstanceUID": source.study_uid}) == []
        assert first(_study(pacs, target.study_uid), _INSTANCE_COUNT) == 4

    def test_moving_into_the_same_study_is_a_409_and_to_an_unknown_one_a_404(self, pacs: Pacs) -> None:
        spec = _spec()
        _store_study(pacs, spec)
        path = f"/api/studies/{spec.study_uid}/series/{spec.series[0].series_uid}/move"
        assert pacs.http.post(path, json={"to_study": spec.study_uid}).status_code == 409
        assert pacs.http.post(path, json={"to_study": "1.2.3.999"}).status_code == 404
        assert first(_study(pacs, spec.study_uid), _INSTANCE_COUNT) == 2


class TestPermissions:
    def test_a_viewer_may_not_edit_merge_move_or_see_the_recycle_bin(self, pacs: Pacs) -> None:
        spec = _spec()
        _store_study(pacs, spec)
        viewer = pacs.auth(pacs.mint_token("viewer"))
        series = spec.series[0].series_uid
        answers = [
            pacs.http.patch(f"/api/studies/{spec.study_uid}", json={"PatientName": "X"}, headers=viewer),
            pacs.http.post(
                "/api/patients/merge",
                json={"from": {"PatientID": "A"}, "into": {"PatientID": "B"}},
                headers=viewer,
            ),
            pacs.http.post(
                f"/api/studies/{spec.study_uid}/series/{series}/move", json={"to_study": "1.2.3"}, headers=viewer
            ),
            pacs.http.get("/api/recycle-bin", headers=viewer),
            pacs.http.post(f"/api/recycle-bin/{spec.study_uid}/restore", headers=viewer),
        ]
        assert [answer.status_code for answer in answers] == [403] * 5

    def test_a_manager_may_edit_and_a_filtered_manager_finds_no_foreign_study(self, pacs: Pacs) -> None:
        spec = _spec()
        _store_study(pacs, spec)
        manager = pacs.auth(pacs.log_in_new_user("manager"))
        edited = pacs.http.patch(
            f"/api/studies/{spec.study_uid}", json={"StudyDescription": "by a manager"}, headers=manager
        )
        assert edited.status_code == 200, edited.text
        filtered = pacs.auth(pacs.log_in_new_user("manager", {"InstitutionName": ["ST. ELSEWHERE"]}))
        foreign = pacs.http.patch(f"/api/studies/{spec.study_uid}", json={"StudyDescription": "no"}, headers=filtered)
        assert foreign.status_code == 404, foreign.text
        series = spec.series[0].series_uid
        moved = pacs.http.post(
            f"/api/studies/{spec.study_uid}/series/{series}/move", json={"to_study": "1.2.3"}, headers=filtered
        )
        assert moved.status_code == 404
        merged = pacs.http.post(
            "/api/patients/merge", json={"from": {"PatientID": "A"}, "into": {"PatientID": "B"}}, headers=filtered
        )
        assert merged.status_code == 403
        assert {ds.StudyDescription for ds in _stored_datasets(pacs, spec.study_uid)} == {"by a manager"}


# --- the recycle bin: a server with WEBPACS_RECYCLE_DAYS --------------------------------------------------


@pytest.fixture(scope="module")
def recycling(backend: str, live_servers: ServerFactory) -> Iterator[tuple[Pacs, dict[str, str]]]:
    """A server whose deletions wait RECYCLE_DAYS in the recycle bin; its client and the CLI's environment."""
    server = live_servers.start(backend, env={"WEBPACS_RECYCLE_DAYS": str(RECYCLE_DAYS)})
    pacs = Pacs(server.url, server.token, server.data_dir, backend)
    env = {**os.environ, "WEBPACS_DATA_DIR": str(server.data_dir), "WEBPACS_RECYCLE_DAYS": str(RECYCLE_DAYS)}
    url = live_servers.database_url(server)
    if url is not None:
        env["WEBPACS_DATABASE_URL"] = url
    yield pacs, env
    pacs.close()
    live_servers.stop(server)


class TestRecycleBin:
    def test_a_deleted_study_is_hidden_listed_and_restored_as_it_was(
        self, recycling: tuple[Pacs, dict[str, str]]
    ) -> None:
        pacs, _ = recycling
        spec = _spec()
        sent = _store_study(pacs, spec)
        deleted = pacs.http.delete(f"/dicomweb/studies/{spec.study_uid}")
        assert deleted.status_code == 200, deleted.text
        assert deleted.json() == {"deleted_instances": 2}
        assert pacs.search("/studies", {"StudyInstanceUID": spec.study_uid}) == []
        assert pacs.search("/instances", {"StudyInstanceUID": spec.study_uid}) == []
        assert pacs.search("/series", {"PatientID": spec.patient.id}) == []
        for data in sent.values():
            assert pacs.http.get(pacs.instance_path(data), headers={"Accept": "*/*"}).status_code == 404
        assert pacs.http.get(f"/dicomweb/studies/{spec.study_uid}/metadata").status_code == 404
        assert pacs.http.patch(f"/api/studies/{spec.study_uid}", json={"PatientName": "X"}).status_code == 404
        assert pacs.http.delete(f"/dicomweb/studies/{spec.study_uid}").status_code == 404
        events = pacs.http.get("/api/audit", params={"action": "delete", "study_uid": spec.study_uid}).json()
        assert any(event["detail"] == f"to the recycle bin for {RECYCLE_DAYS} day(s)" for event in events), events
        listed = {row["study_uid"]: row for row in pacs.http.get("/api/recycle-bin").json()}
        assert listed[spec.study_uid]["instances"] == 2
        assert listed[spec.study_uid]["patient_id"] == spec.patient.id

        restored = pacs.http.post(f"/api/recycle-bin/{spec.study_uid}/restore")
        assert restored.status_code == 204, restored.text
        assert first(_study(pacs, spec.study_uid), _INSTANCE_COUNT) == 2
        assert all(pacs.stored_bytes(data) == data for data in sent.values())
        assert spec.study_uid not in {row["study_uid"] for row in pacs.http.get("/api/recycle-bin").json()}

    def test_the_purge_removes_only_expired_studies_index_then_bytes(
        self, recycling: tuple[Pacs, dict[str, str]]
    ) -> None:
        pacs, env = recycling
        spec = _spec()
        sent = _store_study(pacs, spec)
        keys = {path.name for path in pacs.blob_files()}
        assert pacs.http.delete(f"/dicomweb/studies/{spec.study_uid}").status_code == 200
        assert webpacs("study", "purge", env=env).strip() == ""  # deleted just now: kept 30 days
        assert spec.study_uid in {row["study_uid"] for row in pacs.http.get("/api/recycle-bin").json()}
        assert spec.study_uid in webpacs("study", "purge", "--days", "0", env=env).split()
        assert spec.study_uid not in {row["study_uid"] for row in pacs.http.get("/api/recycle-bin").json()}
        assert pacs.http.post(f"/api/recycle-bin/{spec.study_uid}/restore").status_code == 404
        left = {path.name for path in pacs.blob_files()}
        assert not any(name.startswith(sop) for name in left for sop in sent), "the purged study's bytes remain"
        assert left <= keys

    def test_a_recycled_study_can_be_purged_at_once_over_http(self, recycling: tuple[Pacs, dict[str, str]]) -> None:
        pacs, _ = recycling
        spec = _spec()
        _store_study(pacs, spec)
        assert pacs.http.delete(f"/dicomweb/studies/{spec.study_uid}").status_code == 200
        purged = pacs.http.delete(f"/api/recycle-bin/{spec.study_uid}")
        assert purged.status_code == 200, purged.text
        assert purged.json() == {"study_uid": spec.study_uid, "deleted_instances": 2}
        assert pacs.http.delete(f"/api/recycle-bin/{spec.study_uid}").status_code == 404
        events = pacs.http.get("/api/audit", params={"action": "delete", "study_uid": spec.study_uid}).json()
        assert any("purged" in event["detail"] for event in events), events

    def test_the_cli_deletes_to_the_bin_and_restores(self, recycling: tuple[Pacs, dict[str, str]]) -> None:
        pacs, env = recycling
        spec = _spec()
        _store_study(pacs, spec)
        assert "recycle bin" in webpacs("study", "delete", spec.study_uid, env=env)
        assert pacs.search("/studies", {"StudyInstanceUID": spec.study_uid}) == []
        assert spec.study_uid in webpacs("study", "recycle-bin", env=env)
        webpacs("study", "restore", spec.study_uid, env=env)
        assert first(_study(pacs, spec.study_uid), _INSTANCE_COUNT) == 2

    def test_the_cli_edits_a_study(self, recycling: tuple[Pacs, dict[str, str]]) -> None:
        pacs, env = recycling
        spec = _spec()
        _store_study(pacs, spec)
        out = webpacs("study", "edit", spec.study_uid, "--set", "StudyDescription=from the cli", env=env)
        assert json.loads(out)["after"] == {"StudyDescription": "from the cli"}
        assert {ds.StudyDescription for ds in _stored_datasets(pacs, spec.study_uid)} == {"from the cli"}


# --- a crash in the middle of an edit ---------------------------------------------------------------


@pytest.fixture
def crash_server(backend: str, live_servers: ServerFactory) -> Iterator[LiveServer]:
    started = live_servers.start(backend)
    yield started
    live_servers.stop(started)


class _BackgroundEdit:
    """PATCH /api/studies/{uid} from a thread: the server is killed under it."""

    def __init__(self, pacs: Pacs, study_uid: str, changes: dict[str, str]) -> None:
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(pacs, study_uid, changes), daemon=True)
        self._thread.start()

    def _run(self, pacs: Pacs, study_uid: str, changes: dict[str, str]) -> None:
        try:
            pacs.http.patch(f"/api/studies/{study_uid}", json=changes)
        except httpx.HTTPError as exc:  # the server was killed under it: expected
            self.error = exc

    def join(self) -> None:
        self._thread.join(WAIT)
        assert not self._thread.is_alive(), "the edit request did not end after the server was killed"


class TestKilledDuringALargeEdit:
    def test_the_study_is_entirely_old_or_entirely_new_and_no_orphan_remains(
        self, crash_server: LiveServer, backend: str, live_servers: ServerFactory
    ) -> None:
        pacs = Pacs(crash_server.url, crash_server.token, crash_server.data_dir, backend)
        spec = _spec(None, SeriesSpec("CT", CRASH_INSTANCES, size=CRASH_SIZE))
        sent: dict[str, bytes] = {}
        for ds in iter_instances(spec):
            data = part10(ds)
            sent[str(ds.SOPInstanceUID)] = data
            pacs.store(data)
        stored = {path.name for path in pacs.blob_files()}
        edit = _BackgroundEdit(pacs, spec.study_uid, {"PatientName": "CRASHED^EDIT"})
        # Kill once a third of the new bytes are written: mid-rewrite, well before the switch.
        deadline = time.monotonic() + WAIT
        while len(pacs.blob_files()) < len(stored) + CRASH_INSTANCES // 3:
            assert time.monotonic() < deadline, "the edit wrote no new bytes"
            assert crash_server.process.poll() is None
        crash_server.process.send_signal(signal.SIGKILL)
        crash_server.process.wait(WAIT)
        edit.join()
        pacs.close()
        assert len(pacs.blob_files()) > len(stored), "the crash left no new bytes: the test proves nothing"

        restarted = live_servers.restart(crash_server)
        pacs = Pacs(restarted.url, restarted.token, restarted.data_dir, backend)
        metadata = pacs.http.get(f"/dicomweb/studies/{spec.study_uid}/metadata").json()
        names = {first(item, _PATIENT_NAME)["Alphabetic"] for item in metadata}
        assert len(names) == 1, f"a mix of old and new: {names}"
        (name,) = names
        assert name in {spec.patient.name, "CRASHED^EDIT"}
        assert {first(item, _SOP_UID) for item in metadata} == set(sent)
        row = _study(pacs, spec.study_uid)
        assert (_name(row), first(row, _INSTANCE_COUNT)) == (name, CRASH_INSTANCES)
        for ds in _stored_datasets(pacs, spec.study_uid):
            assert str(ds.PatientName) == name
        if name == spec.patient.name:
            assert {path.name for path in pacs.blob_files()} == stored, "orphaned new bytes survived the restart"
        else:
            assert len(pacs.blob_files()) == CRASH_INSTANCES
        pacs.close()
