"""C-FIND identifier <-> QIDO-RS translation, local matching and response building (no server)."""

from __future__ import annotations

from typing import Any

import pytest
from pydicom.dataset import Dataset
from pynetdicom.sop_class import (  # type: ignore[attr-defined]  # generated at import
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
)

from dimse_bridge.client import DicomWebError, ServerUnreachable
from dimse_bridge.handlers.find import (
    FindStatus,
    InvalidIdentifier,
    LocalMatch,
    build_response,
    matches,
    plan_query,
    search,
    status_for_error,
)

STUDY_ROOT = StudyRootQueryRetrieveInformationModelFind
PATIENT_ROOT = PatientRootQueryRetrieveInformationModelFind


def identifier(level: str, **keys: Any) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


class TestPlanQuery:
    def test_study_level_sends_standard_keys_and_asks_for_return_keys(self) -> None:
        ds = identifier(
            "STUDY",
            PatientName="SMITH*",
            StudyDate="20200101-20201231",
            StudyInstanceUID="",
            ModalitiesInStudy="",
            NumberOfStudyRelatedInstances="",
        )
        query = plan_query(ds, STUDY_ROOT)
        assert query.path == "/studies"
        assert query.params["PatientName"] == "SMITH*"
        assert query.params["StudyDate"] == "20200101-20201231"
        assert set(query.params["includefield"].split(",")) == {
            "PatientName",
            "StudyDate",
            "StudyInstanceUID",
            "ModalitiesInStudy",
            "NumberOfStudyRelatedInstances",
        }
        assert query.local == ()

    def test_uid_list_becomes_comma_separated(self) -> None:
        ds = identifier("STUDY", StudyInstanceUID=["1.2.3", "1.2.4"])
        assert plan_query(ds, STUDY_ROOT).params["StudyInstanceUID"] == "1.2.3,1.2.4"

    def test_lone_asterisk_is_universal_matching_not_a_query_value(self) -> None:
        query = plan_query(identifier("STUDY", PatientID="*"), STUDY_ROOT)
        assert "PatientID" not in query.params

    def test_non_standard_matching_key_is_matched_locally(self) -> None:
        query = plan_query(identifier("STUDY", PatientBirthDate="19700101", PatientSex="F"), STUDY_ROOT)
        assert "PatientBirthDate" not in query.params
        assert {m.tag for m in query.local} == {0x00100030, 0x00100040}

    def test_series_level_with_one_study_uses_the_study_resource(self) -> None:
        ds = identifier("SERIES", StudyInstanceUID="1.2.3", Modality="CT", SeriesInstanceUID="")
        query = plan_query(ds, STUDY_ROOT)
        assert query.path == "/studies/1.2.3/series"
        assert query.params["Modality"] == "CT"
        assert "StudyInstanceUID" not in query.params

    def test_image_level_with_study_and_series_uses_the_series_resource(self) -> None:
        ds = identifier("IMAGE", PatientID="P1", StudyInstanceUID="1.2", SeriesInstanceUID="1.2.3", SOPInstanceUID="")
        query = plan_query(ds, PATIENT_ROOT)
        assert query.path == "/studies/1.2/series/1.2.3/instances"
        assert "PatientID" not in query.params
        assert set(query.parents) == {0x00100020, 0x0020000D, 0x0020000E}

    def test_relational_series_query_goes_to_all_series_with_parent_keys(self) -> None:
        query = plan_query(identifier("SERIES", PatientID="P1", Modality="MR"), PATIENT_ROOT)
        assert query.path == "/series"
        assert query.params["PatientID"] == "P1"

    def test_patient_level_queries_studies_and_asks_for_the_counts(self) -> None:
        query = plan_query(identifier("PATIENT", PatientName="MÜLLER*", NumberOfPatientRelatedStudies=""), PATIENT_ROOT)
        assert query.path == "/studies"
        assert query.params["PatientName"] == "MÜLLER*"
        assert "NumberOfStudyRelatedInstances" in query.params["includefield"]

    @pytest.mark.parametrize(("level", "model"), [("PATIENT", STUDY_ROOT), ("FRAME", PATIENT_ROOT), ("", STUDY_ROOT)])
    def test_level_outside_the_model_is_refused(self, level: str, model: str) -> None:
        with pytest.raises(InvalidIdentifier, match="QueryRetrieveLevel"):
            plan_query(identifier(level), model)


class TestLocalMatching:
    @pytest.mark.parametrize(
        ("vr", "wanted", "value", "expected"),
        [
            ("DA", ("19700101",), "19700101", True),
            ("DA", ("19700101",), "19700102", False),
            ("DA", ("19700101-19701231",), "19700615", True),
            ("DA", ("-19691231",), "19700615", False),
            ("DA", ("19700101-",), "20240615", True),
            ("TM", ("0800-1200",), "101530.25", True),
            ("TM", ("0800-1200",), "130000", False),
            ("LO", ("AB*",), "ABC", True),
            ("LO", ("A?C",), "ABC", True),
            ("LO", ("A?C",), "ABBC", False),
            ("CS", ("F",), "", False),
            ("UI", ("1.2", "1.3"), "1.3", True),
        ],
    )
    def test_matching_follows_ps3_4_c_2_2_2(self, vr: str, wanted: tuple[str, ...], value: str, expected: bool) -> None:
        ds = Dataset()
        ds.add_new(0x00100030, vr, value)
        assert matches(LocalMatch(0x00100030, vr, wanted), ds[0x00100030]) is expected

    def test_absent_attribute_does_not_match(self) -> None:
        assert matches(LocalMatch(0x00100040, "CS", ("F",)), None) is False


class TestBuildResponse:
    def test_response_has_exactly_the_requested_keys_in_utf8(self) -> None:
        request = identifier(
            "STUDY",
            SpecificCharacterSet="ISO_IR 100",
            PatientName="",
            StudyInstanceUID="",
            StudyDescription="",
            RetrieveAETitle="",
        )
        result = Dataset.from_json(
            {
                "00100010": {"vr": "PN", "Value": [{"Alphabetic": "NGUYỄN^VĂN"}]},
                "0020000D": {"vr": "UI", "Value": ["1.2.3"]},
                "00081030": {"vr": "LO", "Value": ["extra"]},
                "00080020": {"vr": "DA", "Value": ["20200101"]},
            }
        )
        query = plan_query(request, STUDY_ROOT)
        response = build_response(request, query, result, {}, "WEBPACS")
        assert response.SpecificCharacterSet == "ISO_IR 192"
        assert {e.keyword for e in response} == {
            "SpecificCharacterSet",
            "QueryRetrieveLevel",
            "RetrieveAETitle",
            "PatientName",
            "StudyDescription",
            "StudyInstanceUID",
        }
        assert str(response.PatientName) == "NGUYỄN^VĂN"
        assert response.StudyDescription == "extra"
        assert response.RetrieveAETitle == "WEBPACS"

    def test_requested_key_without_value_in_the_archive_is_zero_length(self) -> None:
        request = identifier("STUDY", AccessionNumber="", ReferencedStudySequence=[])
        response = build_response(request, plan_query(request, STUDY_ROOT), Dataset(), {}, "WEBPACS")
        assert response.AccessionNumber in ("", None)
        assert len(response.ReferencedStudySequence) == 0

    def test_utf8_name_is_encoded_as_utf8_bytes(self) -> None:
        from pydicom.filebase import DicomBytesIO
        from pydicom.filewriter import write_dataset

        request = identifier("STUDY", PatientName="")
        result = Dataset.from_json({"00100010": {"vr": "PN", "Value": [{"Alphabetic": "MÜLLER^JÖRG"}]}})
        response = build_response(request, plan_query(request, STUDY_ROOT), result, {}, "WEBPACS")
        buffer = DicomBytesIO()
        buffer.is_little_endian, buffer.is_implicit_VR = True, True
        write_dataset(buffer, response)
        assert "MÜLLER^JÖRG".encode() in buffer.getvalue()


class _FakeClient:
    def __init__(self, items: list[dict[str, Any]]) -> None:
        self.items = items
        self.calls: list[tuple[str, dict[str, str]]] = []

    def search(self, path: str, params: dict[str, str]) -> list[dict[str, Any]]:
        self.calls.append((path, params))
        return self.items


def _study(patient_id: str, name: str, series: int, instances: int, sex: str = "F") -> dict[str, Any]:
    return {
        "00100020": {"vr": "LO", "Value": [patient_id]},
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": name}]},
        "00100040": {"vr": "CS", "Value": [sex]},
        "00201206": {"vr": "IS", "Value": [series]},
        "00201208": {"vr": "IS", "Value": [instances]},
    }


class TestSearch:
    def test_patient_level_groups_studies_by_patient_id_and_sums_counts(self) -> None:
        client = _FakeClient([_study("P1", "A^B", 2, 10), _study("P2", "C^D", 1, 5), _study("P1", "A^B", 3, 7)])
        request = identifier(
            "PATIENT",
            PatientID="",
            PatientName="",
            NumberOfPatientRelatedStudies="",
            NumberOfPatientRelatedSeries="",
            NumberOfPatientRelatedInstances="",
        )
        query = plan_query(request, PATIENT_ROOT)
        found = {str(result.PatientID): computed for result, computed in search(client, query)}  # type: ignore[arg-type]
        assert found["P1"] == {0x00201200: 2, 0x00201202: 5, 0x00201204: 17}
        assert found["P2"] == {0x00201200: 1, 0x00201202: 1, 0x00201204: 5}

    def test_locally_matched_key_filters_results(self) -> None:
        client = _FakeClient([_study("P1", "A", 1, 1, sex="F"), _study("P2", "B", 1, 1, sex="M")])
        query = plan_query(identifier("STUDY", PatientSex="M", PatientID=""), STUDY_ROOT)
        assert [str(r.PatientID) for r, _ in search(client, query)] == ["P2"]  # type: ignore[arg-type]


class TestFindStatus:
    @pytest.mark.parametrize(
        ("error", "status"),
        [
            (InvalidIdentifier("x"), FindStatus.ERROR_IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS),
            (DicomWebError("GET", "u", 400, "bad"), FindStatus.ERROR_IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS),
            (DicomWebError("GET", "u", 503, "down"), FindStatus.REFUSED_OUT_OF_RESOURCES),
            (DicomWebError("GET", "u", 401, "token"), FindStatus.ERROR_UNABLE_TO_PROCESS),
            (ServerUnreachable("gone"), FindStatus.REFUSED_OUT_OF_RESOURCES),
        ],
    )
    def test_errors_map_to_table_c_4_1_statuses(self, error: Exception, status: int) -> None:
        assert status_for_error(error) == status  # type: ignore[arg-type]
