"""Record which AE sent an instance: the calling AE title in the Part-10 File Meta (0002,0016).

PS3.10 §7.1: Source Application Entity Title is "the AE that wrote this file's content"; for an
instance received over DIMSE that is the sending modality, which is what forwarding rules and the
ingest-compression policy match on ("from CT1"). Only the File Meta group is rewritten; the data
set bytes that follow it are copied unchanged (the bridge never re-encodes what it received).
"""

from __future__ import annotations

import shutil
from typing import TYPE_CHECKING, Final

from pydicom.filereader import read_file_meta_info
from pydicom.filewriter import write_file_meta_info

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["stamp_source_ae"]

_PREAMBLE_AND_PREFIX: Final = 132  # 128-byte preamble + "DICM"
_GROUP_LENGTH_ELEMENT: Final = 12  # (0002,0000) UL: tag 4 + VR 2 + length 2 + value 4


def stamp_source_ae(path: Path, ae_title: str) -> None:
    """Set (0002,0016) Source Application Entity Title of the Part-10 file at `path` to `ae_title`."""
    meta = read_file_meta_info(path)
    if meta.get("SourceApplicationEntityTitle", "").strip() == ae_title.strip():
        return
    meta_end = _PREAMBLE_AND_PREFIX + _GROUP_LENGTH_ELEMENT + int(meta.FileMetaInformationGroupLength)
    meta.SourceApplicationEntityTitle = ae_title.strip()
    stamped = path.with_name(path.name + ".stamped")
    with path.open("rb") as source, stamped.open("wb") as target:
        target.write(b"\0" * 128 + b"DICM")
        write_file_meta_info(target, meta)  # type: ignore[arg-type]
        source.seek(meta_end)
        shutil.copyfileobj(source, target, 1024 * 1024)
    stamped.replace(path)
