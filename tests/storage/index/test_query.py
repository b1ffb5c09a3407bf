"""parse_query: QIDO-RS parameters -> Query (PS3.18 §8.3.4, PS3.4 §C.2.2.2)."""

from __future__ import annotations

import pytest
from pydicom.datadict import dictionary_VR, tag_for_keyword

from storage.errors import InvalidQuery
from storage.index.query import (
    MATCHING_KEYS,
    Level,
    Range,
    SingleValue,
    Universal,
    ValueList,
    Wildcard,
    parse_query,
)


def matcher_of(level: Level, name: str, value: str) -> object:
    query = parse_query(level, [(name, value)])
    assert len(query.matches) == 1
    return query.matches[0].matcher


class TestMatchingKeyTable:
    def test_every_key_has_the_dictionary_tag_and_vr(self) -> None:
        for keyword, key in MATCHING_KEYS.items():
            assert key.tag == f"{tag_for_keyword(keyword):08X}"
            assert key.vr == dictionary_VR(key.tag)


class TestMatchingKinds:
    def test_keyword_and_tag_name_the_same_key(self) -> None:
        assert (
            parse_query(Level.STUDY, [("PatientID", "X")]).matches
            == parse_query(Level.STUDY, [("00100020", "X")]).matches
        )

    def test_lower_case_hex_tag_is_accepted(self) -> None:
        assert matcher_of(Level.STUDY, "0020000d", "1.2.3") == SingleValue("1.2.3")

    def test_empty_value_is_universal_matching(self) -> None:
        assert matcher_of(Level.STUDY, "PatientName", "") == Universal()

    def test_lone_star_is_universal_matching(self) -> None:
        assert matcher_of(Level.STUDY, "PatientName", "*") == Universal()

    def test_star_or_question_mark_is_wildcard_matching(self) -> None:
        assert matcher_of(Level.STUDY, "PatientName", "SM?TH*") == Wildcard("SM?TH*")

    @pytest.mark.parametrize("value", ["1.2.3\\1.2.4", "1.2.3,1.2.4"])
    def test_uid_list_splits_on_backslash_or_comma(self, value: str) -> None:
        assert matcher_of(Level.STUDY, "StudyInstanceUID", value) == ValueList(("1.2.3", "1.2.4"))

    def test_modalities_in_study_accepts_a_list(self) -> None:
        assert matcher_of(Level.STUDY, "ModalitiesInStudy", "CT\\MR") == ValueList(("CT", "MR"))

    def test_comma_in_a_description_is_part_of_the_value(self) -> None:
        assert matcher_of(Level.STUDY, "StudyDescription", "HEAD, NECK") == SingleValue("HEAD, NECK")

    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ("20200101-20201231", Range("20200101", "20201231")),
            ("-20201231", Range(None, "20201231")),
            ("20200101-", Range("20200101", None)),
            ("20200101", SingleValue("20200101")),
        ],
    )
    def test_date_ranges(self, value: str, expected: object) -> None:
        assert matcher_of(Level.STUDY, "StudyDate", value) == expected

    def test_single_time_matches_its_whole_precision(self) -> None:
        assert matcher_of(Level.STUDY, "StudyTime", "1030") == Range("1030", "1030")

    def test_time_range_with_fraction(self) -> None:
        assert matcher_of(Level.STUDY, "StudyTime", "080000.5-1700") == Range("080000.5", "1700")

    def test_integer_key_is_normalised(self) -> None:
        assert matcher_of(Level.SERIES, "SeriesNumber", "007") == SingleValue("7")


class TestLevels:
    def test_upper_level_keys_are_allowed_at_lower_levels(self) -> None:
        query = parse_query(Level.INSTANCE, [("PatientID", "X"), ("Modality", "CT")])
        assert [m.key.keyword for m in query.matches] == ["PatientID", "Modality"]

    def test_lower_level_key_at_study_level_is_unsupported_not_matched(self) -> None:
        query = parse_query(Level.STUDY, [("SOPInstanceUID", "1.2.3")])
        assert query.matches == ()
        assert query.unsupported_keys == ("SOPInstanceUID",)
        assert query.include_fields == ("00080018",)

    def test_path_uids_are_kept(self) -> None:
        query = parse_query(Level.INSTANCE, [], study_uid="1.2", series_uid="1.2.3")
        assert (query.study_uid, query.series_uid) == ("1.2", "1.2.3")


class TestUnindexedAttributes:
    def test_valid_attribute_with_value_is_reported_unsupported_and_returned(self) -> None:
        query = parse_query(Level.STUDY, [("PatientWeight", "70")])
        assert query.unsupported_keys == ("PatientWeight",)
        assert query.include_fields == ("00101030",)
        assert query.matches == ()

    def test_valid_attribute_without_value_is_a_return_key_only(self) -> None:
        query = parse_query(Level.STUDY, [("00101030", "")])
        assert query.unsupported_keys == ()
        assert query.include_fields == ("00101030",)

    def test_sequence_path_returns_the_sequence(self) -> None:
        query = parse_query(Level.STUDY, [("ReferencedStudySequence.ReferencedSOPClassUID", "")])
        assert query.include_fields == ("00081110",)


class TestParameters:
    def test_includefield_lists_keywords_and_tags(self) -> None:
        query = parse_query(Level.STUDY, [("includefield", "StudyDescription,00080080"), ("includefield", "all")])
        assert query.include_fields == ("00081030", "00080080")
        assert query.include_all

    def test_limit_offset_fuzzymatching(self) -> None:
        query = parse_query(Level.STUDY, [("limit", "10"), ("offset", "20"), ("fuzzymatching", "TRUE")])
        assert (query.limit, query.offset, query.fuzzy_matching) == (10, 20, True)

    def test_defaults(self) -> None:
        query = parse_query(Level.STUDY, [])
        assert (query.limit, query.offset, query.fuzzy_matching) == (None, 0, False)
        assert query.extra_study_filters == ()


class TestInvalidQueries:
    @pytest.mark.parametrize(
        ("name", "value", "named"),
        [
            ("PatientNom", "X", "PatientNom"),
            ("0010002", "X", "0010002"),
            ("StudyDate", "2020-01-01", "YYYYMMDD"),
            ("StudyDate", "20201301", "20201301"),
            ("StudyDate", "20200230", "20200230"),
            ("StudyDate", "2020*", "2020*"),
            ("StudyDate", "-", "at least one bound"),
            ("StudyDate", "20201231-20200101", "starts after it ends"),
            ("StudyTime", "2500", "2500"),
            ("StudyTime", "10:30", "10:30"),
            ("StudyTime", "10.5", "10.5"),
            ("StudyInstanceUID", "1.2.a", "1.2.a"),
            ("StudyInstanceUID", "1..2", "1..2"),
            ("StudyInstanceUID", "1.2.", "1.2."),
            ("StudyInstanceUID", "1." * 40 + "1", "at most 64"),
            ("StudyInstanceUID", "1.2.*", "1.2.*"),
            ("SeriesNumber", "one", "integer"),
            ("limit", "-1", "positive integer"),
            ("limit", "0", "positive integer"),
            ("limit", "ten", "positive integer"),
            ("offset", "-5", "integer >= 0"),
            ("fuzzymatching", "yes", "true or false"),
            ("includefield", "NoSuchKeyword", "NoSuchKeyword"),
        ],
    )
    def test_bad_key_or_value_names_it(self, name: str, value: str, named: str) -> None:
        with pytest.raises(InvalidQuery, match=named.replace("*", r"\*").replace(".", r"\.")):
            parse_query(Level.SERIES, [(name, value)])

    def test_repeated_key_is_refused(self) -> None:
        with pytest.raises(InvalidQuery, match="PatientID is given twice"):
            parse_query(Level.STUDY, [("PatientID", "A"), ("00100020", "B")])

    def test_malformed_uid_in_the_path_is_refused(self) -> None:
        with pytest.raises(InvalidQuery, match="study in the URL"):
            parse_query(Level.SERIES, [], study_uid="abc")

    def test_series_without_study_is_refused(self) -> None:
        with pytest.raises(InvalidQuery, match="needs its study"):
            parse_query(Level.INSTANCE, [], series_uid="1.2")
