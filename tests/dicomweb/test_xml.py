"""DICOM XML answers (PS3.18 §8.7.3.2, PS3.19 Annex A): QIDO-RS results and WADO-RS metadata as
multipart/related application/dicom+xml, equal to the DICOM JSON answers attribute by attribute.

One server of its own (SQLite only: the XML is made at the edge, after the index answered), with a small
maximum of results so that the truncation warning can be seen.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import httpx
import pytest
from dicomdata import (
    Patient,
    SeriesSpec,
    StudySpec,
    build_instances,
    bundled,
    multipart_body,
    part10,
    split_multipart,
    uids_of,
)
from native_dicom import comparable, read_native_dicom_model, schema_violations

if TYPE_CHECKING:
    from collections.abc import Iterator

    from conftest import ServerFactory  # tests/conftest.py

XML_ACCEPT: Final = 'multipart/related; type="application/dicom+xml"'
DICOM_XML: Final = "application/dicom+xml"
DICOM_JSON: Final = "application/dicom+json"
MAX_RESULTS: Final = 5
STUDY_UID, SERIES_UID, SOP_UID = "0020000D", "0020000E", "00080018"
PATIENT_ID: Final = "XML-TESTS"


@dataclass(frozen=True)
class Archive:
    """What the module stored: a generated study (two series, six instances) and bundled files."""

    url: str
    http: httpx.Client
    study: str
    series: str
    sop: str
    bundled: dict[str, tuple[str, str, str]]  # file name -> (study, series, SOP instance) UIDs


@pytest.fixture(scope="module")
def archive(live_servers: ServerFactory) -> Iterator[Archive]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WEBPACS_MAX_RESULTS", str(MAX_RESULTS))
        server = live_servers.start("sqlite")
    http = server.client()
    try:
        spec = StudySpec(
            Patient("XML^TESTS^^DR^JR", PATIENT_ID),
            "20240517",
            "XML0001",
            (SeriesSpec("CT", 4, 1, size=16), SeriesSpec("SR", 2, 2)),
            description="XML & <markup> study",
        )
        parts = [part10(ds) for ds in build_instances(spec)]
        # CT_small: private attributes, a sequence, bulk data; chrH31: a name in three groups.
        names = ("CT_small.dcm", "chrH31.dcm", "chrX1.dcm")
        files = {name: bundled(name) for name in names}
        body, content_type = multipart_body([*parts, *files.values()])
        stored = http.post("/dicomweb/studies", content=body, headers={"Content-Type": content_type})
        assert stored.status_code == 200, stored.text
        study, series, sop = uids_of(parts[0])
        yield Archive(server.url, http, study, series, sop, {name: uids_of(data) for name, data in files.items()})
    finally:
        http.close()
        live_servers.stop(server)


def get(archive: Archive, path: str, accept: str | None, params: dict[str, str] | None = None) -> httpx.Response:
    headers = {"Accept": accept} if accept is not None else {}
    return archive.http.get("/dicomweb" + path, headers=headers, params=params)


def as_json(archive: Archive, path: str, params: dict[str, str] | None = None) -> list[dict[str, Any]]:
    response = get(archive, path, DICOM_JSON, params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith(DICOM_JSON)
    answer: list[dict[str, Any]] = response.json()
    return answer


def as_xml(
    archive: Archive, path: str, params: dict[str, str] | None = None, accept: str = XML_ACCEPT
) -> list[dict[str, Any]]:
    """The XML answer's documents read back as DICOM JSON (checking the multipart and each part)."""
    response = get(archive, path, accept, params)
    assert response.status_code == 200, response.text
    content_type = response.headers["content-type"]
    assert content_type.startswith(f'multipart/related; type="{DICOM_XML}"'), content_type
    parts = split_multipart(response.content, content_type)
    assert all(part.content_type == DICOM_XML for part in parts), [part.headers for part in parts]
    assert all(part.content.startswith(b'<?xml version="1.0" encoding="UTF-8"?>') for part in parts)
    return [read_native_dicom_model(part.content) for part in parts]


def by_uid(results: list[dict[str, Any]], tag: str) -> dict[str, dict[str, Any]]:
    keyed = {str(result[tag]["Value"][0]): comparable(result) for result in results}
    assert len(keyed) == len(results)
    return keyed


def search_paths(archive: Archive) -> list[tuple[str, dict[str, str], str]]:
    study, series = archive.study, archive.series
    return [
        ("/studies", {"PatientID": PATIENT_ID}, STUDY_UID),
        ("/studies", {"PatientID": PATIENT_ID, "includefield": "all"}, STUDY_UID),
        ("/studies", {"StudyInstanceUID": archive.bundled["chrH31.dcm"][0]}, STUDY_UID),
        (f"/studies/{study}/series", {}, SERIES_UID),
        ("/series", {"StudyInstanceUID": archive.bundled["CT_small.dcm"][0], "includefield": "all"}, SERIES_UID),
        (f"/studies/{study}/series/{series}/instances", {"includefield": "all"}, SOP_UID),
        (f"/studies/{study}/instances", {"Modality": "SR"}, SOP_UID),
        ("/instances", {"StudyInstanceUID": archive.bundled["CT_small.dcm"][0], "includefield": "all"}, SOP_UID),
    ]


class TestSearchInXml:
    @pytest.mark.parametrize("index", range(8))
    def test_results_equal_the_json_results_attribute_by_attribute(self, archive: Archive, index: int) -> None:
        path, params, key = search_paths(archive)[index]
        json_results = as_json(archive, path, params)
        assert json_results, (path, params)
        assert by_uid(as_xml(archive, path, params), key) == by_uid(json_results, key)

    def test_each_result_is_valid_against_the_ps3_19_schema(self, archive: Archive) -> None:
        response = get(archive, "/studies", XML_ACCEPT, {"PatientID": PATIENT_ID, "includefield": "all"})
        (part,) = split_multipart(response.content, response.headers["content-type"])
        assert schema_violations(part.content) == []

    def test_a_name_in_three_groups_keeps_them(self, archive: Archive) -> None:
        (result,) = as_xml(archive, "/studies", {"StudyInstanceUID": archive.bundled["chrH31.dcm"][0]})
        assert result["00100010"]["Value"] == [
            {"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎", "Phonetic": "やまだ^たろう"}
        ]

    def test_no_match_is_an_empty_multipart_body(self, archive: Archive) -> None:
        assert as_xml(archive, "/studies", {"PatientID": "NOBODY-HAS-THIS-ID"}) == []

    def test_ignored_matching_keys_give_the_same_warning_as_json(self, archive: Archive) -> None:
        params = {"PatientID": PATIENT_ID, "Manufacturer": "webpacs tests"}
        xml, json = (get(archive, "/studies", accept, params) for accept in (XML_ACCEPT, DICOM_JSON))
        assert "Manufacturer" in xml.headers["warning"]
        assert xml.headers["warning"] == json.headers["warning"]

    def test_truncated_results_give_the_same_warning_as_json(self, archive: Archive) -> None:
        path = f"/studies/{archive.study}/instances"
        xml, json = (get(archive, path, accept) for accept in (XML_ACCEPT, DICOM_JSON))
        assert "exceeded the maximum" in xml.headers["warning"]
        assert xml.headers["warning"] == json.headers["warning"]
        parts = split_multipart(xml.content, xml.headers["content-type"])
        assert len(parts) == len(json.json()) == MAX_RESULTS


class TestMetadataInXml:
    @pytest.mark.parametrize("level", ["study", "series", "instance"])
    def test_metadata_equals_the_json_metadata_attribute_by_attribute(self, archive: Archive, level: str) -> None:
        study, series, sop = archive.study, archive.series, archive.sop
        path = {
            "study": f"/studies/{study}/metadata",
            "series": f"/studies/{study}/series/{series}/metadata",
            "instance": f"/studies/{study}/series/{series}/instances/{sop}/metadata",
        }[level]
        json_results = as_json(archive, path)
        assert len(json_results) == {"study": 6, "series": 4, "instance": 1}[level]
        assert by_uid(as_xml(archive, path), SOP_UID) == by_uid(json_results, SOP_UID)

    @pytest.mark.parametrize("name", ["CT_small.dcm", "chrH31.dcm", "chrX1.dcm"])
    def test_private_attributes_sequences_and_names_of_real_files(self, archive: Archive, name: str) -> None:
        study, series, sop = archive.bundled[name]
        path = f"/studies/{study}/series/{series}/instances/{sop}/metadata"
        (xml,), (json,) = as_xml(archive, path), as_json(archive, path)
        assert comparable(xml) == comparable(json)

    def test_bulk_data_is_referenced_by_the_same_absolute_uri_as_in_json(self, archive: Archive) -> None:
        study, series, sop = archive.bundled["CT_small.dcm"]
        path = f"/studies/{study}/series/{series}/instances/{sop}/metadata"
        (xml,), (json,) = as_xml(archive, path), as_json(archive, path)
        uri = xml["7FE00010"]["BulkDataURI"]
        assert uri == json["7FE00010"]["BulkDataURI"]
        assert uri.startswith(archive.url + "/dicomweb/studies/")
        assert archive.http.get(uri).status_code == 200

    def test_private_data_elements_name_their_creator(self, archive: Archive) -> None:
        study, series, sop = archive.bundled["CT_small.dcm"]
        response = get(archive, f"/studies/{study}/series/{series}/instances/{sop}/metadata", XML_ACCEPT)
        (part,) = split_multipart(response.content, response.headers["content-type"])
        assert b'tag="00090001" vr="' in part.content
        assert b'privateCreator="GEMS_IDEN_01"' in part.content
        assert schema_violations(part.content) == []


class TestNegotiation:
    @pytest.mark.parametrize(
        ("accept", "xml"),
        [
            (None, False),
            ("*/*", False),
            (DICOM_JSON, False),
            (XML_ACCEPT, True),
            (DICOM_XML, True),  # a bare application/dicom+xml is answered as multipart
            ("multipart/related", True),
            (f"{DICOM_JSON}; q=0.5, {XML_ACCEPT}; q=0.9", True),
            (f"{DICOM_JSON}; q=0.9, {XML_ACCEPT}; q=0.5", False),
            (f"*/*; q=0.1, {DICOM_XML}", True),
            (f"{DICOM_JSON}; q=0, */*", True),  # DICOM JSON refused: the other representation
            ("text/html, application/xhtml+xml, */*; q=0.8", False),  # a browser
        ],
    )
    @pytest.mark.parametrize("resource", ["search", "metadata"])
    def test_q_values_choose_xml_or_json(self, archive: Archive, accept: str | None, xml: bool, resource: str) -> None:
        path = "/studies" if resource == "search" else f"/studies/{archive.study}/metadata"
        response = get(archive, path, accept, {"PatientID": PATIENT_ID} if resource == "search" else None)
        assert response.status_code == 200, response.text
        expected = f'multipart/related; type="{DICOM_XML}"' if xml else DICOM_JSON
        assert response.headers["content-type"].startswith(expected)

    @pytest.mark.parametrize("resource", ["search", "metadata"])
    def test_application_json_is_answered_as_such_when_asked(self, archive: Archive, resource: str) -> None:
        path = "/studies" if resource == "search" else f"/studies/{archive.study}/metadata"
        response = get(archive, path, "application/json")
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("application/json")

    @pytest.mark.parametrize(
        "accept", ["text/html", "image/jpeg", f"{DICOM_XML}; q=0", 'multipart/related; type="application/dicom"']
    )
    @pytest.mark.parametrize("resource", ["search", "metadata"])
    def test_what_cannot_be_served_gives_406_with_a_reason(self, archive: Archive, accept: str, resource: str) -> None:
        path = "/studies" if resource == "search" else f"/studies/{archive.study}/metadata"
        response = get(archive, path, accept)
        assert response.status_code == 406, response.text
        detail = response.json()["detail"]
        assert DICOM_JSON in detail
        assert DICOM_XML in detail

    def test_a_malformed_q_value_is_a_client_error(self, archive: Archive) -> None:
        response = get(archive, "/studies", f"{DICOM_XML}; q=2")
        assert response.status_code == 400, response.text
