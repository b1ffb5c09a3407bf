"""QIDO-RS query parameters -> a typed `Query`, independent of SQL (DESIGN.md §1, Query).

Matching follows PS3.4 §C.2.2.2: single value, list of UIDs, wildcard (`*`, `?`), range (dates and
times) and universal matching (an empty value: match everything, return the attribute). The keys
each level accepts are `MATCHING_KEYS` (PS3.18 §10.6.1.2); upper-level keys are allowed at lower
levels.

Policy for valid DICOM attributes that are not in `MATCHING_KEYS` (or not at this level): with an
empty value they are return keys (added to `include_fields`); with a value they are *not* used for
matching: they are listed in `Query.unsupported_keys`, so that the edge sends the PS3.18 §8.3.4
warning, and returned as well, so that the client can filter on them itself. Refusing them would
break ordinary clients that send such keys routinely; matching them is impossible without their
values in the index.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from enum import IntEnum
from typing import TYPE_CHECKING, Final

from pydicom.datadict import keyword_for_tag, tag_for_keyword

from storage.dicom.uids import UID_MAX_LENGTH, is_valid_uid
from storage.errors import InvalidQuery

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

__all__ = [
    "MATCHING_KEYS",
    "QUERY_PARAMETERS",
    "Level",
    "Match",
    "Matcher",
    "MatchingKey",
    "Query",
    "Range",
    "SingleValue",
    "Universal",
    "ValueList",
    "Wildcard",
    "parse_query",
    "resolve_attribute",
]


class Level(IntEnum):
    """The QIDO-RS query level; a greater value is a lower level of the hierarchy."""

    STUDY = 1
    SERIES = 2
    INSTANCE = 3


@dataclass(frozen=True, slots=True)
class MatchingKey:
    """One attribute the index can match on."""

    keyword: str
    tag: str  # 8 upper-case hex digits, as DICOM JSON names attributes (PS3.18 §F.2)
    vr: str
    level: Level


# PS3.18 §10.6.1.2 Table 10.6.1-5 (required matching keys) plus the optional keys the index keeps.
MATCHING_KEYS: Final[Mapping[str, MatchingKey]] = {
    key.keyword: key
    for key in (
        MatchingKey("StudyDate", "00080020", "DA", Level.STUDY),
        MatchingKey("StudyTime", "00080030", "TM", Level.STUDY),
        MatchingKey("AccessionNumber", "00080050", "SH", Level.STUDY),
        MatchingKey("ModalitiesInStudy", "00080061", "CS", Level.STUDY),
        MatchingKey("ReferringPhysicianName", "00080090", "PN", Level.STUDY),
        MatchingKey("PatientName", "00100010", "PN", Level.STUDY),
        MatchingKey("PatientID", "00100020", "LO", Level.STUDY),
        MatchingKey("StudyInstanceUID", "0020000D", "UI", Level.STUDY),
        MatchingKey("StudyID", "00200010", "SH", Level.STUDY),
        MatchingKey("PatientBirthDate", "00100030", "DA", Level.STUDY),
        MatchingKey("PatientSex", "00100040", "CS", Level.STUDY),
        MatchingKey("StudyDescription", "00081030", "LO", Level.STUDY),
        MatchingKey("InstitutionName", "00080080", "LO", Level.STUDY),
        MatchingKey("SOPClassesInStudy", "00080062", "UI", Level.STUDY),
        MatchingKey("Modality", "00080060", "CS", Level.SERIES),
        MatchingKey("SeriesInstanceUID", "0020000E", "UI", Level.SERIES),
        MatchingKey("SeriesNumber", "00200011", "IS", Level.SERIES),
        MatchingKey("SeriesDescription", "0008103E", "LO", Level.SERIES),
        MatchingKey("BodyPartExamined", "00180015", "CS", Level.SERIES),
        MatchingKey("PerformedProcedureStepStartDate", "00400244", "DA", Level.SERIES),
        MatchingKey("PerformedProcedureStepStartTime", "00400245", "TM", Level.SERIES),
        MatchingKey("SOPClassUID", "00080016", "UI", Level.INSTANCE),
        MatchingKey("SOPInstanceUID", "00080018", "UI", Level.INSTANCE),
        MatchingKey("InstanceNumber", "00200013", "IS", Level.INSTANCE),
    )
}
_KEYS_BY_TAG: Final[Mapping[str, MatchingKey]] = {key.tag: key for key in MATCHING_KEYS.values()}

# The QIDO-RS query parameters that are not attributes (PS3.18 §8.3.4).
QUERY_PARAMETERS: Final = frozenset({"includefield", "limit", "offset", "fuzzymatching"})


@dataclass(frozen=True, slots=True)
class Universal:
    """Universal matching (PS3.4 §C.2.2.2.3): every entity matches; the attribute is returned."""


@dataclass(frozen=True, slots=True)
class SingleValue:
    """Single value matching (PS3.4 §C.2.2.2.1); for TM, every time within the given precision."""

    value: str


@dataclass(frozen=True, slots=True)
class ValueList:
    """List of UID matching (PS3.4 §C.2.2.2.2), also accepted for CS keys: any value matches."""

    values: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Wildcard:
    """Wild card matching (PS3.4 §C.2.2.2.4): `*` any sequence, `?` any one character."""

    pattern: str


@dataclass(frozen=True, slots=True)
class Range:
    """Range matching (PS3.4 §C.2.2.2.5), bounds inclusive, None = open; never matches empty values."""

    lower: str | None
    upper: str | None


Matcher = Universal | SingleValue | ValueList | Wildcard | Range


@dataclass(frozen=True, slots=True)
class Match:
    """One matching key of a query and how its value matches."""

    key: MatchingKey
    matcher: Matcher


@dataclass(frozen=True, slots=True)
class Query:
    """A QIDO-RS search, as the index understands it.

    Attributes:
        level: what is searched for.
        study_uid: the study of the URL (`/studies/{study}/series`), if any.
        series_uid: the series of the URL (`/studies/{study}/series/{series}/instances`), if any.
        matches: the matching keys, ANDed.
        include_fields: tags (8 hex digits) to return besides the defaults.
        include_all: `includefield=all`: every stored attribute of the level.
        limit: the client's maximum number of results, None = the server's maximum.
        offset: results to skip.
        fuzzy_matching: PS3.18 fuzzymatching=true: a PN value also matches any name component.
        unsupported_keys: keywords given with a value that the index cannot match on (see module).
        extra_study_filters: access policy, (study-level keyword, allowed values) pairs, ANDed with
            the query inside the same SQL; an empty tuple of values lets no study through.
    """

    level: Level
    study_uid: str | None = None
    series_uid: str | None = None
    matches: tuple[Match, ...] = ()
    include_fields: tuple[str, ...] = ()
    include_all: bool = False
    limit: int | None = None
    offset: int = 0
    fuzzy_matching: bool = False
    unsupported_keys: tuple[str, ...] = ()
    extra_study_filters: tuple[tuple[str, tuple[str, ...]], ...] = ()


_HEX_TAG: Final = re.compile(r"[0-9A-Fa-f]{8}")
_TIME: Final = re.compile(r"(?:[01]\d|2[0-3])(?:[0-5]\d(?:(?:[0-5]\d|60)(?:\.\d{1,6})?)?)?")
_DATE_LENGTH: Final = 8
_MAX_COUNT: Final = 2**31 - 1  # limit and offset stay within every SQL integer type
_WILDCARDS: Final = frozenset("*?")


def resolve_attribute(name: str) -> tuple[str, str] | None:
    """(keyword, tag) of a DICOM keyword or 8-hex tag, or None when `name` is neither.

    The keyword of a tag outside the dictionary (a private attribute) is the tag itself.
    """
    if _HEX_TAG.fullmatch(name):
        tag = int(name, 16)
        return keyword_for_tag(tag) or name.upper(), f"{tag:08X}"
    tag_number = tag_for_keyword(name)
    if tag_number is None:
        return None
    return name, f"{tag_number:08X}"


def _resolve_path(name: str) -> tuple[str, str] | None:
    """Like resolve_attribute, for a sequence path (`Seq.Attribute`, PS3.18 §8.3.4.1) too.

    The top-level attribute, which carries the whole sequence, is what the index can return.
    """
    resolved = [resolve_attribute(part) for part in name.split(".")]
    return None if None in resolved else resolved[0]


def parse_query(
    level: Level,
    params: Iterable[tuple[str, str]],
    *,
    study_uid: str | None = None,
    series_uid: str | None = None,
) -> Query:
    """Build the Query of a QIDO-RS request from its (already percent-decoded) parameters.

    Raises:
        InvalidQuery: a key is neither a DICOM attribute nor a QIDO-RS parameter, a key is
            repeated, or a value is malformed (date, time, UID, integer, limit, offset...).
    """
    if study_uid is not None:
        _check_uid("the study in the URL", study_uid)
    if series_uid is not None:
        if study_uid is None:
            msg = "a series in the URL needs its study"
            raise InvalidQuery(msg)
        _check_uid("the series in the URL", series_uid)
    matches: dict[str, Match] = {}
    include: dict[str, None] = {}
    unsupported: dict[str, None] = {}
    include_all = False
    limit: int | None = None
    offset = 0
    fuzzy = False
    for name, value in params:
        if name == "includefield":
            for item in value.split(","):
                if item == "all":
                    include_all = True
                    continue
                resolved = _resolve_path(item)
                if resolved is None:
                    msg = f"includefield={item!r}: use a DICOM keyword, an 8-hex tag or all"
                    raise InvalidQuery(msg)
                include[resolved[1]] = None
        elif name == "limit":
            limit = _parse_count(name, value, minimum=1)
        elif name == "offset":
            offset = _parse_count(name, value, minimum=0)
        elif name == "fuzzymatching":
            fuzzy = _parse_bool(name, value)
        else:
            resolved = _resolve_path(name)
            if resolved is None:
                known = ", ".join(sorted(QUERY_PARAMETERS))
                msg = (
                    f"unknown query key {name!r}: use a DICOM keyword (PatientID), "
                    f"an 8-hex tag (00100020) or one of {known}"
                )
                raise InvalidQuery(msg)
            keyword, tag = resolved
            key = _KEYS_BY_TAG.get(tag) if "." not in name else None
            if key is None or key.level > level:
                include[tag] = None
                if value:
                    unsupported[keyword] = None
                continue
            if key.keyword in matches:
                msg = f"{key.keyword} is given twice: give it once (a list of UIDs is a,b or a\\b)"
                raise InvalidQuery(msg)
            matches[key.keyword] = Match(key, _parse_matcher(key, value))
    return Query(
        level=level,
        study_uid=study_uid,
        series_uid=series_uid,
        matches=tuple(matches.values()),
        include_fields=tuple(include),
        include_all=include_all,
        limit=limit,
        offset=offset,
        fuzzy_matching=fuzzy,
        unsupported_keys=tuple(unsupported),
    )


def _parse_count(name: str, value: str, *, minimum: int) -> int:
    if not value.isascii() or not value.isdigit() or not minimum <= int(value) <= _MAX_COUNT:
        kind = f"a positive integer up to {_MAX_COUNT}" if minimum else f"an integer >= 0 up to {_MAX_COUNT}"
        msg = f"{name}={value!r}: must be {kind}"
        raise InvalidQuery(msg)
    return int(value)


def _parse_bool(name: str, value: str) -> bool:
    lowered = value.lower()
    if lowered not in {"true", "false"}:
        msg = f"{name}={value!r}: must be true or false"
        raise InvalidQuery(msg)
    return lowered == "true"


def _parse_matcher(key: MatchingKey, value: str) -> Matcher:
    if value == "":
        return Universal()
    if key.vr == "UI":
        return _parse_uids(key, value)
    if key.vr in {"DA", "TM"}:
        return _parse_date_or_time(key, value)
    if key.vr == "IS":
        if not re.fullmatch(r"[+-]?\d{1,12}", value):
            msg = f"{key.keyword}={value!r}: must be an integer"
            raise InvalidQuery(msg)
        return SingleValue(str(int(value)))
    # Wild card matching (PS3.4 §C.2.2.2.4); a value of `*` alone is universal matching.
    if set(value) <= {"*"}:
        return Universal()
    if _WILDCARDS & set(value):
        return Wildcard(value)
    if key.vr == "CS":
        # CS values never contain `\` or `,`: either separates a list (PS3.18 §8.3.4.1).
        values = tuple(part for part in re.split(r"[\\,]", value) if part)
        return SingleValue(values[0]) if len(values) == 1 else ValueList(values)
    return SingleValue(value)


def _check_uid(what: str, uid: str) -> None:
    if not is_valid_uid(uid):
        msg = (
            f"{what}: {uid!r} is not a UID (digits in dot-separated non-empty components, "
            f"at most {UID_MAX_LENGTH} characters, PS3.5 §9)"
        )
        raise InvalidQuery(msg)


def _parse_uids(key: MatchingKey, value: str) -> Matcher:
    uids = tuple(re.split(r"[\\,]", value))
    for uid in uids:
        _check_uid(key.keyword, uid)
    return SingleValue(uids[0]) if len(uids) == 1 else ValueList(tuple(dict.fromkeys(uids)))


def _parse_date_or_time(key: MatchingKey, value: str) -> Matcher:
    check = _check_date if key.vr == "DA" else _check_time
    if value.count("-") > 1:
        msg = f"{key.keyword}={value!r}: a range has one '-' ({_form(key.vr)})"
        raise InvalidQuery(msg)
    if "-" not in value:
        check(key, value)
        if key.vr == "TM":
            # A time matches every time inside its precision: 1030 matches 103015.5 (PS3.4 §C.2.2.2.1).
            return Range(value, value)
        return SingleValue(value)
    lower, upper = value.split("-")
    if not lower and not upper:
        msg = f"{key.keyword}={value!r}: a range needs at least one bound ({_form(key.vr)})"
        raise InvalidQuery(msg)
    for bound in (lower, upper):
        if bound:
            check(key, bound)
    if lower and upper and lower[: len(upper)] > upper:
        msg = f"{key.keyword}={value!r}: the range starts after it ends"
        raise InvalidQuery(msg)
    return Range(lower or None, upper or None)


def _form(vr: str) -> str:
    if vr == "DA":
        return "dates are YYYYMMDD; ranges YYYYMMDD-YYYYMMDD, -YYYYMMDD or YYYYMMDD-"
    return "times are HH, HHMM, HHMMSS or HHMMSS.FFFFFF; ranges A-B, -B or A-"


def _check_date(key: MatchingKey, value: str) -> None:
    valid = len(value) == _DATE_LENGTH and value.isascii() and value.isdigit()
    if valid:
        try:
            date(int(value[:4]), int(value[4:6]), int(value[6:]))
        except ValueError:
            valid = False
    if not valid:
        msg = f"{key.keyword}={value!r} is not a date: {_form('DA')} (PS3.5 §6.2, PS3.4 §C.2.2.2.5)"
        raise InvalidQuery(msg)


def _check_time(key: MatchingKey, value: str) -> None:
    if not _TIME.fullmatch(value):
        msg = f"{key.keyword}={value!r} is not a time: {_form('TM')} (PS3.5 §6.2, PS3.4 §C.2.2.2.5)"
        raise InvalidQuery(msg)
