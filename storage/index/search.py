"""Compile a `Query` to SQL for the dialect in use, run it, return DICOM JSON (PS3.18 §10.6.3, §F.2).

Results are built from the stored level JSON (values exactly as received, Unicode) plus the
attributes the index computes (counts, ModalitiesInStudy, ...). RetrieveURL is left to the edge,
which knows the base URL; every result carries the UIDs it needs for it.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any, Final

from pydicom.datadict import dictionary_VR
from sqlalchemy import and_, exists, false, or_, select

from storage.index.edits import not_recycled
from storage.index.models import (
    instance_table,
    normalize_person_name,
    series_table,
    study_modality_table,
    study_sop_class_table,
    study_table,
)
from storage.index.query import (
    MATCHING_KEYS,
    Level,
    Match,
    Range,
    SingleValue,
    Universal,
    ValueList,
    Wildcard,
)

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from sqlalchemy import ColumnElement, FromClause, Row
    from sqlalchemy.engine import Connection

    from storage.index.query import Query

__all__ = [
    "INSTANCE_DEFAULTS",
    "SERIES_DEFAULTS",
    "STUDY_DEFAULTS",
    "SearchResult",
    "search",
    "study_visible",
]

DicomJson = dict[str, Any]

# Default return attributes, PS3.18 §10.6.3.3 Tables 10.6.3-3/-4/-5 (RetrieveURL: the edge's).
STUDY_DEFAULTS: Final = (
    "00080005",  # SpecificCharacterSet
    "00080020",  # StudyDate
    "00080030",  # StudyTime
    "00080050",  # AccessionNumber
    "00080061",  # ModalitiesInStudy
    "00080090",  # ReferringPhysicianName
    "00100010",  # PatientName
    "00100020",  # PatientID
    "00100030",  # PatientBirthDate
    "00100040",  # PatientSex
    "0020000D",  # StudyInstanceUID
    "00200010",  # StudyID
    "00201206",  # NumberOfStudyRelatedSeries
    "00201208",  # NumberOfStudyRelatedInstances
)
SERIES_DEFAULTS: Final = (
    "00080005",  # SpecificCharacterSet
    "00080060",  # Modality
    "0008103E",  # SeriesDescription
    "0020000D",  # StudyInstanceUID (for the RetrieveURL the edge adds)
    "0020000E",  # SeriesInstanceUID
    "00200011",  # SeriesNumber
    "00201209",  # NumberOfSeriesRelatedInstances
    "00400244",  # PerformedProcedureStepStartDate
    "00400245",  # PerformedProcedureStepStartTime
)
INSTANCE_DEFAULTS: Final = (
    "00080005",  # SpecificCharacterSet
    "00080016",  # SOPClassUID
    "00080018",  # SOPInstanceUID
    "00083002",  # AvailableTransferSyntaxUID
    "0020000D",  # StudyInstanceUID (for the RetrieveURL the edge adds)
    "0020000E",  # SeriesInstanceUID (idem)
    "00200013",  # InstanceNumber
    "00280008",  # NumberOfFrames
    "00280010",  # Rows
    "00280011",  # Columns
    "00280100",  # BitsAllocated
)

_CHARSET: Final = "00080005"
_MODALITIES_IN_STUDY: Final = "00080061"
_SOP_CLASSES_IN_STUDY: Final = "00080062"
_STUDY_SERIES_COUNT: Final = "00201206"
_STUDY_INSTANCE_COUNT: Final = "00201208"
_SERIES_INSTANCE_COUNT: Final = "00201209"
_TRANSFER_SYNTAX: Final = "00083002"
# An equipment (series-level) attribute the index also keeps per study, for matching: at the study
# level it is answered from there (the newest instance's value).
_INSTITUTION_NAME: Final = "00080080"

# Where each matching key of query.MATCHING_KEYS is stored.
_COLUMNS: Final[Mapping[str, Any]] = {
    "StudyDate": study_table.c.study_date,
    "StudyTime": study_table.c.study_time,
    "AccessionNumber": study_table.c.accession_number,
    "ReferringPhysicianName": study_table.c.referring_physician_name_norm,
    "PatientName": study_table.c.patient_name_norm,
    "PatientID": study_table.c.patient_id,
    "StudyInstanceUID": study_table.c.study_instance_uid,
    "StudyID": study_table.c.study_id,
    "PatientBirthDate": study_table.c.patient_birth_date,
    "PatientSex": study_table.c.patient_sex,
    "StudyDescription": study_table.c.study_description,
    "InstitutionName": study_table.c.institution_name,
    "ModalitiesInStudy": study_modality_table.c.modality,
    "SOPClassesInStudy": study_sop_class_table.c.sop_class_uid,
    "Modality": series_table.c.modality,
    "SeriesInstanceUID": series_table.c.series_instance_uid,
    "SeriesNumber": series_table.c.series_number,
    "SeriesDescription": series_table.c.series_description,
    "BodyPartExamined": series_table.c.body_part_examined,
    "PerformedProcedureStepStartDate": series_table.c.pps_start_date,
    "PerformedProcedureStepStartTime": series_table.c.pps_start_time,
    "SOPClassUID": instance_table.c.sop_class_uid,
    "SOPInstanceUID": instance_table.c.sop_instance_uid,
    "InstanceNumber": instance_table.c.instance_number,
}
# Multi-valued study attributes kept in join tables: matched with EXISTS on them.
_JOIN_TABLES: Final = {
    "ModalitiesInStudy": study_modality_table,
    "SOPClassesInStudy": study_sop_class_table,
}


@dataclass(frozen=True, slots=True)
class SearchResult:
    """The matches of one QIDO-RS search.

    Attributes:
        rows: one DICOM JSON object per match, in the stable order of the level.
        truncated: the server's maximum cut the results short (the edge sends the PS3.18 warning).
    """

    rows: list[DicomJson]
    truncated: bool


def search(connection: Connection, query: Query, *, max_results: int) -> SearchResult:
    """Run `query` on the index and return its page of results.

    Raises:
        ValueError: `query.extra_study_filters` names a keyword that is not a study-level key.
    """
    dialect = connection.dialect.name
    conditions: dict[Level, list[ColumnElement[bool]]] = {level: [] for level in Level}
    for match in query.matches:
        condition = _compile_match(dialect, match, fuzzy=query.fuzzy_matching)
        if condition is not None:
            conditions[match.key.level].append(condition)
    for keyword, allowed in query.extra_study_filters:
        conditions[Level.STUDY].append(_policy_condition(dialect, keyword, allowed))
    if query.study_uid is not None:
        conditions[Level.STUDY].append(study_table.c.study_instance_uid == query.study_uid)
    if query.series_uid is not None:
        conditions[Level.SERIES].append(series_table.c.series_instance_uid == query.series_uid)

    # The server's maximum truncates only when it, not the client's limit, bounds the page.
    capped = query.limit is None or query.limit > max_results
    page = max_results if query.limit is None else min(query.limit, max_results)

    base, order = _LEVEL_ORDER[query.level]
    # Studies in the recycle bin are not found (storage/index/edits.py); a probe on the level's own
    # study id, so no join is added for it.
    conditions[query.level].append(not_recycled(base.c.id if query.level is Level.STUDY else base.c.study_id))
    # Page on ids first (answered from the ordering index), then fetch the page's rows only: a deep
    # offset then walks index entries, not table rows.
    ids = (
        select(base.c.id)
        .select_from(_joined(query.level, conditions))
        .where(*(c for level in Level for c in conditions[level]))
        .order_by(*order)
        .limit(page + 1 if capped else page)
        .offset(query.offset)
    )
    rows = connection.execute(
        select(*_OUTPUT_COLUMNS[query.level])
        .select_from(_joined(query.level, None))
        .where(base.c.id.in_(ids))
        .order_by(*order)
    ).all()
    truncated = capped and len(rows) > page
    rows = rows[:page]
    return SearchResult(_to_dicom_json(connection, query, rows), truncated)


def study_visible(connection: Connection, study_uid: str, policy: tuple[tuple[str, tuple[str, ...]], ...]) -> bool:
    """Whether the study exists and passes the access policy (the same SQL QIDO uses).

    Raises:
        ValueError: `policy` names a keyword that is not a study-level key.
    """
    dialect = connection.dialect.name
    conditions = [_policy_condition(dialect, keyword, allowed) for keyword, allowed in policy]
    statement = select(study_table.c.id).where(study_table.c.study_instance_uid == study_uid, *conditions).limit(1)
    return connection.execute(statement).first() is not None


_LEVEL_ORDER: Final[Mapping[Level, tuple[FromClause, tuple[Any, ...]]]] = {
    # Newest studies first; series and instances in their numbering, then arrival.
    Level.STUDY: (
        study_table,
        (study_table.c.study_date.desc(), study_table.c.study_time.desc(), study_table.c.id.desc()),
    ),
    Level.SERIES: (
        series_table,
        (series_table.c.series_number.asc().nulls_last(), series_table.c.id.asc()),
    ),
    Level.INSTANCE: (
        instance_table,
        (instance_table.c.instance_number.asc().nulls_last(), instance_table.c.id.asc()),
    ),
}

_STUDY_COLUMNS: Final = (
    study_table.c.id.label("study_pk"),
    study_table.c.json.label("study_json"),
    study_table.c.num_series,
    study_table.c.num_instances.label("study_instances"),
    study_table.c.institution_name,
)
_SERIES_COLUMNS: Final = (
    series_table.c.json.label("series_json"),
    series_table.c.num_instances.label("series_instances"),
)
_OUTPUT_COLUMNS: Final[Mapping[Level, tuple[Any, ...]]] = {
    Level.STUDY: _STUDY_COLUMNS,
    Level.SERIES: (*_STUDY_COLUMNS, *_SERIES_COLUMNS),
    Level.INSTANCE: (
        *_STUDY_COLUMNS,
        *_SERIES_COLUMNS,
        instance_table.c.json.label("instance_json"),
        instance_table.c.transfer_syntax_uid,
    ),
}


def _joined(level: Level, conditions: Mapping[Level, list[ColumnElement[bool]]] | None) -> FromClause:
    """The level's table joined to the upper levels that `conditions` use (all when None)."""

    def needed(upper: Level) -> bool:
        return conditions is None or bool(conditions[upper])

    if level is Level.STUDY:
        return study_table
    if level is Level.SERIES:
        if needed(Level.STUDY):
            return series_table.join(study_table, series_table.c.study_id == study_table.c.id)
        return series_table
    joined: FromClause = instance_table
    if needed(Level.SERIES):
        joined = joined.join(series_table, instance_table.c.series_id == series_table.c.id)
    if needed(Level.STUDY):
        joined = joined.join(study_table, instance_table.c.study_id == study_table.c.id)
    return joined


def _policy_condition(dialect: str, keyword: str, allowed: tuple[str, ...]) -> ColumnElement[bool]:
    key = MATCHING_KEYS.get(keyword)
    if key is None or key.level is not Level.STUDY:
        study_keys = sorted(k for k, v in MATCHING_KEYS.items() if v.level is Level.STUDY)
        msg = f"policy filter on {keyword!r}: use a study-level key, one of {study_keys}"
        raise ValueError(msg)
    if not allowed:
        return false()
    column = _COLUMNS[keyword]
    if key.vr in {"PN", "UI"}:
        return _in_study(keyword, _any_of(dialect, key.vr, column, allowed))
    # A user's filter may use QIDO's wildcards ("CT*", "St. Mary?s").
    return _in_study(keyword, or_(*(_equal_or_wildcard(dialect, column, value) for value in allowed)))


def _compile_match(dialect: str, match: Match, *, fuzzy: bool) -> ColumnElement[bool] | None:
    """The SQL condition of one matching key; None for universal matching."""
    keyword, vr, matcher = match.key.keyword, match.key.vr, match.matcher
    column = _COLUMNS[keyword]
    condition: ColumnElement[bool]
    if isinstance(matcher, Universal):
        return None
    if isinstance(matcher, ValueList):
        condition = _any_of(dialect, vr, column, matcher.values)
    elif vr == "PN" and isinstance(matcher, SingleValue | Wildcard):
        value = matcher.pattern if isinstance(matcher, Wildcard) else matcher.value
        condition = _person_name(dialect, column, value, fuzzy=fuzzy)
    elif isinstance(matcher, SingleValue):
        condition = column == (int(matcher.value) if vr == "IS" else matcher.value)
    elif isinstance(matcher, Wildcard):
        condition = _wildcard(dialect, column, matcher.pattern)
    else:
        condition = _range(column, vr, matcher)
    return _in_study(keyword, condition)


def _any_of(dialect: str, vr: str, column: Any, values: Iterable[str]) -> ColumnElement[bool]:
    if vr == "PN":
        return or_(*(_person_name(dialect, column, value, fuzzy=False) for value in values))
    return column.in_(tuple(values))  # type: ignore[no-any-return]


def _in_study(keyword: str, condition: ColumnElement[bool]) -> ColumnElement[bool]:
    """Conditions on a join table's column become EXISTS on the study's rows there."""
    join_table = _JOIN_TABLES.get(keyword)
    if join_table is None:
        return condition
    return exists().where(join_table.c.study_id == study_table.c.id, condition)


def _range(column: Any, vr: str, matcher: Range) -> ColumnElement[bool]:
    # Empty values never match a range (PS3.4 §C.2.2.2.5). Stored DA/TM strings compare in time
    # order byte-wise ("C" collation); a TM upper bound includes every time inside its precision.
    conditions = [column != ""]
    if matcher.lower is not None:
        conditions.append(column >= matcher.lower)
    if matcher.upper is not None:
        if vr == "TM":
            conditions.append(column < _successor(matcher.upper))
        else:
            conditions.append(column <= matcher.upper)
    return and_(*conditions)


def _successor(prefix: str) -> str:
    """The least string greater than every string that starts with `prefix` (code point order)."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


def _literal_prefix(pattern: str) -> str:
    for index, char in enumerate(pattern):
        if char in "*?":
            return pattern[:index]
    return pattern


def _pattern(dialect: str, column: Any, pattern: str) -> ColumnElement[bool]:
    """`column` matches the DICOM wildcard `pattern` (`*`, `?`), case-sensitively."""
    if dialect == "sqlite":
        # SQLite's LIKE ignores ASCII case; GLOB does not and uses the same `*` and `?` as DICOM:
        # only `[` needs escaping (as the one-character class `[[]`).
        return column.op("GLOB", is_comparison=True)(pattern.replace("[", "[[]"))  # type: ignore[no-any-return]
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return column.like(escaped.replace("*", "%").replace("?", "_"), escape="\\")  # type: ignore[no-any-return]


def _prefix_range(column: Any, prefix: str) -> ColumnElement[bool]:
    """`column` starts with `prefix`, as a range a B-tree index answers."""
    return and_(column >= prefix, column < _successor(prefix))


def _wildcard(dialect: str, column: Any, pattern: str) -> ColumnElement[bool]:
    prefix = _literal_prefix(pattern)
    if not prefix:
        return _pattern(dialect, column, pattern)
    if pattern == f"{prefix}*":
        return _prefix_range(column, prefix)
    return and_(_prefix_range(column, prefix), _pattern(dialect, column, pattern))


def _equal_or_wildcard(dialect: str, column: Any, value: str) -> ColumnElement[bool]:
    if _literal_prefix(value) == value:
        return column == value  # type: ignore[no-any-return]
    return _wildcard(dialect, column, value)


def _person_name(dialect: str, column: Any, raw: str, *, fuzzy: bool) -> ColumnElement[bool]:
    """PN matching on the normalised column, ignoring case and accents.

    PS3.4 §C.2.2.2.1 leaves PN case sensitivity to the SCP. A value with component groups (`=`)
    matches the whole stored value. A value without matches the first (alphabetic) group or, when it
    has characters outside ASCII after folding (ideographic, phonetic), any group.
    fuzzymatching=true (PS3.18 §8.3.4.1) also matches the value as the prefix of any name component.
    """
    value = normalize_person_name(raw).rstrip("=")
    if "=" in value:
        return _equal_or_wildcard(dialect, column, value)
    if value.endswith("*"):
        branches = [_wildcard(dialect, column, value)]  # the trailing `*` spans the other groups
    else:
        branches = [
            _equal_or_wildcard(dialect, column, value),
            _wildcard(dialect, column, f"{value}=*"),
        ]
    if not value.isascii():
        branches += [
            _pattern(dialect, column, f"*={value}"),
            _pattern(dialect, column, f"*={value}=*"),
        ]
    if fuzzy:
        starts = value if value.endswith("*") else f"{value}*"
        branches += [
            _wildcard(dialect, column, starts),
            _pattern(dialect, column, f"*^{starts}"),
            _pattern(dialect, column, f"*={starts}"),
        ]
    return or_(*branches)


def _to_dicom_json(connection: Connection, query: Query, rows: Sequence[Row[*tuple[Any, ...]]]) -> list[DicomJson]:
    wanted = dict.fromkeys(_defaults(query))
    wanted.update(dict.fromkeys(match.key.tag for match in query.matches))
    wanted.update(dict.fromkeys(query.include_fields))
    study_ids = [row.study_pk for row in rows]
    modalities = (
        _multi_values(connection, study_modality_table.c.modality, study_ids) if _MODALITIES_IN_STUDY in wanted else {}
    )
    sop_classes = (
        _multi_values(connection, study_sop_class_table.c.sop_class_uid, study_ids)
        if _SOP_CLASSES_IN_STUDY in wanted or query.include_all
        else {}
    )
    results = []
    for row in rows:
        levels: list[DicomJson] = [json.loads(row.study_json)]
        computed: dict[str, tuple[str, Any]] = {
            _CHARSET: ("CS", "ISO_IR 192"),  # results are UTF-8 whatever the instances used
            _STUDY_SERIES_COUNT: ("IS", row.num_series),
            _STUDY_INSTANCE_COUNT: ("IS", row.study_instances),
            _MODALITIES_IN_STUDY: ("CS", modalities.get(row.study_pk, [])),
            _SOP_CLASSES_IN_STUDY: ("UI", sop_classes.get(row.study_pk, [])),
        }
        if query.level is Level.STUDY:
            computed[_INSTITUTION_NAME] = ("LO", [row.institution_name] if row.institution_name else [])
        if query.level >= Level.SERIES:
            levels.append(json.loads(row.series_json))
            computed[_SERIES_INSTANCE_COUNT] = ("IS", row.series_instances)
        if query.level is Level.INSTANCE:
            levels.append(json.loads(row.instance_json))
            computed[_TRANSFER_SYNTAX] = ("UI", row.transfer_syntax_uid)
        results.append(_result(levels, computed, wanted, include_all=query.include_all))
    return results


def _result(
    levels: list[DicomJson],
    computed: Mapping[str, tuple[str, Any]],
    wanted: Mapping[str, None],
    *,
    include_all: bool,
) -> DicomJson:
    stored: DicomJson = {}
    for level_json in levels:  # lower levels last: theirs wins
        stored.update(level_json)
    tags = dict(wanted)
    if include_all:
        tags.update(dict.fromkeys(levels[-1]))
        tags.update(dict.fromkeys(computed))
    result: DicomJson = {}
    for tag in sorted(tags):
        if tag in computed:
            result[tag] = _computed(*computed[tag])
        elif tag in stored:
            result[tag] = stored[tag]
        else:
            empty = _empty(tag)
            if empty is not None:
                result[tag] = dict(empty)
    return result


def _computed(vr: str, value: str | int | list[str]) -> DicomJson:
    """DICOM JSON of a computed CS, UI or IS attribute (PS3.18 §F.2.3: a plain list of values).

    Written out rather than through pydicom's DataElement, whose value validation costs more than
    the whole SQL query of a 100-study page; these three VRs need none of it.
    """
    values = value if isinstance(value, list) else [value]
    return {"vr": vr, "Value": values} if values else {"vr": vr}


@cache
def _empty(tag: str) -> DicomJson | None:
    """A requested attribute without a value, returned empty as C-FIND does (PS3.4 §C.2.2.1.2).

    None when its VR is not known for sure (private or multi-VR attributes).
    """
    try:
        vr = dictionary_VR(int(tag, 16))
    except KeyError:
        return None
    return {"vr": vr} if len(vr) == 2 else None


def _defaults(query: Query) -> tuple[str, ...]:
    # PS3.18 §10.6.3.3: /series without a study also returns the study's default attributes;
    # /instances returns the study's and the series' defaults, /studies/{s}/instances the series'.
    if query.level is Level.STUDY:
        return STUDY_DEFAULTS
    if query.level is Level.SERIES:
        return SERIES_DEFAULTS if query.study_uid else STUDY_DEFAULTS + SERIES_DEFAULTS
    if query.series_uid:
        return INSTANCE_DEFAULTS
    if query.study_uid:
        return SERIES_DEFAULTS + INSTANCE_DEFAULTS
    return STUDY_DEFAULTS + SERIES_DEFAULTS + INSTANCE_DEFAULTS


def _multi_values(connection: Connection, column: Any, study_ids: Iterable[int]) -> dict[int, list[str]]:
    table = column.table
    values: dict[int, list[str]] = defaultdict(list)
    ids = list(study_ids)
    if not ids:
        return values
    for study_id, value in connection.execute(
        select(table.c.study_id, column).where(table.c.study_id.in_(ids)).order_by(column)
    ):
        values[study_id].append(value)
    return values
