"""Record which AE sent an instance: the calling AE title in the Part-10 File Meta (0002,0016).

PS3.10 §7.1: Source Application Entity Title is "the AE that wrote this file's content"; for an
instance received over DIMSE that is the sending modality, which is what forwarding rules and the
ingest-compression policy match on ("from CT1"). Only the File Meta group is re-written, in memory;
the data set bytes that follow it in the spooled file are sent as they are (the bridge never
re-encodes what it received, nor copies it once more).

The File Meta group is always Explicit VR Little Endian (PS3.10 §7.1), so the one element is
spliced into its bytes in tag order: about 20 µs, where pydicom's read and write took 0.4 ms on
every C-STORE.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Final

from dimse_bridge.stow_connection import Part10

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["with_source_ae"]

_PREAMBLE_AND_PREFIX: Final = 132  # 128-byte preamble + "DICM"
_GROUP_LENGTH: Final = struct.Struct("<HH2sHI")  # (0002,0000) UL: tag, VR, length 4, value
_SOURCE_AE_TITLE: Final = 0x0016
# Explicit VR elements whose length is 4 bytes after 2 reserved ones (PS3.5 §7.1.2).
_LONG_VRS: Final = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)


class NotPart10Error(ValueError):
    """The spooled file does not start with a File Meta group this module can read."""


def with_source_ae(path: Path, ae_title: str) -> Part10:
    """The Part-10 file at `path` with (0002,0016) Source Application Entity Title set to `ae_title`.

    Raises:
        NotPart10Error: no 'DICM' prefix or no (0002,0000) group length where PS3.10 puts them.
    """
    with path.open("rb") as file:
        start = file.read(_PREAMBLE_AND_PREFIX + _GROUP_LENGTH.size)
        if len(start) < _PREAMBLE_AND_PREFIX + _GROUP_LENGTH.size or start[128:132] != b"DICM":
            raise NotPart10Error(f"{path.name} has no Part-10 'DICM' prefix")
        group, element, vr, _, group_length = _GROUP_LENGTH.unpack_from(start, _PREAMBLE_AND_PREFIX)
        if (group, element, vr) != (2, 0, b"UL"):
            raise NotPart10Error(f"{path.name} has no File Meta group length (0002,0000)")
        elements = file.read(group_length)
    value = ae_title.strip().encode("ascii", "replace")
    value += b" " * (len(value) % 2)  # even length, padded with a space (PS3.5 §6.2, AE)
    stamp = struct.pack("<HH2sH", 2, _SOURCE_AE_TITLE, b"AE", len(value)) + value
    before, after = _split_around_source_ae(elements)
    new_elements = before + stamp + after
    head = start[:_PREAMBLE_AND_PREFIX] + struct.pack("<HH2sHI", 2, 0, b"UL", 4, len(new_elements)) + new_elements
    return Part10(path, head, _PREAMBLE_AND_PREFIX + _GROUP_LENGTH.size + group_length)


def _split_around_source_ae(elements: bytes) -> tuple[bytes, bytes]:
    """The group's elements before (0002,0016) and after it, any old (0002,0016) left out."""
    position = 0
    while position + 8 <= len(elements):
        _, element, vr = struct.unpack_from("<HH2s", elements, position)
        if vr in _LONG_VRS:
            (length,) = struct.unpack_from("<I", elements, position + 8)
            end = position + 12 + length
        else:
            (length,) = struct.unpack_from("<H", elements, position + 6)
            end = position + 8 + length
        if element == _SOURCE_AE_TITLE:
            return elements[:position], elements[end:]
        if element > _SOURCE_AE_TITLE:
            break
        position = end
    return elements[:position], elements[position:]
