"""An instance's metadata as DICOM JSON (PS3.18 §F.2), bulk data replaced by BulkDataURIs."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Final

from pydicom.dataelem import RawDataElement

from storage.dicom.raw_json import raw_element_json
from storage.dicom.records import BULK_BASE

if TYPE_CHECKING:
    from pydicom.dataelem import DataElement
    from pydicom.dataset import Dataset

__all__ = ["BULK_DATA_THRESHOLD", "bulk_data_uri", "dataset_json", "element_json", "level_json", "serialise"]

# Binary values longer than this are served by reference (PS3.18 §8.6.3: the server decides).
BULK_DATA_THRESHOLD: Final = 1024
_BULK_VRS: Final = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})

DicomJson = dict[str, Any]


def bulk_data_uri(study_uid: str, series_uid: str, sop_uid: str, tag: int) -> str:
    """The BulkDataURI of a top-level element, under the BULK_BASE placeholder."""
    return f"{BULK_BASE}/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}/bulk/{tag:08X}"


def dataset_json(dataset: Dataset, uids: tuple[str, str, str]) -> dict[int, DicomJson]:
    """Every top-level element of `dataset` as DICOM JSON, by tag; large binary values by reference.

    Args:
        dataset: the header as read, decoded with its Specific Character Set.
        uids: (study, series, SOP instance) UIDs, for the BulkDataURIs.
    """
    result: dict[int, DicomJson] = {}
    for stored in dataset.elements():
        tag = int(stored.tag)
        if isinstance(stored, RawDataElement):
            # A UN element may turn out to be text once pydicom looks its tag up: not decided here.
            big = stored.value is not None and len(stored.value) > BULK_DATA_THRESHOLD
            if big and stored.VR in _BULK_VRS and stored.VR != "UN":
                result[tag] = {"vr": stored.VR, "BulkDataURI": bulk_data_uri(*uids, tag)}
                continue
            if (fast := raw_element_json(stored)) is not None:
                result[tag] = fast
                continue
        element = dataset[tag]
        if element.VR in _BULK_VRS and _value_length(element) > BULK_DATA_THRESHOLD:
            result[tag] = {"vr": element.VR, "BulkDataURI": bulk_data_uri(*uids, tag)}
        elif (converted := element_json(element)) is not None:
            result[tag] = converted
    return result


def level_json(elements: dict[int, DicomJson], tags: frozenset[int]) -> DicomJson:
    """The DICOM JSON object of those `elements` whose tags are in `tags`."""
    return {f"{tag:08X}": value for tag, value in elements.items() if tag in tags}


def serialise(elements: dict[int, DicomJson]) -> bytes:
    """Compact UTF-8 DICOM JSON of `elements`, in tag order."""
    ordered = {f"{tag:08X}": elements[tag] for tag in sorted(elements)}
    return json.dumps(ordered, ensure_ascii=False, separators=(",", ":")).encode()


def element_json(element: DataElement) -> DicomJson | None:
    """The element as DICOM JSON, binary values inline; None when its value has no JSON form.

    A value its VR cannot hold (IS "1A") cannot be written as a JSON number; the stored file still
    keeps it, so leaving it out of the JSON loses nothing.
    """
    try:
        # Nested sequences keep binary values inline: a BulkDataURI names a top-level tag only.
        converted: DicomJson = element.to_json_dict(bulk_data_element_handler=None, bulk_data_threshold=1 << 30)
    except (ValueError, TypeError, OverflowError):
        return None
    return converted


def _value_length(element: DataElement) -> int:
    value = element.value
    return len(value) if isinstance(value, bytes | bytearray) else 0
