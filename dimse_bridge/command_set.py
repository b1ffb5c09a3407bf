"""DIMSE command sets encoded without pydicom's general writer.

Every DIMSE message starts with a command set: a dozen group-0000 elements, always Implicit VR
Little Endian (PS3.7 §6.3.1). pynetdicom encodes each one twice with pydicom's `write_dataset`
(once to learn the Command Group Length, once to send it), about 0.3 ms apiece; a C-MOVE or C-GET
sends two command sets per sub-operation (the C-STORE-RQ and a Pending response) and a C-STORE SCP
one per instance. The elements of PS3.7 Annex E have only a few VRs, so they are packed here
directly; anything else (an unknown element, a value of an unexpected type, non-ASCII text) goes to
pydicom as before. `tests/dimse_bridge/test_command_set.py` checks the bytes are pydicom's.
`install()` puts the encoder in pynetdicom's `dimse_messages`, whose only use of `encode` is for
command sets.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Final

import pynetdicom.dimse_messages
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag
from pynetdicom.dsutils import encode as pydicom_encode

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

__all__ = ["encode_command_set", "install"]

_US: Final = struct.Struct("<H")
_UL: Final = struct.Struct("<I")
_HEADER: Final = struct.Struct("<HHI")  # Implicit VR: group, element, value length
# Text VRs of the command elements and the byte each pads an odd-length value with (PS3.5 §6.2).
_TEXT_PADDING: Final = {"UI": b"\0", "AE": b" ", "LO": b" ", "SH": b" ", "CS": b" ", "LT": b" ", "ST": b" "}


def encode_command_set(
    dataset: Dataset, is_implicit_vr: bool, is_little_endian: bool, deflated: bool = False
) -> bytes | None:
    """`dataset` encoded like `pynetdicom.dsutils.encode`; command sets without pydicom's writer."""
    if is_implicit_vr and is_little_endian and not deflated:
        encoded = _fast_command_set(dataset)
        if encoded is not None:
            return encoded
    return pydicom_encode(dataset, is_implicit_vr, is_little_endian, deflated)


def install() -> None:
    """Let pynetdicom's DIMSE messages encode their command sets with `encode_command_set`."""
    setattr(pynetdicom.dimse_messages, "encode", encode_command_set)  # noqa: B010


def _fast_command_set(dataset: Dataset) -> bytes | None:
    """The Implicit VR Little Endian bytes of a group-0000 data set; None when pydicom must do it."""
    encoded = bytearray()
    for element in dataset.elements():
        tag = int(element.tag)
        if tag >> 16:
            return None  # not a command set
        value = element.value
        vr = element.VR
        if vr in ("US", "UL"):
            packed = _numbers(_US if vr == "US" else _UL, value)
        elif vr in _TEXT_PADDING:
            packed = _text(value, _TEXT_PADDING[vr])
        elif vr == "AT":
            packed = _tags(value)
        else:
            return None
        if packed is None:
            return None
        encoded += _HEADER.pack(0, tag & 0xFFFF, len(packed))
        encoded += packed
    return bytes(encoded)


def _values(value: object) -> list[object]:
    return list(value) if isinstance(value, list | MultiValue) else [value]


def _numbers(number: struct.Struct, value: object) -> bytes | None:
    values = _values(value)
    if value is None or value == "":
        return b""
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return None
    try:
        return b"".join(number.pack(v) for v in values)
    except struct.error:
        return None  # out of range: pydicom reports it


def _text(value: object, padding: bytes) -> bytes | None:
    if value is None:
        return b""
    values = _values(value)
    if not all(isinstance(v, str) for v in values):
        return None
    text = "\\".join(str(v) for v in values)
    if not text.isascii():
        return None
    raw = text.encode("ascii")
    return raw + padding if len(raw) % 2 else raw


def _tags(value: object) -> bytes | None:
    values = _values(value)
    if value is None or value == "":
        return b""
    tags = [int(v) for v in values if isinstance(v, BaseTag)]
    if len(tags) != len(values):
        return None
    return b"".join(struct.pack("<HH", tag >> 16, tag & 0xFFFF) for tag in tags)
