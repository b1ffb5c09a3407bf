"""DICOM JSON (PS3.18 §F.2) straight from the bytes of a read but not yet converted element.

Ingest computes every instance's metadata once, and pydicom's way (convert the raw element to a
`DataElement`, then `to_json_dict`) costs about 20 µs per element: 5 ms for a 250-element CT header,
most of a single-instance STOW-RS. This module handles the common, unambiguous cases in a few
microseconds and returns None for everything else (sequences, person names, AT, UN, big endian,
non-ASCII text, values that need pydicom's judgement), which the caller converts with pydicom. The
output is exactly pydicom's (`tests/storage/test_raw_json.py` compares both on every file pydicom
ships), including its quirks: multi-valued strings lose only the padding of the whole value, SH/LO/UC
items each lose trailing spaces, AE items lose both.
"""

from __future__ import annotations

import base64
import re
import struct
from typing import TYPE_CHECKING, Any, Final

from pydicom.datadict import dictionary_VR

if TYPE_CHECKING:
    from pydicom.dataelem import RawDataElement

__all__ = ["raw_element_json"]

DicomJson = dict[str, Any]

# multi_string VRs: the whole value loses trailing spaces and NULs, then is split on backslashes.
_SPLIT_VRS: Final = frozenset({"AS", "CS", "DA", "DT", "TM", "UI"})
# Text VRs whose items each lose trailing spaces and NULs after the split.
_ITEM_STRIPPED_VRS: Final = frozenset({"SH", "LO", "UC"})
# Single-valued text: backslashes are characters, trailing spaces and NULs go.
_SINGLE_TEXT_VRS: Final = frozenset({"LT", "ST", "UT"})
_STRUCT_FORMATS: Final = {"US": "H", "SS": "h", "UL": "L", "SL": "l", "FL": "f", "FD": "d", "SV": "q", "UV": "Q"}
_BINARY_VRS: Final = frozenset({"OB", "OD", "OF", "OL", "OV", "OW"})
_INTEGER: Final = re.compile(r"\s*[-+]?\d+\s*")
_DECIMAL: Final = re.compile(r"\s*[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?\s*")
_ESCAPE: Final = 0x1B  # ISO 2022 code extensions switch character sets: pydicom must decode those


def raw_element_json(raw: RawDataElement) -> DicomJson | None:
    """`raw` as DICOM JSON (binary values inline), or None when pydicom must convert it."""
    value = raw.value
    if value is None or not raw.is_little_endian:
        return None
    vr = raw.VR or _dictionary_vr(int(raw.tag))
    if vr is None or vr == "SQ":
        return None
    if not value:
        return {"vr": vr}
    if (struct_format := _STRUCT_FORMATS.get(vr)) is not None:
        return _numbers(vr, value, struct_format)
    if vr in _BINARY_VRS:
        return {"vr": vr, "InlineBinary": base64.b64encode(value).decode()}
    if not value.isascii() or _ESCAPE in value:
        return None
    return _text(vr, value.decode("ascii"))


def _dictionary_vr(tag: int) -> str | None:
    """The VR an Implicit VR element has by the public dictionary, when it names exactly one."""
    if tag >> 16 & 1 or not tag & 0xFFFF:
        return None  # private elements and group lengths: pydicom's rules
    try:
        vr = dictionary_VR(tag)
    except KeyError:
        return None
    return str(vr) if len(vr) == 2 and vr not in ("UN", "SQ") else None


def _numbers(vr: str, value: bytes, struct_format: str) -> DicomJson | None:
    size = struct.calcsize("<" + struct_format)
    if len(value) % size:
        return None
    numbers = list(struct.unpack(f"<{len(value) // size}{struct_format}", value))
    if vr == "SS" and numbers[0] < 0:
        return None  # pydicom reads a negative first LUT Descriptor value as unsigned
    return {"vr": vr, "Value": numbers}


def _text(vr: str, text: str) -> DicomJson | None:
    items: list[Any]
    if vr in _SPLIT_VRS:
        items = text.rstrip(" \0").split("\\")
    elif vr in _ITEM_STRIPPED_VRS:
        items = [item.rstrip(" \0") for item in text.split("\\")]
    elif vr in _SINGLE_TEXT_VRS:
        items = [text.rstrip(" \0")]
    elif vr == "AE":
        items = [item.strip() for item in text.split("\\")]
    elif vr == "UR":
        items = [text.rstrip()]
    elif vr == "IS":
        items = text.rstrip(" \0").split("\\")
        if not all(_INTEGER.fullmatch(item) for item in items):
            return None
        items = [int(item) for item in items]
    elif vr == "DS":
        items = text.strip().split("\\")
        if not all(_DECIMAL.fullmatch(item) for item in items):
            return None
        items = [float(item) for item in items]
    else:
        return None  # PN, AT and anything unforeseen
    if items == [""]:
        return {"vr": vr}
    return {"vr": vr, "Value": items}
