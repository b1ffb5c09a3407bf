"""An instance's metadata as DICOM JSON (PS3.18 §F.2), bulk data replaced by BulkDataURIs."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Final

from storage.dicom.records import BULK_BASE

if TYPE_CHECKING:
    from pydicom.dataelem import DataElement
    from pydicom.dataset import Dataset

__all__ = ["BULK_DATA_THRESHOLD", "bulk_data_uri", "element_json", "instance_metadata"]

# Binary values longer than this are served by reference (PS3.18 §8.6.3: the server decides).
BULK_DATA_THRESHOLD: Final = 1024
_BULK_VRS: Final = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
_AVAILABLE_TRANSFER_SYNTAX_UID: Final = "00083002"


def bulk_data_uri(study_uid: str, series_uid: str, sop_uid: str, tag: int) -> str:
    """The BulkDataURI of a top-level element, under the BULK_BASE placeholder."""
    return f"{BULK_BASE}/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}/bulk/{tag:08X}"


def instance_metadata(
    dataset: Dataset,
    uids: tuple[str, str, str],
    transfer_syntax_uid: str,
    pixel_data: tuple[int, str] | None,
) -> bytes:
    """Serialise `dataset` (read without its pixel data) to compact UTF-8 DICOM JSON.

    Args:
        dataset: the header as read, decoded with its Specific Character Set.
        uids: (study, series, SOP instance) UIDs, for the BulkDataURIs.
        transfer_syntax_uid: reported as Available Transfer Syntax UID (0008,3002).
        pixel_data: (tag, VR) of the pixel data element that was not read, if the instance has one.
    """
    study_uid, series_uid, sop_uid = uids
    result: dict[str, Any] = {}
    for element in dataset:
        tag = int(element.tag)
        key = f"{tag:08X}"
        if element.VR in _BULK_VRS and _value_length(element) > BULK_DATA_THRESHOLD:
            result[key] = {
                "vr": element.VR,
                "BulkDataURI": bulk_data_uri(study_uid, series_uid, sop_uid, tag),
            }
            continue
        converted = element_json(element)
        if converted is not None:
            result[key] = converted
    result[_AVAILABLE_TRANSFER_SYNTAX_UID] = {"vr": "UI", "Value": [transfer_syntax_uid]}
    if pixel_data is not None:
        tag, vr = pixel_data
        result[f"{tag:08X}"] = {
            "vr": vr,
            "BulkDataURI": bulk_data_uri(study_uid, series_uid, sop_uid, tag),
        }
    ordered = dict(sorted(result.items()))
    return json.dumps(ordered, ensure_ascii=False, separators=(",", ":")).encode()


def element_json(element: DataElement) -> dict[str, Any] | None:
    """The element as DICOM JSON, binary values inline; None when its value has no JSON form.

    A value its VR cannot hold (IS "1A") cannot be written as a JSON number; the stored file still
    keeps it, so leaving it out of the JSON loses nothing.
    """
    try:
        # Nested sequences keep binary values inline: a BulkDataURI names a top-level tag only.
        converted: dict[str, Any] = element.to_json_dict(bulk_data_element_handler=None, bulk_data_threshold=1 << 30)
    except (ValueError, TypeError, OverflowError):
        return None
    return converted


def _value_length(element: Any) -> int:
    value = element.value
    return len(value) if isinstance(value, bytes | bytearray) else 0
