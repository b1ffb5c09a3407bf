"""DELETE of studies, series and instances (admin only): gone from QIDO-RS and WADO-RS, counts fixed,
blob files removed from the data dir."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from dicomdata import Patient, SeriesSpec, StudySpec, build_instances, new_uid, part10, uids_of
from live_pacs import first, tag_values

if TYPE_CHECKING:
    from pathlib import Path

    from live_pacs import Pacs

STUDY_SERIES, STUDY_INSTANCES, SERIES_INSTANCES = "00201206", "00201208", "00201209"
JSON = {"Accept": "application/dicom+json"}


@pytest.fixture
def study(pacs: Pacs) -> tuple[StudySpec, list[bytes]]:
    """A stored study of two series (3 + 2 instances)."""
    spec = StudySpec(
        Patient("DELETE^ME", f"D-{new_uid()[-10:]}"),
        "20240101",
        "DEL0001",
        (SeriesSpec("CT", 3, 1), SeriesSpec("MR", 2, 2)),
    )
    files = [part10(ds) for ds in build_instances(spec)]
    pacs.store(*files)
    return spec, files


def _blobs_of(pacs: Pacs, sop_uid: str) -> list[Path]:
    return [path for path in pacs.blob_files() if path.name.startswith(sop_uid + ".")]


def _assert_gone(pacs: Pacs, data: bytes) -> None:
    sop = uids_of(data)[2]
    assert not pacs.has_instance(sop)
    path = pacs.instance_path(data)
    assert (
        pacs.http.get(
            path, headers={"Accept": "multipart/related; type=application/dicom; transfer-syntax=*"}
        ).status_code
        == 404
    )
    assert pacs.http.get(path + "/metadata", headers=JSON).status_code == 404
    assert not _blobs_of(pacs, sop), "the blob file of a deleted instance is still in the data dir"


def _assert_present(pacs: Pacs, data: bytes) -> None:
    assert pacs.stored_bytes(data) == data
    assert len(_blobs_of(pacs, uids_of(data)[2])) == 1


class TestDeleteInstance:
    def test_the_instance_goes_and_the_counts_follow(self, pacs: Pacs, study: tuple[StudySpec, list[bytes]]) -> None:
        spec, files = study
        doomed, *kept = files
        response = pacs.http.delete(pacs.instance_path(doomed))
        assert response.status_code in (200, 204), response.text
        _assert_gone(pacs, doomed)
        for data in kept:
            _assert_present(pacs, data)
        (row,) = pacs.search("/studies", {"StudyInstanceUID": spec.study_uid})
        assert first(row, STUDY_INSTANCES) == 4
        assert first(row, STUDY_SERIES) == 2
        series = {
            first(item, "0020000E"): first(item, SERIES_INSTANCES)
            for item in pacs.search(f"/studies/{spec.study_uid}/series")
        }
        assert series == {spec.series[0].series_uid: 2, spec.series[1].series_uid: 2}

    def test_the_last_instance_takes_its_series_and_study_along(self, pacs: Pacs) -> None:
        spec = StudySpec(Patient("DELETE^LAST", f"D-{new_uid()[-10:]}"), "20240102", "DEL0002", (SeriesSpec("CT", 1),))
        (data,) = [part10(ds) for ds in build_instances(spec)]
        pacs.store(data)
        assert pacs.http.delete(pacs.instance_path(data)).status_code in (200, 204)
        assert pacs.search("/studies", {"StudyInstanceUID": spec.study_uid}) == []
        assert pacs.search("/series", {"SeriesInstanceUID": spec.series[0].series_uid}) == []


class TestDeleteSeries:
    def test_the_series_goes_and_the_study_keeps_the_other(
        self, pacs: Pacs, study: tuple[StudySpec, list[bytes]]
    ) -> None:
        spec, files = study
        gone_series = spec.series[0].series_uid
        response = pacs.http.delete(f"/dicomweb/studies/{spec.study_uid}/series/{gone_series}")
        assert response.status_code in (200, 204), response.text
        for data in files:
            if uids_of(data)[1] == gone_series:
                _assert_gone(pacs, data)
            else:
                _assert_present(pacs, data)
        (row,) = pacs.search("/studies", {"StudyInstanceUID": spec.study_uid})
        assert (first(row, STUDY_SERIES), first(row, STUDY_INSTANCES)) == (1, 2)
        assert tag_values(row, "00080061") == ["MR"]
        assert (
            pacs.http.get(
                f"/dicomweb/studies/{spec.study_uid}/series/{gone_series}", headers={"Accept": "*/*"}
            ).status_code
            == 404
        )


class TestDeleteStudy:
    def test_the_study_goes_with_every_instance_and_blob(
        self, pacs: Pacs, study: tuple[StudySpec, list[bytes]]
    ) -> None:
        spec, files = study
        studies_before = len(pacs.search("/studies"))
        response = pacs.http.delete(f"/dicomweb/studies/{spec.study_uid}")
        assert response.status_code in (200, 204), response.text
        for data in files:
            _assert_gone(pacs, data)
        assert len(pacs.search("/studies")) == studies_before - 1
        assert pacs.search("/studies", {"PatientID": spec.patient.id}) == []
        assert pacs.http.get(f"/dicomweb/studies/{spec.study_uid}", headers={"Accept": "*/*"}).status_code == 404
        assert pacs.http.get(f"/dicomweb/studies/{spec.study_uid}/metadata", headers=JSON).status_code == 404

    def test_a_deleted_study_can_be_stored_again(self, pacs: Pacs, study: tuple[StudySpec, list[bytes]]) -> None:
        spec, files = study
        assert pacs.http.delete(f"/dicomweb/studies/{spec.study_uid}").status_code in (200, 204)
        pacs.store(*files)
        for data in files:
            _assert_present(pacs, data)


class TestDeleteNothing:
    @pytest.mark.parametrize("suffix", ["", "/series/1.2.3", "/series/1.2.3/instances/1.2.3.4"])
    def test_unknown_targets_give_404_and_change_nothing(
        self, pacs: Pacs, study: tuple[StudySpec, list[bytes]], suffix: str
    ) -> None:
        counts, blobs = pacs.counts(), pacs.blob_files()
        response = pacs.http.delete(f"/dicomweb/studies/{new_uid()}{suffix}")
        assert response.status_code == 404, response.text
        assert pacs.counts() == counts
        assert pacs.blob_files() == blobs

    def test_a_series_under_the_wrong_study_is_not_deleted(
        self, pacs: Pacs, study: tuple[StudySpec, list[bytes]]
    ) -> None:
        spec, files = study
        other = StudySpec(
            Patient("DELETE^OTHER", f"D-{new_uid()[-10:]}"), "20240103", "DEL0003", (SeriesSpec("CT", 1),)
        )
        pacs.store(*(part10(ds) for ds in build_instances(other)))
        response = pacs.http.delete(f"/dicomweb/studies/{other.study_uid}/series/{spec.series[0].series_uid}")
        assert response.status_code == 404
        for data in files:
            _assert_present(pacs, data)
