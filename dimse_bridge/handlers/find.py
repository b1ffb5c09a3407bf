"""C-FIND SCP (Patient Root and Study Root, PS3.4 Annex C): identifier -> QIDO-RS -> Pending responses.

Matching keys that PS3.18 requires every QIDO-RS server to support go to the server; any other key
with a value is fetched as a return key (`includefield`) and matched here, with the rules of PS3.4
§C.2.2.2, so a modality's query never silently matches more than it asked for. Each response holds
exactly the keys of the request (PS3.4 §C.4.1.1.3.2), zero-length when the archive has no value,
and is encoded in UTF-8 (ISO_IR 192): QIDO-RS gives Unicode, which no single-byte set can hold.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote

from pydicom.datadict import keyword_for_tag
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pynetdicom.sop_class import (  # type: ignore[attr-defined]  # pynetdicom generates these names at import
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from dimse_bridge.client import BridgeError, DicomWebError, ServerUnreachable

if TYPE_CHECKING:
    from collections.abc import Iterator

    from pynetdicom.events import Event

    from dimse_bridge.activity import ActivityLog
    from dimse_bridge.client import DicomWebClient
    from dimse_bridge.registry import NodeRegistry

__all__ = [
    "LEVELS_BY_SOP_CLASS",
    "QIDO_MATCHING_KEYS",
    "FindStatus",
    "InvalidIdentifier",
    "LocalMatch",
    "QidoQuery",
    "build_response",
    "handle_find",
    "matches",
    "plan_query",
    "qido_value",
    "search",
    "status_for_error",
]

_LOG = logging.getLogger(__name__)


class FindStatus(IntEnum):
    """C-FIND response statuses: PS3.4 Annex C.4.1.1.4 (Table C.4-1) and PS3.7 Annex C."""

    SUCCESS = 0x0000
    PENDING = 0xFF00
    CANCEL = 0xFE00
    REFUSED_OUT_OF_RESOURCES = 0xA700
    ERROR_IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS = 0xA900
    ERROR_UNABLE_TO_PROCESS = 0xC000
    REFUSED_NOT_AUTHORIZED = 0x0124  # PS3.7 §C.5.7


class InvalidIdentifier(BridgeError):
    """The request identifier does not fit the Information Model (level, unique keys)."""


# PS3.4 §C.6.1 (Patient Root) and §C.6.2 (Study Root): the levels each model has, for its FIND,
# MOVE and GET SOP classes alike.
_PATIENT_ROOT_LEVELS: Final = ("PATIENT", "STUDY", "SERIES", "IMAGE")
_STUDY_ROOT_LEVELS: Final = ("STUDY", "SERIES", "IMAGE")
LEVELS_BY_SOP_CLASS: Final[Mapping[str, tuple[str, ...]]] = {
    PatientRootQueryRetrieveInformationModelFind: _PATIENT_ROOT_LEVELS,
    PatientRootQueryRetrieveInformationModelMove: _PATIENT_ROOT_LEVELS,
    PatientRootQueryRetrieveInformationModelGet: _PATIENT_ROOT_LEVELS,
    StudyRootQueryRetrieveInformationModelFind: _STUDY_ROOT_LEVELS,
    StudyRootQueryRetrieveInformationModelMove: _STUDY_ROOT_LEVELS,
    StudyRootQueryRetrieveInformationModelGet: _STUDY_ROOT_LEVELS,
}

# PS3.18 Table 10.6.1-5: the matching keys every QIDO-RS server supports, per level. There is no
# patient resource, so a PATIENT-level query is a study query on the patient keys.
QIDO_MATCHING_KEYS: Final[Mapping[str, frozenset[str]]] = {
    "PATIENT": frozenset({"PatientName", "PatientID"}),
    "STUDY": frozenset(
        {
            "StudyDate",
            "StudyTime",
            "AccessionNumber",
            "ModalitiesInStudy",
            "ReferringPhysicianName",
            "PatientName",
            "PatientID",
            "StudyInstanceUID",
            "StudyID",
        }
    ),
    "SERIES": frozenset(
        {
            "Modality",
            "SeriesInstanceUID",
            "SeriesNumber",
            "PerformedProcedureStepStartDate",
            "PerformedProcedureStepStartTime",
        }
    ),
    "IMAGE": frozenset({"SOPClassUID", "SOPInstanceUID", "InstanceNumber"}),
}

# PS3.4 §C.4.1.2.2 hierarchical search: the unique keys of the levels above the query level
# name the parent; they select the QIDO-RS resource and are echoed in every response.
_PARENT_KEYS: Final[Mapping[str, tuple[str, ...]]] = {
    "PATIENT": (),
    "STUDY": (),
    "SERIES": ("PatientID", "StudyInstanceUID"),
    "IMAGE": ("PatientID", "StudyInstanceUID", "SeriesInstanceUID"),
}

_QUERY_RETRIEVE_LEVEL: Final = 0x00080052
_SPECIFIC_CHARACTER_SET: Final = 0x00080005
_RETRIEVE_AE_TITLE: Final = 0x00080054
_INSTANCE_AVAILABILITY: Final = 0x00080056
_NUMBER_OF_PATIENT_RELATED: Final[Mapping[int, str]] = {
    0x00201200: "studies",  # NumberOfPatientRelatedStudies
    0x00201202: "series",  # NumberOfPatientRelatedSeries
    0x00201204: "instances",  # NumberOfPatientRelatedInstances
}
_NUMBER_OF_STUDY_RELATED_SERIES: Final = "00201206"
_NUMBER_OF_STUDY_RELATED_INSTANCES: Final = "00201208"
_PATIENT_ID_JSON: Final = "00100020"
# Keys the bridge answers itself rather than the archive.
_ANSWERED_HERE: Final = frozenset(
    {_QUERY_RETRIEVE_LEVEL, _SPECIFIC_CHARACTER_SET, _RETRIEVE_AE_TITLE, _INSTANCE_AVAILABILITY}
)
_RESPONSE_CHARACTER_SET: Final = "ISO_IR 192"


@dataclass(frozen=True, slots=True)
class LocalMatch:
    """A matching key the bridge applies itself to the QIDO-RS results (PS3.4 §C.2.2.2)."""

    tag: int
    vr: str
    values: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class QidoQuery:
    """The QIDO-RS request for one C-FIND identifier, and what is left to do on its results."""

    level: str
    path: str
    params: dict[str, str]
    local: tuple[LocalMatch, ...] = ()
    parents: Mapping[int, DataElement] = field(default_factory=dict)


def _attribute_id(tag: int) -> str:
    # PS3.18 §8.3.4.1: an attribute is named by its keyword, or by its tag when it has none.
    return keyword_for_tag(tag) or f"{tag:08X}"


def _text_values(element: DataElement) -> list[str]:
    if element.VM == 0 or element.value is None:
        return []
    values = element.value if element.VM > 1 else [element.value]
    return [str(value) for value in values if str(value) != ""]


def qido_value(element: DataElement) -> str | None:
    """The QIDO-RS query value for a matching key, or None when it matches everything.

    Zero length and a lone `*` are universal matching (PS3.4 §C.2.2.2.3); several values are a list
    (UID list matching, PS3.4 §C.2.2.2.2), comma-separated in QIDO-RS (PS3.18 §8.3.4.1).
    """
    values = _text_values(element)
    if not values or values == ["*"]:
        return None
    return ",".join(values)


def _level(identifier: Dataset, sop_class_uid: str) -> str:
    levels = LEVELS_BY_SOP_CLASS.get(sop_class_uid)
    if levels is None:
        raise InvalidIdentifier(f"SOP Class {sop_class_uid} is not a Patient or Study Root model")
    level = str(identifier.get("QueryRetrieveLevel", "") or "").strip().upper()
    if level not in levels:
        raise InvalidIdentifier(f"QueryRetrieveLevel {level!r} is not one of {', '.join(levels)} for this model")
    return level


def _single_uid(identifier: Dataset, keyword: str) -> str | None:
    element = identifier.data_element(keyword) if keyword in identifier else None
    values = _text_values(element) if element is not None else []
    return values[0] if len(values) == 1 and values[0] != "*" else None


def _resource(level: str, identifier: Dataset) -> tuple[str, frozenset[str]]:
    """The QIDO-RS path, and which parent UIDs the path already matches."""
    study = _single_uid(identifier, "StudyInstanceUID")
    series = _single_uid(identifier, "SeriesInstanceUID")
    if level in ("PATIENT", "STUDY"):
        return "/studies", frozenset()
    if level == "SERIES":
        if study:
            return f"/studies/{quote(study, safe='')}/series", frozenset({"StudyInstanceUID"})
        return "/series", frozenset()
    if study and series:
        path = f"/studies/{quote(study, safe='')}/series/{quote(series, safe='')}/instances"
        return path, frozenset({"StudyInstanceUID", "SeriesInstanceUID"})
    if study:
        return f"/studies/{quote(study, safe='')}/instances", frozenset({"StudyInstanceUID"})
    return "/instances", frozenset()


def plan_query(identifier: Dataset, sop_class_uid: str) -> QidoQuery:
    """Translate a C-FIND identifier into a QIDO-RS request.

    Raises:
        InvalidIdentifier: unknown model or level.
    """
    level = _level(identifier, sop_class_uid)
    path, in_path = _resource(level, identifier)
    server_keys = QIDO_MATCHING_KEYS[level]
    if path in ("/series", "/instances"):
        # PS3.18 §10.6.1.2: the "all series / all instances" resources also match the keys of the
        # levels above, so a relational query (no single parent UID) still goes to the server.
        server_keys = server_keys | {"StudyInstanceUID", "SeriesInstanceUID"} | QIDO_MATCHING_KEYS["STUDY"]
    params: dict[str, str] = {}
    include: list[str] = []
    local: list[LocalMatch] = []
    parents: dict[int, DataElement] = {}
    for element in identifier:
        tag = int(element.tag)
        if tag in _ANSWERED_HERE or tag in _NUMBER_OF_PATIENT_RELATED or element.tag.group in (0, 2):
            continue
        name = _attribute_id(tag)
        if name in _PARENT_KEYS[level]:
            parents[tag] = element
            if name in in_path or (name == "PatientID" and in_path):
                continue
        include.append(name)
        if element.VR == "SQ":
            # Sequence matching (PS3.4 §C.2.2.2.6) is optional for an SCP: the sequence is returned.
            continue
        value = qido_value(element)
        if value is None:
            continue
        if name in server_keys:
            params[name] = value
        else:
            local.append(LocalMatch(tag, element.VR, tuple(_text_values(element))))
    if level == "PATIENT":
        include += ["PatientID", "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances"]
    if include:
        params["includefield"] = ",".join(dict.fromkeys(include))
    return QidoQuery(level, path, params, tuple(local), parents)


def _pattern(text: str) -> re.Pattern[str]:
    # PS3.4 §C.2.2.2.4 wildcard matching: "*" any sequence of characters, "?" any single one.
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in text), re.DOTALL)


def _in_range(value: str, low: str, high: str, vr: str) -> bool:
    # PS3.4 §C.2.2.2.5 range matching; DA, TM and DT strings order as their values once padded.
    width = max(len(value), len(low), len(high))
    if vr == "TM":
        value, low, high = value.replace(":", ""), low.replace(":", ""), high.replace(":", "")
    return (not low or value.ljust(width, "0") >= low.ljust(width, "0")) and (
        not high or value.ljust(width, "0") <= high.ljust(width, "9")
    )


def matches(match: LocalMatch, element: DataElement | None) -> bool:
    """Whether an attribute of a result satisfies a matching key (PS3.4 §C.2.2.2).

    A zero-length attribute matches nothing but universal matching, which never reaches here.
    """
    values = _text_values(element) if element is not None else []
    if not values:
        return False
    if len(match.values) > 1:
        # PS3.4 §C.2.2.2.2 list of UID matching.
        return any(value in match.values for value in values)
    wanted = match.values[0]
    if match.vr in ("DA", "TM", "DT") and "-" in wanted:
        low, _, high = wanted.partition("-")
        return any(_in_range(value, low, high, match.vr) for value in values)
    if match.vr != "UI" and ("*" in wanted or "?" in wanted):
        pattern = _pattern(wanted)
        return any(pattern.fullmatch(value) for value in values)
    return wanted in values


def _restrict(requested: DataElement, found: DataElement) -> DataElement:
    """The found attribute, with sequence items cut to the item keys the request asked for."""
    if requested.VR != "SQ" or not requested.value or not found.value or not len(requested.value[0]):
        return found
    keys = [int(e.tag) for e in requested.value[0]]
    items = []
    for item in found.value:
        kept = Dataset()
        for sub in requested.value[0]:
            tag = int(sub.tag)
            if tag in item:
                kept[tag] = _restrict(sub, item[tag])
            elif tag in keys:
                kept.add_new(tag, sub.VR, [] if sub.VR == "SQ" else None)
        items.append(kept)
    return DataElement(found.tag, "SQ", DicomSequence(items))


def build_response(
    identifier: Dataset,
    query: QidoQuery,
    result: Dataset,
    computed: Mapping[int, Any],
    retrieve_ae_title: str,
) -> Dataset:
    """One Pending identifier: exactly the requested keys (PS3.4 §C.4.1.1.3.2), UTF-8 encoded."""
    response = Dataset()
    response.SpecificCharacterSet = _RESPONSE_CHARACTER_SET
    for requested in identifier:
        tag = int(requested.tag)
        if requested.tag.group in (0, 2) or tag == _SPECIFIC_CHARACTER_SET:
            continue
        if tag == _QUERY_RETRIEVE_LEVEL:
            response.QueryRetrieveLevel = query.level
        elif tag == _RETRIEVE_AE_TITLE:
            response.RetrieveAETitle = retrieve_ae_title
        elif tag == _INSTANCE_AVAILABILITY:
            # PS3.4 §C.4.1.1.3.2: everything the bridge can reach is retrievable at once.
            response.InstanceAvailability = "ONLINE"
        elif tag in computed:
            response.add_new(tag, requested.VR, computed[tag])
        elif tag in result and (result[tag].VM > 0 or tag not in query.parents):
            response[tag] = _restrict(requested, result[tag])
        elif tag in query.parents:
            response[tag] = query.parents[tag]
        else:
            response.add_new(tag, requested.VR, [] if requested.VR == "SQ" else None)
    return response


def search(client: DicomWebClient, query: QidoQuery) -> Iterator[tuple[Dataset, dict[int, Any]]]:
    """Run the query; yield each matching result with the values computed for it.

    At PATIENT level the studies are grouped by PatientID (QIDO-RS has no patient resource) and the
    Number of Patient Related Studies/Series/Instances are summed from the study counts.

    Raises:
        ServerUnreachable: see `DicomWebClient`.
        DicomWebError: see `DicomWebClient`.
    """
    results = (Dataset.from_json(item) for item in client.search(query.path, query.params))
    if query.level != "PATIENT":
        for result in results:
            if all(matches(m, result.get(m.tag)) for m in query.local):
                yield result, {}
        return
    patients: dict[str, tuple[Dataset, dict[int, Any]]] = {}
    for result in results:
        if not all(matches(m, result.get(m.tag)) for m in query.local):
            continue
        key = str(result.get("PatientID", ""))
        _, counts = patients.setdefault(key, (result, dict.fromkeys(_NUMBER_OF_PATIENT_RELATED, 0)))
        counts[0x00201200] += 1
        counts[0x00201202] += int(result.get("NumberOfStudyRelatedSeries") or 0)
        counts[0x00201204] += int(result.get("NumberOfStudyRelatedInstances") or 0)
    yield from patients.values()


def status_for_error(error: BridgeError) -> int:
    """The C-FIND failure status for an error (PS3.4 Table C.4-1).

    An identifier the bridge or the server cannot take (server 400) does not match the SOP Class;
    an archive that cannot answer now refuses for resources; anything else is unable to process.
    """
    if isinstance(error, InvalidIdentifier):
        return FindStatus.ERROR_IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS
    if isinstance(error, DicomWebError):
        if error.status_code == 400:
            return FindStatus.ERROR_IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS
        if error.status_code >= 500:
            return FindStatus.REFUSED_OUT_OF_RESOURCES
    if isinstance(error, ServerUnreachable):
        return FindStatus.REFUSED_OUT_OF_RESOURCES
    return FindStatus.ERROR_UNABLE_TO_PROCESS


def handle_find(
    event: Event,
    client: DicomWebClient,
    registry: NodeRegistry,
    activities: ActivityLog,
    ae_title: str,
) -> Iterator[tuple[int, Dataset | None]]:
    """EVT_C_FIND: one Pending response per match, C-CANCEL checked before each."""
    activity = activities.of(event.assoc)
    if not registry.permits(event.assoc.requestor.ae_title, "find"):
        activity.count("C-FIND refused")
        yield FindStatus.REFUSED_NOT_AUTHORIZED, None
        return
    identifier = event.identifier
    try:
        query = plan_query(identifier, str(event.request.AffectedSOPClassUID))
        found = 0
        for result, computed in search(client, query):
            if event.is_cancelled:
                activity.count("C-FIND cancelled")
                yield FindStatus.CANCEL, None
                return
            found += 1
            yield FindStatus.PENDING, build_response(identifier, query, result, computed, ae_title)
    except BridgeError as exc:
        _LOG.warning("C-FIND failed: %s", exc)
        activity.count("C-FIND failed")
        yield status_for_error(exc), None
        return
    except (ValueError, TypeError, KeyError) as exc:
        # pydicom rejects a value in the request identifier or in the archive's DICOM JSON.
        _LOG.warning("C-FIND could not convert a data set: %r", exc)
        activity.count("C-FIND failed")
        yield FindStatus.ERROR_UNABLE_TO_PROCESS, None
        return
    activity.count("C-FIND")
    activity.count("C-FIND matches", found)
    yield FindStatus.SUCCESS, None
