"""QIDO-RS search against a generated ground truth, on SQLite and PostgreSQL."""

from __future__ import annotations

import random
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import pytest
from index_samples import (
    CT_IMAGE,
    MR_IMAGE,
    SR_DOCUMENT,
    Spec,
    create_database,
    drop_database,
    make_instance,
)

from storage.index import Index, NewInstance
from storage.index.database import migrate, open_engine
from storage.index.query import Level, parse_query

if TYPE_CHECKING:
    from collections.abc import Iterator

NAMES = [
    "SMITH^JOHN",
    "SMITH^JANE",
    "Smith^Robert",
    "SMITHSON^ANNA",
    "SMYTHE^JANE",
    "Müller^Hans",
    "MÜLLER^PETRA",
    "Muller^Karl",
    "García^José",
    "GARCIA^MARIA",
    "Yamada^Tarou=山田^太郎=やまだ^たろう",
    "Tanaka^Hanako=田中^花子=たなか^はなこ",
    "O'BRIEN^SEAN",
    "PERCENT%^SIGN",
    "UNDER_SCORE^NAME",
    "UNDERXSCORE^NAME",
    "VAN DER BERG^PIETER",
    "",
]
REFERRING = ["WELBY^MARCUS", "HOUSE^GREGORY", "Grey^Meredith", ""]
MODALITIES = ["CT", "MR", "PT", "SR", "US", "CR"]
SOP_CLASS = {"CT": CT_IMAGE, "MR": MR_IMAGE, "SR": SR_DOCUMENT}
DESCRIPTIONS = ["CT HEAD", "CT CHEST", "MR BRAIN", "PET/CT WHOLE BODY", "ct lowercase", "HEAD, NECK"]
STUDIES = 240


@dataclass(frozen=True)
class Truth:
    """The corpus as the tests see it: every instance's Spec, and study arrival order."""

    specs: list[Spec]
    study_order: dict[str, int]

    def studies(self) -> dict[str, list[Spec]]:
        grouped: dict[str, list[Spec]] = {}
        for spec in self.specs:
            grouped.setdefault(spec.study_uid, []).append(spec)
        return grouped


def generate() -> Truth:
    rng = random.Random(20240601)
    specs: list[Spec] = []
    order: dict[str, int] = {}
    for s in range(1, STUDIES + 1):
        study_uid = f"1.2.826.0.1.{s}"
        order[study_uid] = s
        name_index = rng.randrange(len(NAMES))
        day = rng.choice([f"20{y:02d}{m:02d}{d:02d}" for y in (15, 18, 20, 24) for m in (1, 6, 12) for d in (1, 15)])
        time = rng.choice(["", "0800", "083000", "120000", "120000.5", "235959"])
        study = Spec(
            study_uid=study_uid,
            patient_id=f"PID{name_index:03d}",
            patient_name=NAMES[name_index],
            birth_date=rng.choice(["", "19500101", "19800615", "20010301"]),
            sex=rng.choice(["M", "F", "O", ""]),
            study_date=day,
            study_time=time,
            accession=f"ACC{s:05d}",
            study_id=f"S{s % 7}",
            study_description=rng.choice(DESCRIPTIONS),
            referring=rng.choice(REFERRING),
            institution=rng.choice(["GENERAL HOSPITAL", "Clinique Sainte-Anne", ""]),
        )
        for se in range(1, rng.randint(1, 3) + 1):
            modality = rng.choice(MODALITIES)
            series = replace(
                study,
                series_uid=f"{study_uid}.{se}",
                modality=modality,
                series_number=rng.choice([se, se, None]),
                series_description=rng.choice(["AXIAL", "Sagittal T1", "LOCALIZER", ""]),
                body_part=rng.choice(["HEAD", "CHEST", "ABDOMEN"]),
                pps_date=day,
                pps_time=time,
            )
            for i in range(1, rng.randint(1, 3) + 1):
                specs.append(
                    replace(
                        series,
                        sop_uid=f"{study_uid}.{se}.{i}",
                        sop_class=SOP_CLASS.get(modality, "1.2.840.10008.5.1.4.1.1.7"),
                        instance_number=rng.choice([i, i, None]),
                        frames=rng.choice([1, 1, 3]),
                    )
                )
    return Truth(specs, order)


TRUTH = generate()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def corpus(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Index]:
    """An index holding TRUTH (loaded once per database)."""
    url = create_database(request.param, tmp_path_factory.mktemp("corpus"))
    migrate(url)
    engine = open_engine(url)
    index = Index(engine)
    for specs in TRUTH.studies().values():
        items = []
        for spec in specs:
            parsed, sha = make_instance(spec)
            items.append(NewInstance(parsed, f"blobs/{spec.sop_uid}", 100, sha))
        assert all(outcome.kind == "stored" for outcome in index.add_instances(items))  # type: ignore[union-attr]
    yield index
    engine.dispose()
    drop_database(url)


# --- the oracle: PS3.4 §C.2.2.2 matching, written independently of the SQL -------------------


def fold(value: str) -> str:
    decomposed = unicodedata.normalize("NFKD", value)
    return unicodedata.normalize(
        "NFC", "".join(c for c in decomposed if not unicodedata.combining(c) or c in "\u3099\u309a")
    ).upper()


def wildcard(pattern: str) -> re.Pattern[str]:
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern), re.S)


def string_matches(stored: str, value: str) -> bool:
    if value in ("", "*"):
        return True
    return wildcard(value).fullmatch(stored) is not None


def pn_matches(stored: str, value: str, *, fuzzy: bool = False) -> bool:
    if value in ("", "*"):
        return True
    query, name = fold(value).rstrip("="), fold(stored).rstrip("=")
    if "=" in query:
        return wildcard(query).fullmatch(name) is not None
    groups = name.split("=")
    candidates = groups if not query.isascii() else groups[:1]
    if any(wildcard(query).fullmatch(group) for group in candidates):
        return True
    if fuzzy:
        components = re.split(r"[\^=]", name)
        return any(wildcard(query + "*").fullmatch(c) for c in components)
    return False


def in_range(stored: str, lower: str | None, upper: str | None) -> bool:
    if not stored:
        return False
    return (lower is None or stored >= lower) and (upper is None or stored[: len(upper)] <= upper)


def date_matches(stored: str, value: str) -> bool:
    if "-" not in value:
        return stored == value
    lower, upper = value.split("-")
    return in_range(stored, lower or None, upper or None)


def time_matches(stored: str, value: str) -> bool:
    lower, _, upper = value.partition("-") if "-" in value else (value, "", value)
    return in_range(stored, lower or None, upper or None)


def uid_matches(stored: str, value: str) -> bool:
    return stored in re.split(r"[\\,]", value)


Oracle = Callable[[Spec], bool]
# Values that must match nothing in the corpus: a bare surname is not SMITH^JOHN (single value
# matching is whole-value), and non-PN wildcards are case-sensitive.
NOTHING_MATCHES = {"SMITH", "sag*"}

STUDY_CASES: list[tuple[str, str, Oracle]] = [
    ("PatientName", "SMITH", lambda s: pn_matches(s.patient_name, "SMITH")),
    ("PatientName", "SMITH^JOHN", lambda s: s.patient_name == "SMITH^JOHN"),
    ("PatientName", "smith*", lambda s: pn_matches(s.patient_name, "smith*")),
    ("PatientName", "SMITH^*", lambda s: pn_matches(s.patient_name, "SMITH^*")),
    ("PatientName", "SM?TH*", lambda s: pn_matches(s.patient_name, "SM?TH*")),
    ("PatientName", "*SON*", lambda s: pn_matches(s.patient_name, "*SON*")),
    ("PatientName", "MULLER*", lambda s: fold(s.patient_name).startswith("MULLER")),
    ("PatientName", "müller^hans", lambda s: s.patient_name == "Müller^Hans"),
    ("PatientName", "GARCIA*", lambda s: fold(s.patient_name).startswith("GARCIA")),
    ("PatientName", "García^José", lambda s: s.patient_name == "García^José"),
    ("PatientName", "山田*", lambda s: s.patient_name.startswith("Yamada")),
    ("PatientName", "山田^太郎", lambda s: s.patient_name.startswith("Yamada")),
    ("PatientName", "やまだ^たろう", lambda s: s.patient_name.startswith("Yamada")),
    ("PatientName", "YAMADA^TAROU", lambda s: s.patient_name.startswith("Yamada")),
    ("PatientName", "Yamada^Tarou=山田^太郎=やまだ^たろう", lambda s: s.patient_name.startswith("Yamada")),
    ("PatientName", "UNDER_SCORE*", lambda s: s.patient_name == "UNDER_SCORE^NAME"),
    ("PatientName", "PERCENT%*", lambda s: s.patient_name == "PERCENT%^SIGN"),
    ("PatientName", "*^JANE", lambda s: pn_matches(s.patient_name, "*^JANE")),
    ("PatientName", "VAN DER*", lambda s: s.patient_name.startswith("VAN DER")),
    ("PatientName", "", lambda s: True),
    ("PatientID", "PID003", lambda s: s.patient_id == "PID003"),
    ("PatientID", "PID00?", lambda s: string_matches(s.patient_id, "PID00?")),
    ("AccessionNumber", "ACC00042", lambda s: s.accession == "ACC00042"),
    ("AccessionNumber", "ACC001*", lambda s: s.accession.startswith("ACC001")),
    ("StudyDate", "20180615", lambda s: s.study_date == "20180615"),
    ("StudyDate", "20180101-20201231", lambda s: date_matches(s.study_date, "20180101-20201231")),
    ("StudyDate", "-20180101", lambda s: date_matches(s.study_date, "-20180101")),
    ("StudyDate", "20200615-", lambda s: date_matches(s.study_date, "20200615-")),
    ("StudyTime", "0800-1200", lambda s: time_matches(s.study_time, "0800-1200")),
    ("StudyTime", "12", lambda s: time_matches(s.study_time, "12")),
    ("StudyTime", "-0830", lambda s: time_matches(s.study_time, "-0830")),
    ("StudyTime", "120000.5-", lambda s: time_matches(s.study_time, "120000.5-")),
    ("ReferringPhysicianName", "grey*", lambda s: s.referring == "Grey^Meredith"),
    ("ReferringPhysicianName", "WELBY^MARCUS", lambda s: s.referring == "WELBY^MARCUS"),
    (
        "StudyInstanceUID",
        "1.2.826.0.1.7\\1.2.826.0.1.9,1.2.826.0.1.999",
        lambda s: uid_matches(s.study_uid, "1.2.826.0.1.7,1.2.826.0.1.9"),
    ),
    ("StudyID", "S3", lambda s: s.study_id == "S3"),
    ("PatientBirthDate", "19700101-19900101", lambda s: date_matches(s.birth_date, "19700101-19900101")),
    ("PatientSex", "F", lambda s: s.sex == "F"),
    ("StudyDescription", "CT*", lambda s: s.study_description.startswith("CT")),
    ("StudyDescription", "ct*", lambda s: s.study_description.startswith("ct")),
    ("StudyDescription", "*HEAD*", lambda s: "HEAD" in s.study_description),
    ("StudyDescription", "HEAD, NECK", lambda s: s.study_description == "HEAD, NECK"),
    ("InstitutionName", "Clinique*", lambda s: s.institution.startswith("Clinique")),
]


def study_uids(truth: Truth, predicate: Oracle) -> set[str]:
    return {uid for uid, specs in truth.studies().items() if predicate(specs[0])}


def uids_of(rows: list[dict[str, Any]], tag: str) -> list[str]:
    return [row[tag]["Value"][0] for row in rows]


class TestStudyMatching:
    @pytest.mark.parametrize(("key", "value", "oracle"), STUDY_CASES, ids=[f"{k}={v}" for k, v, _ in STUDY_CASES])
    def test_matches_ground_truth(self, corpus: Index, key: str, value: str, oracle: Oracle) -> None:
        result = corpus.search(parse_query(Level.STUDY, [(key, value)]), max_results=1000)
        expected = study_uids(TRUTH, oracle)
        assert set(uids_of(result.rows, "0020000D")) == expected
        assert expected or value in NOTHING_MATCHES  # the corpus exercises the case

    @pytest.mark.parametrize("value", ["CT", "CT\\PT", "C*", "SR,US"])
    def test_modalities_in_study(self, corpus: Index, value: str) -> None:
        wanted = re.split(r"[\\,]", value)
        expected = {
            uid
            for uid, specs in TRUTH.studies().items()
            if any(string_matches(spec.modality, w) for spec in specs for w in wanted)
        }
        result = corpus.search(parse_query(Level.STUDY, [("ModalitiesInStudy", value)]), max_results=1000)
        assert set(uids_of(result.rows, "0020000D")) == expected
        assert expected

    def test_sop_classes_in_study(self, corpus: Index) -> None:
        expected = {uid for uid, specs in TRUTH.studies().items() if any(s.sop_class == SR_DOCUMENT for s in specs)}
        result = corpus.search(parse_query(Level.STUDY, [("SOPClassesInStudy", SR_DOCUMENT)]), max_results=1000)
        assert set(uids_of(result.rows, "0020000D")) == expected
        assert expected

    def test_keys_are_anded(self, corpus: Index) -> None:
        params = [("PatientName", "SMITH*"), ("StudyDate", "20180101-"), ("ModalitiesInStudy", "CT")]
        expected = {
            uid
            for uid, specs in TRUTH.studies().items()
            if pn_matches(specs[0].patient_name, "SMITH*")
            and date_matches(specs[0].study_date, "20180101-")
            and any(s.modality == "CT" for s in specs)
        }
        result = corpus.search(parse_query(Level.STUDY, params), max_results=1000)
        assert set(uids_of(result.rows, "0020000D")) == expected
        assert expected

    @pytest.mark.parametrize("value", ["SMI", "JAN", "MULL", "TAR", "山"])
    def test_fuzzy_matching_matches_any_name_component_prefix(self, corpus: Index, value: str) -> None:
        params = [("PatientName", value), ("fuzzymatching", "true")]
        result = corpus.search(parse_query(Level.STUDY, params), max_results=1000)
        expected = study_uids(TRUTH, lambda s: pn_matches(s.patient_name, value, fuzzy=True))
        assert set(uids_of(result.rows, "0020000D")) == expected
        assert expected

    def test_without_fuzzy_matching_a_component_prefix_does_not_match(self, corpus: Index) -> None:
        result = corpus.search(parse_query(Level.STUDY, [("PatientName", "JAN")]), max_results=1000)
        assert result.rows == []


SERIES_CASES: list[tuple[str, str, Oracle]] = [
    ("Modality", "MR", lambda s: s.modality == "MR"),
    ("Modality", "CT\\PT", lambda s: s.modality in {"CT", "PT"}),
    ("SeriesNumber", "2", lambda s: s.series_number == 2),
    ("SeriesDescription", "Sag*", lambda s: s.series_description.startswith("Sag")),
    ("SeriesDescription", "sag*", lambda s: s.series_description.startswith("sag")),
    ("BodyPartExamined", "CHEST", lambda s: s.body_part == "CHEST"),
    ("PerformedProcedureStepStartDate", "20200101-20201231", lambda s: date_matches(s.pps_date, "20200101-20201231")),
    ("PerformedProcedureStepStartTime", "0800-0830", lambda s: time_matches(s.pps_time, "0800-0830")),
    ("SeriesInstanceUID", "1.2.826.0.1.5.1", lambda s: s.series_uid == "1.2.826.0.1.5.1"),
    ("PatientID", "PID003", lambda s: s.patient_id == "PID003"),
    ("PatientName", "GARCIA*", lambda s: fold(s.patient_name).startswith("GARCIA")),
    ("StudyDate", "20180101-20181231", lambda s: date_matches(s.study_date, "20180101-20181231")),
]


def series_uids(predicate: Oracle, study_uid: str | None = None) -> set[str]:
    return {s.series_uid for s in TRUTH.specs if predicate(s) and study_uid in (None, s.study_uid)}


class TestSeriesMatching:
    @pytest.mark.parametrize(("key", "value", "oracle"), SERIES_CASES, ids=[f"{k}={v}" for k, v, _ in SERIES_CASES])
    def test_matches_ground_truth(self, corpus: Index, key: str, value: str, oracle: Oracle) -> None:
        result = corpus.search(parse_query(Level.SERIES, [(key, value)]), max_results=1000)
        expected = series_uids(oracle)
        assert set(uids_of(result.rows, "0020000E")) == expected
        assert expected or value in NOTHING_MATCHES

    def test_series_of_one_study(self, corpus: Index) -> None:
        study = "1.2.826.0.1.17"
        result = corpus.search(parse_query(Level.SERIES, [], study_uid=study), max_results=1000)
        assert set(uids_of(result.rows, "0020000E")) == series_uids(lambda s: True, study)


INSTANCE_CASES: list[tuple[str, str, Oracle]] = [
    ("SOPClassUID", MR_IMAGE, lambda s: s.sop_class == MR_IMAGE),
    (
        "SOPInstanceUID",
        "1.2.826.0.1.3.1.1,1.2.826.0.1.4.1.1",
        lambda s: s.sop_uid in {"1.2.826.0.1.3.1.1", "1.2.826.0.1.4.1.1"},
    ),
    ("InstanceNumber", "3", lambda s: s.instance_number == 3),
    ("Modality", "US", lambda s: s.modality == "US"),
    ("PatientName", "smyth*", lambda s: s.patient_name.startswith("SMYTHE")),
    ("AccessionNumber", "ACC0010?", lambda s: string_matches(s.accession, "ACC0010?")),
]


class TestInstanceMatching:
    @pytest.mark.parametrize(("key", "value", "oracle"), INSTANCE_CASES, ids=[f"{k}={v}" for k, v, _ in INSTANCE_CASES])
    def test_matches_ground_truth(self, corpus: Index, key: str, value: str, oracle: Oracle) -> None:
        result = corpus.search(parse_query(Level.INSTANCE, [(key, value)]), max_results=5000)
        expected = {s.sop_uid for s in TRUTH.specs if oracle(s)}
        assert set(uids_of(result.rows, "00080018")) == expected
        assert expected

    def test_instances_of_one_series_in_instance_number_order(self, corpus: Index) -> None:
        specs = [s for s in TRUTH.specs if s.series_uid == "1.2.826.0.1.12.1"]
        query = parse_query(Level.INSTANCE, [], study_uid="1.2.826.0.1.12", series_uid="1.2.826.0.1.12.1")
        result = corpus.search(query, max_results=1000)
        expected = sorted(specs, key=lambda s: (s.instance_number is None, s.instance_number or 0, s.sop_uid))
        assert uids_of(result.rows, "00080018") == [s.sop_uid for s in expected]


def expected_study_order() -> list[str]:
    firsts = {uid: specs[0] for uid, specs in TRUTH.studies().items()}
    return sorted(
        firsts,
        key=lambda uid: (firsts[uid].study_date, firsts[uid].study_time, TRUTH.study_order[uid]),
        reverse=True,
    )


class TestOrderAndPaging:
    def test_studies_newest_first_ties_by_arrival(self, corpus: Index) -> None:
        result = corpus.search(parse_query(Level.STUDY, []), max_results=1000)
        assert uids_of(result.rows, "0020000D") == expected_study_order()

    def test_pages_concatenate_to_the_whole_list(self, corpus: Index) -> None:
        pages: list[str] = []
        for offset in range(0, STUDIES + 40, 37):
            query = parse_query(Level.STUDY, [("limit", "37"), ("offset", str(offset))])
            pages += uids_of(corpus.search(query, max_results=1000).rows, "0020000D")
        assert pages == expected_study_order()

    def test_offset_past_the_end_is_empty(self, corpus: Index) -> None:
        result = corpus.search(parse_query(Level.STUDY, [("offset", "100000")]), max_results=10)
        assert (result.rows, result.truncated) == ([], False)

    def test_series_pages_are_stable(self, corpus: Index) -> None:
        whole = uids_of(corpus.search(parse_query(Level.SERIES, []), max_results=5000).rows, "0020000E")
        paged: list[str] = []
        for offset in range(0, len(whole), 50):
            query = parse_query(Level.SERIES, [("limit", "50"), ("offset", str(offset))])
            paged += uids_of(corpus.search(query, max_results=5000).rows, "0020000E")
        assert paged == whole
        assert len(set(whole)) == len(whole) == len({s.series_uid for s in TRUTH.specs})

    def test_server_maximum_truncates_and_says_so(self, corpus: Index) -> None:
        result = corpus.search(parse_query(Level.STUDY, []), max_results=25)
        assert (len(result.rows), result.truncated) == (25, True)

    def test_client_limit_below_the_maximum_is_not_truncation(self, corpus: Index) -> None:
        result = corpus.search(parse_query(Level.STUDY, [("limit", "10")]), max_results=25)
        assert (len(result.rows), result.truncated) == (10, False)

    def test_client_limit_above_the_maximum_is_truncated(self, corpus: Index) -> None:
        result = corpus.search(parse_query(Level.STUDY, [("limit", "500")]), max_results=25)
        assert (len(result.rows), result.truncated) == (25, True)

    def test_maximum_not_reached_is_not_truncation(self, corpus: Index) -> None:
        result = corpus.search(parse_query(Level.STUDY, [("PatientID", "PID003")]), max_results=1000)
        assert not result.truncated


def find_study(corpus: Index, name: str) -> dict[str, Any]:
    uid = next(s.study_uid for s in TRUTH.specs if s.patient_name == name)
    query = parse_query(Level.STUDY, [("StudyInstanceUID", uid), ("includefield", "all")])
    return corpus.search(query, max_results=1).rows[0]


class TestResultAttributes:
    def test_study_defaults_are_returned(self, corpus: Index) -> None:
        row = corpus.search(parse_query(Level.STUDY, [("limit", "1")]), max_results=10).rows[0]
        assert {
            "00080005",
            "00080020",
            "00080030",
            "00080050",
            "00080061",
            "00080090",
            "00100010",
            "00100020",
            "00100030",
            "00100040",
            "0020000D",
            "00200010",
            "00201206",
            "00201208",
        } <= row.keys()
        assert row["00080005"] == {"vr": "CS", "Value": ["ISO_IR 192"]}
        assert "00081190" not in row  # RetrieveURL: the edge's

    def test_counts_and_modalities_match_the_truth(self, corpus: Index) -> None:
        for uid in ("1.2.826.0.1.1", "1.2.826.0.1.2", "1.2.826.0.1.3"):
            specs = TRUTH.studies()[uid]
            row = corpus.search(parse_query(Level.STUDY, [("StudyInstanceUID", uid)]), max_results=1).rows[0]
            assert row["00201206"] == {"vr": "IS", "Value": [len({s.series_uid for s in specs})]}
            assert row["00201208"] == {"vr": "IS", "Value": [len(specs)]}
            assert row["00080061"] == {"vr": "CS", "Value": sorted({s.modality for s in specs})}

    def test_person_names_come_back_exactly(self, corpus: Index) -> None:
        row = find_study(corpus, "Yamada^Tarou=山田^太郎=やまだ^たろう")
        assert row["00100010"] == {
            "vr": "PN",
            "Value": [{"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎", "Phonetic": "やまだ^たろう"}],
        }
        assert find_study(corpus, "Müller^Hans")["00100010"]["Value"] == [{"Alphabetic": "Müller^Hans"}]

    def test_includefield_adds_stored_attributes(self, corpus: Index) -> None:
        query = parse_query(Level.STUDY, [("includefield", "StudyDescription,00080080"), ("limit", "1")])
        row = corpus.search(query, max_results=1).rows[0]
        assert {"00081030", "00080080"} <= row.keys()

    def test_institution_name_is_answered_at_the_study_level(self, corpus: Index) -> None:
        # An equipment (series-level) attribute the index also keeps per study for matching.
        query = parse_query(Level.STUDY, [("includefield", "InstitutionName")])
        rows = corpus.search(query, max_results=10_000).rows
        answered = {row["0020000D"]["Value"][0]: row["00080080"].get("Value", [""])[0] for row in rows}
        expected = {uid: specs[0].institution for uid, specs in TRUTH.studies().items()}
        assert answered == expected
        assert {"GENERAL HOSPITAL", "Clinique Sainte-Anne", ""} == set(answered.values())

    def test_includefield_all_adds_the_whole_level(self, corpus: Index) -> None:
        row = find_study(corpus, "SMITH^JOHN")
        assert {"00081030", "00080080", "00080062"} <= row.keys()

    def test_matching_key_with_universal_value_is_returned(self, corpus: Index) -> None:
        query = parse_query(Level.STUDY, [("StudyDescription", ""), ("limit", "1")])
        assert "00081030" in corpus.search(query, max_results=1).rows[0]

    def test_requested_absent_attribute_is_returned_empty(self, corpus: Index) -> None:
        query = parse_query(Level.STUDY, [("PatientWeight", ""), ("limit", "1")])
        assert corpus.search(query, max_results=1).rows[0]["00101030"] == {"vr": "DS"}

    def test_attributes_are_in_tag_order(self, corpus: Index) -> None:
        row = corpus.search(parse_query(Level.STUDY, [("limit", "1")]), max_results=1).rows[0]
        assert list(row) == sorted(row)

    def test_series_search_without_study_includes_study_defaults(self, corpus: Index) -> None:
        row = corpus.search(parse_query(Level.SERIES, [("limit", "1")]), max_results=1).rows[0]
        assert {"00100010", "00080061", "00201209", "0020000D", "0020000E", "00080060"} <= row.keys()

    def test_series_of_a_study_returns_series_attributes(self, corpus: Index) -> None:
        query = parse_query(Level.SERIES, [], study_uid="1.2.826.0.1.1")
        row = corpus.search(query, max_results=10).rows[0]
        assert "00100010" not in row
        assert {"0020000D", "0020000E", "00201209", "00400244", "00400245"} <= row.keys()

    def test_instance_attributes(self, corpus: Index) -> None:
        spec = TRUTH.specs[0]
        query = parse_query(Level.INSTANCE, [], study_uid=spec.study_uid, series_uid=spec.series_uid)
        row = corpus.search(query, max_results=10).rows[0]
        assert row["00083002"] == {"vr": "UI", "Value": ["1.2.840.10008.1.2.1"]}
        assert {"00080016", "00080018", "00280010", "00280011", "00280100", "0020000D", "0020000E"} <= row.keys()
        assert "00100010" not in row


class TestPolicyFilter:
    def test_only_allowed_studies_are_seen(self, corpus: Index) -> None:
        query = replace(parse_query(Level.STUDY, []), extra_study_filters=(("PatientID", ("PID003", "PID004")),))
        result = corpus.search(query, max_results=1000)
        assert set(uids_of(result.rows, "0020000D")) == study_uids(
            TRUTH, lambda s: s.patient_id in {"PID003", "PID004"}
        )

    def test_filter_is_anded_with_the_query(self, corpus: Index) -> None:
        query = replace(
            parse_query(Level.STUDY, [("ModalitiesInStudy", "CT")]),
            extra_study_filters=(("InstitutionName", ("GENERAL HOSPITAL",)),),
        )
        expected = {
            uid
            for uid, specs in TRUTH.studies().items()
            if specs[0].institution == "GENERAL HOSPITAL" and any(s.modality == "CT" for s in specs)
        }
        assert set(uids_of(corpus.search(query, max_results=1000).rows, "0020000D")) == expected

    def test_empty_allowed_set_shows_nothing(self, corpus: Index) -> None:
        query = replace(parse_query(Level.SERIES, []), extra_study_filters=(("PatientID", ()),))
        assert corpus.search(query, max_results=1000).rows == []

    def test_filter_applies_to_instances(self, corpus: Index) -> None:
        query = replace(parse_query(Level.INSTANCE, []), extra_study_filters=(("PatientID", ("PID001",)),))
        result = corpus.search(query, max_results=5000)
        assert set(uids_of(result.rows, "00080018")) == {s.sop_uid for s in TRUTH.specs if s.patient_id == "PID001"}

    def test_filter_on_a_series_key_is_a_programming_error(self, corpus: Index) -> None:
        query = replace(parse_query(Level.STUDY, []), extra_study_filters=(("Modality", ("CT",)),))
        with pytest.raises(ValueError, match="study-level key"):
            corpus.search(query, max_results=10)
