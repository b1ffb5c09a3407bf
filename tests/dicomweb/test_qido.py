"""QIDO-RS (PS3.18 §10.6) against generated ground truth, on an archive of its own per backend."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import pytest
from dicomdata import (
    CHARSET_FILES,
    Patient,
    SeriesSpec,
    StudySpec,
    build_instances,
    bundled,
    header_of,
    normalize_name,
    part10,
    uids_of,
    wildcard_matches,
)
from live_pacs import Pacs, first, tag_values

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from conftest import ServerFactory  # tests/conftest.py

STUDY_UID, SERIES_UID, SOP_UID = "0020000D", "0020000E", "00080018"
PATIENT_NAME, STUDY_DATE, STUDY_TIME = "00100010", "00080020", "00080030"
MODALITIES_IN_STUDY = "00080061"
STUDY_SERIES, STUDY_INSTANCES, SERIES_INSTANCES = "00201206", "00201208", "00201209"
RETRIEVE_URL = "00081190"
STUDY_DESCRIPTION = "00081030"

PATIENTS = {
    key: Patient(name, f"QIDO-{key}")
    for key, name in {
        "smith": "SMITH^JOHN",
        "smithson": "SMITHSON^ANNA",
        "smythe": "SMYTHE^PETER",
        "johnson": "JOHNSON^MARY",
        "muller": "MÜLLER^HANS",
        "muller2": "Muller^Fritz",
        "garcia": "GARCÍA^JOSÉ",
        "garcia2": "garcia^maría",
    }.items()
}


def _studies() -> list[StudySpec]:
    """Twelve studies over five years; single- and multi-modality; one with 512 x 512 CT images."""
    p = PATIENTS
    rows: list[tuple[Patient, str, str, tuple[SeriesSpec, ...]]] = [
        (p["smith"], "20190312", "093000", (SeriesSpec("CT", 3, 1, size=512), SeriesSpec("CT", 2, 2))),
        (p["smith"], "20200115", "101500", (SeriesSpec("MR", 2, 1),)),
        (p["smithson"], "20200620", "080000", (SeriesSpec("MR", 3, 1), SeriesSpec("SR", 1, 2))),
        (p["smythe"], "20201231", "235959", (SeriesSpec("CT", 1, 1),)),
        (p["johnson"], "20210101", "000000", (SeriesSpec("CT", 2, 1), SeriesSpec("PT", 2, 2))),
        (p["muller"], "20210301", "120000", (SeriesSpec("CT", 1, 1), SeriesSpec("PT", 1, 2), SeriesSpec("SR", 1, 3))),
        (p["muller"], "20210301", "150000", (SeriesSpec("MR", 1, 1, frames=3),)),
        (p["muller2"], "20211231", "101010", (SeriesSpec("MR", 2, 1),)),
        (p["garcia"], "20220505", "111111", (SeriesSpec("CT", 2, 1),)),
        (p["garcia2"], "20220506", "121212", (SeriesSpec("MR", 1, 1),)),
        (p["johnson"], "20230101", "090000", (SeriesSpec("SR", 1, 1),)),
        (p["smithson"], "20230704", "140000", (SeriesSpec("PT", 2, 1), SeriesSpec("CT", 1, 2))),
    ]
    return [
        StudySpec(patient, date, f"ACC{index:04d}", series, study_time=time, description=f"study {index}")
        for index, (patient, date, time, series) in enumerate(rows)
    ]


@dataclass(frozen=True)
class TruthStudy:
    """A stored study as the ground truth knows it (generated or a bundled charset file)."""

    uid: str
    patient_id: str
    patient_name: str
    date: str
    time: str
    accession: str
    modalities: frozenset[str]
    series: dict[str, int]  # series UID -> instances


@dataclass
class Archive:
    """The module's server and what it holds."""

    pacs: Pacs
    studies: list[TruthStudy]
    specs: list[StudySpec]
    charset_files: dict[str, bytes]

    def uids(self, keep: Callable[[TruthStudy], bool]) -> set[str]:
        """UIDs of the stored studies for which `keep` is true."""
        return {study.uid for study in self.studies if keep(study)}


def _truth(specs: list[StudySpec], charset_files: dict[str, bytes]) -> list[TruthStudy]:
    studies = [
        TruthStudy(
            spec.study_uid,
            spec.patient.id,
            spec.patient.name,
            spec.study_date,
            spec.study_time,
            spec.accession,
            frozenset(spec.modalities),
            {series.series_uid: series.instances for series in spec.series},
        )
        for spec in specs
    ]
    for data in charset_files.values():
        header = header_of(data)
        study, series, _ = uids_of(data)
        studies.append(
            TruthStudy(
                study,
                str(header.PatientID),
                str(header.PatientName),
                str(header.get("StudyDate", "")),
                str(header.get("StudyTime", "")),
                str(header.get("AccessionNumber", "")),
                frozenset({str(header.Modality)}),
                {series: 1},
            )
        )
    return studies


@pytest.fixture(scope="module")
def archive(backend: str, live_servers: ServerFactory) -> Iterator[Archive]:
    server = live_servers.start(backend)
    pacs = Pacs(server.url, server.token, server.data_dir, backend)
    specs = _studies()
    charset_files = {name: bundled(name) for name in CHARSET_FILES}
    for spec in specs:
        pacs.store(*(part10(ds) for ds in build_instances(spec)))
    pacs.store(*charset_files.values())
    yield Archive(pacs, _truth(specs, charset_files), specs, charset_files)
    pacs.close()
    live_servers.stop(server)


def _study_uids(results: list[dict[str, Any]]) -> list[str]:
    return [first(row, STUDY_UID) for row in results]


def _get(archive: Archive, query: str, path: str = "/studies") -> list[dict[str, Any]]:
    """QIDO-RS with a query string sent exactly as written (already percent-encoded)."""
    response = archive.pacs.http.get(f"/dicomweb{path}?{query}")
    assert response.status_code == 200, f"{path}?{query}: {response.status_code} {response.text}"
    return response.json()


def _name_matches(pattern: str, name: str) -> bool:
    if "*" in pattern or "?" in pattern:
        return wildcard_matches(pattern, name)
    return normalize_name(pattern) in (normalize_name(name), normalize_name(name.split("=")[0]))


class TestStudyMatching:
    def test_no_key_lists_every_study(self, archive: Archive) -> None:
        assert set(_study_uids(archive.pacs.search("/studies"))) == archive.uids(lambda _: True)

    def test_patient_id(self, archive: Archive) -> None:
        results = archive.pacs.search("/studies", {"PatientID": "QIDO-smith"})
        assert set(_study_uids(results)) == archive.uids(lambda s: s.patient_id == "QIDO-smith")
        assert len(results) == 2

    @pytest.mark.parametrize(
        "pattern",
        [
            "SMITH*",
            "SMITH^*",
            "*SON^*",
            "SM?TH*",
            "smith*",
            "SMITH^JOHN",
            "smith^john",
            "*^MARY",
            "S*",
            "?ARCIA*",
            "MULLER^HANS",
            "*",
        ],
    )
    def test_patient_name_wildcards_ignore_case_and_accents(self, archive: Archive, pattern: str) -> None:
        results = archive.pacs.search("/studies", {"PatientName": pattern})
        expected = archive.uids(lambda s: _name_matches(pattern, s.patient_name))
        assert set(_study_uids(results)) == expected
        assert expected or pattern == "*"

    def test_smith_star_matches_smithson_but_not_smythe(self, archive: Archive) -> None:
        names = {
            first(row, PATIENT_NAME)["Alphabetic"] for row in archive.pacs.search("/studies", {"PatientName": "SMITH*"})
        }
        assert names == {"SMITH^JOHN", "SMITHSON^ANNA"}

    @pytest.mark.parametrize(
        ("query", "pattern"),
        [
            ("PatientName=M%C3%9CLLER*", "MÜLLER*"),
            ("PatientName=m%C3%BCller%5E*", "müller^*"),
            ("PatientName=SMITH%2A", "SMITH*"),
            ("PatientName=GARC%C3%8DA%5EJOS%C3%89", "GARCÍA^JOSÉ"),
            ("PatientName=SM%3FTH%2A", "SM?TH*"),
        ],
    )
    def test_percent_encoded_utf8_names(self, archive: Archive, query: str, pattern: str) -> None:
        expected = archive.uids(lambda s: _name_matches(pattern, s.patient_name))
        assert expected
        assert set(_study_uids(_get(archive, query))) == expected

    def test_accented_query_finds_unaccented_names_and_back(self, archive: Archive) -> None:
        accented = set(_study_uids(archive.pacs.search("/studies", {"PatientName": "MÜLLER*"})))
        plain = set(_study_uids(archive.pacs.search("/studies", {"PatientName": "muller*"})))
        assert accented == plain == archive.uids(lambda s: s.patient_id in ("QIDO-muller", "QIDO-muller2"))

    def test_fuzzy_matching_finds_a_given_name(self, archive: Archive) -> None:
        results = archive.pacs.search("/studies", {"PatientName": "JOHN", "fuzzymatching": "true"})
        assert archive.uids(lambda s: s.patient_id == "QIDO-smith") <= set(_study_uids(results))

    @pytest.mark.parametrize(
        ("value", "keep"),
        [
            ("20200115", lambda d: d == "20200115"),
            ("20200101-20201231", lambda d: "20200101" <= d <= "20201231"),
            ("-20191231", lambda d: d and d <= "20191231"),
            ("20220101-", lambda d: d >= "20220101"),
            ("20210301-20210301", lambda d: d == "20210301"),
        ],
        ids=["single", "closed", "open-start", "open-end", "one-day-range"],
    )
    def test_study_date_single_and_ranges(self, archive: Archive, value: str, keep: Callable[[str], bool]) -> None:
        results = archive.pacs.search("/studies", {"StudyDate": value})
        expected = archive.uids(lambda s: bool(keep(s.date)))
        assert expected
        assert set(_study_uids(results)) == expected

    @pytest.mark.parametrize("value", ["PT", "SR", "CT", "MR,PT"])
    def test_modalities_in_study_matches_any_series(self, archive: Archive, value: str) -> None:
        wanted = set(value.split(","))
        results = archive.pacs.search("/studies", {"ModalitiesInStudy": value})
        assert set(_study_uids(results)) == archive.uids(lambda s: bool(s.modalities & wanted))
        by_uid = {study.uid: study for study in archive.studies}
        for row in results:
            assert set(tag_values(row, MODALITIES_IN_STUDY)) == by_uid[first(row, STUDY_UID)].modalities

    def test_accession_number(self, archive: Archive) -> None:
        (row,) = archive.pacs.search("/studies", {"AccessionNumber": "ACC0005"})
        assert first(row, STUDY_UID) == archive.specs[5].study_uid

    @pytest.mark.parametrize("separator", [",", "\\"])
    def test_study_instance_uid_list(self, archive: Archive, separator: str) -> None:
        wanted = {archive.specs[1].study_uid, archive.specs[7].study_uid}
        results = archive.pacs.search("/studies", {"StudyInstanceUID": separator.join(sorted(wanted))})
        assert set(_study_uids(results)) == wanted

    def test_keys_combine_with_and(self, archive: Archive) -> None:
        results = archive.pacs.search(
            "/studies", {"PatientName": "SMITH*", "ModalitiesInStudy": "MR", "StudyDate": "20200101-"}
        )
        assert set(_study_uids(results)) == {archive.specs[1].study_uid, archive.specs[2].study_uid}


class TestComputedAttributes:
    def test_study_counts_and_modalities(self, archive: Archive) -> None:
        by_uid = {row_uid: row for row in archive.pacs.search("/studies") if (row_uid := first(row, STUDY_UID))}
        for spec in archive.specs:
            row = by_uid[spec.study_uid]
            assert first(row, STUDY_SERIES) == len(spec.series)
            assert first(row, STUDY_INSTANCES) == spec.instance_count
            assert set(tag_values(row, MODALITIES_IN_STUDY)) == spec.modalities

    def test_series_instance_counts(self, archive: Archive) -> None:
        for spec in archive.specs:
            rows = archive.pacs.search(f"/studies/{spec.study_uid}/series")
            assert {first(row, SERIES_UID): first(row, SERIES_INSTANCES) for row in rows} == {
                series.series_uid: series.instances for series in spec.series
            }

    def test_retrieve_urls_serve_what_they_name(self, archive: Archive) -> None:
        spec = archive.specs[5]
        (study,) = archive.pacs.search("/studies", {"StudyInstanceUID": spec.study_uid})
        assert len(archive.pacs.retrieve(first(study, RETRIEVE_URL))) == spec.instance_count
        for row in archive.pacs.search(f"/studies/{spec.study_uid}/series"):
            series = next(s for s in spec.series if s.series_uid == first(row, SERIES_UID))
            assert len(archive.pacs.retrieve(first(row, RETRIEVE_URL))) == series.instances
        for row in archive.pacs.search(f"/studies/{spec.study_uid}/instances"):
            (part,) = archive.pacs.retrieve(first(row, RETRIEVE_URL))
            assert uids_of(part.content)[2] == first(row, SOP_UID)


class TestSeriesAndInstanceLevels:
    def test_all_series_by_modality(self, archive: Archive) -> None:
        results = archive.pacs.search("/series", {"Modality": "PT"})
        expected = {series.series_uid for spec in archive.specs for series in spec.series if series.modality == "PT"}
        assert {first(row, SERIES_UID) for row in results} == expected

    def test_series_with_study_level_keys(self, archive: Archive) -> None:
        results = archive.pacs.search("/series", {"PatientID": "QIDO-muller", "Modality": "CT"})
        assert {first(row, SERIES_UID) for row in results} == {archive.specs[5].series[0].series_uid}

    def test_instances_of_a_series_in_instance_number_order(self, archive: Archive) -> None:
        spec = archive.specs[0]
        series = spec.series[0]
        rows = archive.pacs.search(f"/studies/{spec.study_uid}/series/{series.series_uid}/instances")
        assert [first(row, "00200013") for row in rows] == [1, 2, 3]
        assert {first(row, SERIES_UID) for row in rows} == {series.series_uid}
        assert {first(row, "00280010") for row in rows} == {512}

    def test_instances_of_a_study(self, archive: Archive) -> None:
        spec = archive.specs[4]
        rows = archive.pacs.search(f"/studies/{spec.study_uid}/instances")
        assert len(rows) == spec.instance_count
        assert {first(row, STUDY_UID) for row in rows} == {spec.study_uid}

    def test_all_instances_by_sop_instance_uid_and_by_study_key(self, archive: Archive) -> None:
        data = archive.charset_files["chrGerm.dcm"]
        (row,) = archive.pacs.search("/instances", {"SOPInstanceUID": uids_of(data)[2]})
        assert first(row, STUDY_UID) == uids_of(data)[0]
        rows = archive.pacs.search("/instances", {"PatientID": "QIDO-garcia"})
        assert len(rows) == archive.specs[8].instance_count

    def test_multiframe_instance_reports_its_frames(self, archive: Archive) -> None:
        spec = archive.specs[6]
        (row,) = archive.pacs.search(f"/studies/{spec.study_uid}/instances")
        assert first(row, "00280008") == 3

    def test_series_of_another_study_is_not_listed_under_this_one(self, archive: Archive) -> None:
        one, other = archive.specs[0], archive.specs[1]
        assert archive.pacs.search(f"/studies/{one.study_uid}/series/{other.series[0].series_uid}/instances") == []


class TestIncludeField:
    def test_attributes_beyond_the_defaults_are_left_out(self, archive: Archive) -> None:
        rows = archive.pacs.search("/studies", {"PatientID": "QIDO-garcia"})
        assert all(STUDY_DESCRIPTION not in row for row in rows)

    @pytest.mark.parametrize("value", ["StudyDescription", "00081030", "all"])
    def test_includefield_by_keyword_tag_or_all(self, archive: Archive, value: str) -> None:
        (row,) = archive.pacs.search("/studies", {"PatientID": "QIDO-garcia", "includefield": value})
        assert first(row, STUDY_DESCRIPTION) == "study 8"

    def test_includefield_all_at_series_level_returns_series_attributes(self, archive: Archive) -> None:
        spec = archive.specs[8]
        (row,) = archive.pacs.search(f"/studies/{spec.study_uid}/series", {"includefield": "all"})
        assert first(row, "00080070") == "webpacs tests"  # Manufacturer, not a default attribute
        assert first(row, "0008103E") == "CT series 1"


class TestPaging:
    def test_pages_concatenate_to_the_full_ordered_list(self, archive: Archive) -> None:
        everything = _study_uids(archive.pacs.search("/studies"))
        pages: list[str] = []
        for offset in range(0, len(everything) + 4, 4):
            page = _study_uids(archive.pacs.search("/studies", {"limit": "4", "offset": str(offset)}))
            assert len(page) <= 4
            pages += page
        assert pages == everything
        assert len(set(pages)) == len(pages)

    def test_studies_come_newest_first(self, archive: Archive) -> None:
        rows = archive.pacs.search("/studies")
        keys = [(first(row, STUDY_DATE) or "", first(row, STUDY_TIME) or "") for row in rows]
        assert keys == sorted(keys, reverse=True)

    def test_paging_with_a_filter_at_instance_level(self, archive: Archive) -> None:
        everything = [first(row, SOP_UID) for row in archive.pacs.search("/instances", {"ModalitiesInStudy": "CT"})]
        pages = [
            first(row, SOP_UID)
            for offset in range(0, len(everything), 3)
            for row in archive.pacs.search(
                "/instances", {"ModalitiesInStudy": "CT", "limit": "3", "offset": str(offset)}
            )
        ]
        assert pages == everything

    def test_an_offset_past_the_end_gives_no_results(self, archive: Archive) -> None:
        assert archive.pacs.search("/studies", {"offset": "1000"}) == []


class TestCharacterSets:
    @pytest.mark.parametrize("name", CHARSET_FILES)
    def test_names_come_back_as_pydicom_decodes_them(self, archive: Archive, name: str) -> None:
        data = archive.charset_files[name]
        (row,) = archive.pacs.search("/studies", {"StudyInstanceUID": uids_of(data)[0]})
        expected = header_of(data)["PatientName"].to_json_dict(None, 1024)
        assert row[PATIENT_NAME] == expected

    def test_utf8_generated_name_comes_back_exactly(self, archive: Archive) -> None:
        (row,) = archive.pacs.search("/studies", {"AccessionNumber": "ACC0008"})
        assert first(row, PATIENT_NAME) == {"Alphabetic": "GARCÍA^JOSÉ"}
        assert tag_values(row, "00080005") == ["ISO_IR 192"]

    @pytest.mark.parametrize(
        ("name", "pattern"),
        [("chrH31.dcm", "山田*"), ("chrH31.dcm", "やまだ^たろう"), ("chrX1.dcm", "Wang^*"), ("chrRuss.dcm", "Люк*")],
    )
    def test_other_scripts_match_by_name(self, archive: Archive, name: str, pattern: str) -> None:
        results = _get(archive, "PatientName=" + quote(pattern, safe=""))
        assert uids_of(archive.charset_files[name])[0] in _study_uids(results)


class TestBadQueries:
    @pytest.mark.parametrize(
        ("path", "query", "names"),
        [
            ("/studies", "NoSuchAttribute=1", "NoSuchAttribute"),
            ("/studies", "StudyDate=2020-13-45", "StudyDate"),
            ("/studies", "StudyDate=20201345", "StudyDate"),
            ("/studies", "StudyDate=yesterday", "StudyDate"),
            ("/studies", "StudyInstanceUID=1.2.abc", "StudyInstanceUID"),
            ("/series", "SeriesInstanceUID=1..2", "SeriesInstanceUID"),
            ("/studies/not-a-uid/series", "", "not-a-uid"),
            ("/studies", "limit=-3", "limit"),
            ("/studies", "offset=x", "offset"),
            ("/studies", "includefield=NotAKeyword", "NotAKeyword"),
        ],
    )
    def test_gives_400_with_a_reason(self, archive: Archive, path: str, query: str, names: str) -> None:
        response = archive.pacs.http.get(f"/dicomweb{path}?{query}")
        assert response.status_code == 400, response.text
        assert names in response.json()["detail"]
