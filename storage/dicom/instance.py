"""Read a received Part-10 file once: validate it, extract the index keys, the metadata and frame offsets.

Only the header is parsed into memory; pixel data is walked by seeking over it (a 4 GB multi-frame
never lives in RAM), which also proves the file is complete.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any, BinaryIO, NamedTuple

from pydicom import dcmread
from pydicom.datadict import tag_for_keyword
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from storage.dicom.attributes import INSTANCE_LEVEL_TAGS, SERIES_LEVEL_TAGS, STUDY_LEVEL_TAGS
from storage.dicom.dicom_json import DicomJson, bulk_data_uri, dataset_json, level_json, serialise
from storage.dicom.failure_reasons import (
    CANNOT_UNDERSTAND,
    ERROR_PROCESSING,
    SOP_CLASS_NOT_SUPPORTED,
    TRANSFER_SYNTAX_NOT_SUPPORTED,
)
from storage.dicom.media_types import is_known_transfer_syntax
from storage.dicom.records import (
    Frame,
    InstanceAttributes,
    ParsedInstance,
    SeriesAttributes,
    StudyAttributes,
)
from storage.dicom.uids import is_valid_uid
from storage.errors import InvalidInstance

if TYPE_CHECKING:
    from pathlib import Path

    from pydicom.dataset import Dataset

__all__ = ["read_instance"]

_PIXEL_DATA_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})
_ITEM = 0xFFFEE000
_SEQUENCE_DELIMITER = 0xFFFEE0DD
# Explicit VR Big Endian (retired) keeps native frames big endian: served by decoding, not by offsets.
_BIG_ENDIAN = "1.2.840.10008.1.2.2"
_DEFLATED = ("1.2.840.10008.1.2.1.99",)
_IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
_AVAILABLE_TRANSFER_SYNTAX_UID = 0x00083002
# Markers that open a compressed frame's codestream (JPEG / JPEG-LS SOI, J2K SOC, JP2 box).
_FRAME_START_MARKERS = (b"\xff\xd8", b"\xff\x4f", b"\x00\x00\x00\x0cjP")
_INDEXED = (
    *("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime", "AccessionNumber"),
    *("StudyID", "StudyDescription", "ReferringPhysicianName", "InstitutionName", "Modality", "SeriesNumber"),
    *("SeriesDescription", "BodyPartExamined", "PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime"),
    *("InstanceNumber", "Rows", "Columns", "BitsAllocated"),
)
_TAGS = {keyword: int(tag_for_keyword(keyword) or 0) for keyword in _INDEXED}


def read_instance(path: Path) -> ParsedInstance:
    """Parse and validate the Part-10 file at `path`.

    Raises:
        InvalidInstance: not Part-10 DICOM, truncated, required UIDs missing or malformed, unknown
            transfer syntax. Its `failure_reason` is the PS3.18 §10.5.3 code to report.
    """
    try:
        return _read_instance(path)
    except InvalidInstance:
        raise
    except Exception as exc:
        raise InvalidInstance(
            f"the DICOM data cannot be parsed ({type(exc).__name__}: {exc})", CANNOT_UNDERSTAND
        ) from exc


def _read_instance(path: Path) -> ParsedInstance:
    with path.open("rb") as fp:
        dataset = _read_header(fp)
        transfer_syntax = str(dataset.file_meta.get("TransferSyntaxUID", ""))
        study_uid, series_uid, sop_uid, sop_class_uid = _required_uids(dataset)
        try:
            if not is_known_transfer_syntax(transfer_syntax):
                raise InvalidInstance(
                    f"transfer syntax {transfer_syntax!r} of instance {sop_uid} is not a DICOM storage "
                    "transfer syntax; re-send it in Explicit VR Little Endian or a standard compression",
                    TRANSFER_SYNTAX_NOT_SUPPORTED,
                )
            pixels = _walk_pixel_data(fp, dataset, transfer_syntax, path.stat().st_size)
        except InvalidInstance as exc:
            # The UIDs are known by now: the Store response names the instance that failed.
            exc.sop_class_uid, exc.sop_instance_uid = sop_class_uid, sop_uid
            raise

    uids = (study_uid, series_uid, sop_uid)
    elements = dataset_json(dataset, uids)
    metadata = dict(elements)
    metadata[_AVAILABLE_TRANSFER_SYNTAX_UID] = {"vr": "UI", "Value": [transfer_syntax]}
    if pixels.tag:
        # Not read (it may be gigabytes): offered by reference, as PS3.18 §F.2.6 allows.
        metadata[pixels.tag] = {"vr": pixels.vr, "BulkDataURI": bulk_data_uri(*uids, pixels.tag)}
    header = _HeaderValues(elements)
    return ParsedInstance(
        study=StudyAttributes(
            study_instance_uid=study_uid,
            patient_id=header.text("PatientID"),
            patient_name=header.text("PatientName"),
            patient_birth_date=header.text("PatientBirthDate"),
            patient_sex=header.text("PatientSex"),
            study_date=header.text("StudyDate"),
            study_time=header.text("StudyTime"),
            accession_number=header.text("AccessionNumber"),
            study_id=header.text("StudyID"),
            study_description=header.text("StudyDescription"),
            referring_physician_name=header.text("ReferringPhysicianName"),
            institution_name=header.text("InstitutionName"),
            json=level_json(elements, STUDY_LEVEL_TAGS),
        ),
        series=SeriesAttributes(
            series_instance_uid=series_uid,
            modality=header.text("Modality"),
            series_number=header.integer("SeriesNumber"),
            series_description=header.text("SeriesDescription"),
            body_part_examined=header.text("BodyPartExamined"),
            performed_procedure_step_start_date=header.text("PerformedProcedureStepStartDate"),
            performed_procedure_step_start_time=header.text("PerformedProcedureStepStartTime"),
            json=level_json(elements, SERIES_LEVEL_TAGS),
        ),
        instance=InstanceAttributes(
            sop_instance_uid=sop_uid,
            sop_class_uid=sop_class_uid,
            instance_number=header.integer("InstanceNumber"),
            transfer_syntax_uid=transfer_syntax,
            rows=header.integer("Rows"),
            columns=header.integer("Columns"),
            bits_allocated=header.integer("BitsAllocated"),
            number_of_frames=pixels.frame_count,
            json=level_json(elements, INSTANCE_LEVEL_TAGS),
        ),
        metadata=serialise(metadata),
        frames=pixels.frames,
    )


class _HeaderValues:
    """Index values read from the header's DICOM JSON, already converted once for the metadata.

    The same values `_text` and `_integer` give from the Dataset (tests/storage/dicom/test_instance.py
    compares them on every file pydicom ships), without pydicom converting each element a second time.
    """

    def __init__(self, elements: dict[int, DicomJson]) -> None:
        self._elements = elements

    def _values(self, keyword: str) -> list[Any]:
        values = self._elements.get(_TAGS[keyword], {}).get("Value")
        return values if isinstance(values, list) else []

    def text(self, keyword: str) -> str:
        """One str ('' when absent or empty; multi-values joined by backslash)."""
        texts = [_json_text(value) for value in self._values(keyword)]
        if len(texts) == 1:
            return texts[0].strip()
        return "\\".join(texts)

    def integer(self, keyword: str) -> int | None:
        """The single integer value, or None (absent, empty, several values, not an integer)."""
        values = self._values(keyword)
        if len(values) != 1:
            return None
        value = values[0]
        if isinstance(value, bool) or not isinstance(value, int | str):
            return None
        try:
            return int(value)
        except ValueError:
            return None


def _json_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, dict):
        # A person name: its component groups, as PS3.5 §6.2.1 writes them, trailing empty ones dropped.
        groups = [str(value.get(group, "")) for group in ("Alphabetic", "Ideographic", "Phonetic")]
        while groups and not groups[-1]:
            groups.pop()
        return "=".join(groups)
    return str(value)


def _read_header(fp: BinaryIO) -> Dataset:
    """Read everything before the pixel data, leaving `fp` at the pixel data element (or the end)."""
    try:
        # PS3.18 §10.5: STOW-RS application/dicom bodies are PS3.10 files, so the preamble is required.
        dataset = dcmread(fp, stop_before_pixels=True, defer_size="4 MB")
    except InvalidDicomError as exc:
        raise InvalidInstance(
            f"not a DICOM Part-10 file ({exc}); send files with the 128-byte preamble and 'DICM'",
            CANNOT_UNDERSTAND,
        ) from exc
    except (EOFError, ValueError, struct.error, LookupError, OSError) as exc:
        raise InvalidInstance(
            f"the DICOM header cannot be parsed ({exc}); the file is truncated or corrupt",
            CANNOT_UNDERSTAND,
        ) from exc
    if "TransferSyntaxUID" not in dataset.file_meta:
        raise InvalidInstance("the File Meta Information has no Transfer Syntax UID (0002,0010)", CANNOT_UNDERSTAND)
    return dataset


def _required_uids(dataset: Dataset) -> tuple[str, str, str, str]:
    """Return (study, series, sop instance, sop class) UIDs, validated per PS3.5 §9.1."""
    values = []
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID"):
        value = _text(dataset, keyword)
        if not value:
            raise InvalidInstance(f"the instance has no {keyword}", ERROR_PROCESSING)
        if not is_valid_uid(value):
            raise InvalidInstance(
                f"{keyword} {value!r} is not a valid UID (digits and dots, at most 64 characters)",
                ERROR_PROCESSING,
            )
        values.append(value)
    if not UID(values[3]).is_valid:
        raise InvalidInstance(f"SOP Class UID {values[3]!r} is malformed", SOP_CLASS_NOT_SUPPORTED)
    return values[0], values[1], values[2], values[3]


class _PixelData(NamedTuple):
    tag: int  # 0 when the instance has no pixel data
    vr: str
    frame_count: int
    frames: tuple[Frame, ...] | None


_NO_PIXEL_DATA = _PixelData(0, "", 0, None)


def _walk_pixel_data(fp: BinaryIO, dataset: Dataset, transfer_syntax: str, file_size: int) -> _PixelData:
    """Seek over the pixel data, checking it is complete; return its tag, VR and frame offsets."""
    frame_count = _integer(dataset, "NumberOfFrames") or 1
    if transfer_syntax in _DEFLATED:
        # The whole data set is deflated: no byte offsets into the file exist. pydicom has already
        # inflated and checked the header; frames are decoded from the file when asked for.
        if "Rows" not in dataset:
            return _NO_PIXEL_DATA
        return _PixelData(0x7FE00010, _native_vr(dataset), frame_count, None)
    header = fp.read(12)
    if len(header) < 8:
        return _NO_PIXEL_DATA
    little = transfer_syntax != _BIG_ENDIAN
    order = "<" if little else ">"
    group, element = struct.unpack(f"{order}HH", header[:4])
    tag = group << 16 | element
    if tag not in _PIXEL_DATA_TAGS:
        return _NO_PIXEL_DATA
    if transfer_syntax == _IMPLICIT_VR_LITTLE_ENDIAN:
        length = struct.unpack(f"{order}L", header[4:8])[0]
        value_offset = fp.tell() - 4
        vr = _native_vr(dataset)
    else:
        length = struct.unpack(f"{order}L", header[8:12])[0]
        value_offset = fp.tell()
        vr = header[4:6].decode("ascii", "replace")
    if length == 0xFFFFFFFF:
        fp.seek(value_offset)
        fragments = _scan_fragments(fp, file_size, order)
        return _PixelData(tag, vr, frame_count, _group_fragments(fp, dataset, fragments, frame_count))
    if value_offset + length > file_size:
        raise InvalidInstance(
            f"the pixel data is truncated: {length} bytes declared, {max(0, file_size - value_offset)} present",
            CANNOT_UNDERSTAND,
        )
    if not little or tag != 0x7FE00010:
        return _PixelData(tag, vr, frame_count, None)
    return _PixelData(tag, vr, frame_count, _native_frames(dataset, value_offset, length, frame_count))


def _native_vr(dataset: Dataset) -> str:
    """PS3.5 §8.2: native pixel data is OW above 8 bits allocated, else OB or OW."""
    return "OW" if (_integer(dataset, "BitsAllocated") or 16) > 8 else "OB"


def _native_frames(dataset: Dataset, value_offset: int, length: int, frame_count: int) -> tuple[Frame, ...] | None:
    """Frame offsets of native pixel data, or None when frames are not byte-aligned (1-bit)."""
    bits = _integer(dataset, "BitsAllocated") or 0
    rows, columns = _integer(dataset, "Rows") or 0, _integer(dataset, "Columns") or 0
    samples = _integer(dataset, "SamplesPerPixel") or 1
    frame_bits = rows * columns * samples * bits
    if bits % 8 or frame_bits == 0:
        return None
    frame_size = frame_bits // 8
    if _text(dataset, "PhotometricInterpretation") == "YBR_FULL_422":
        # PS3.3 §C.7.6.3.1.2: two chroma samples are shared by each pair of pixels.
        frame_size = frame_size * 2 // 3
    if frame_size * frame_count > length:
        raise InvalidInstance(
            f"the pixel data holds {length} bytes, less than the {frame_count} frame(s) of "
            f"{frame_size} bytes that Rows, Columns, Samples per Pixel and Bits Allocated declare",
            CANNOT_UNDERSTAND,
        )
    return tuple(Frame(((value_offset + i * frame_size, frame_size),)) for i in range(frame_count))


def _scan_fragments(fp: BinaryIO, file_size: int, order: str) -> list[tuple[int, int]]:
    """Return (offset, length) of every item of encapsulated pixel data, Basic Offset Table first.

    Hand-written rather than pydicom's parse_fragments, which accepts a missing Sequence
    Delimitation Item and seeks past the end of the file: here that must be a truncation error.
    """
    items: list[tuple[int, int]] = []
    while True:
        header = fp.read(8)
        if len(header) < 8:
            raise InvalidInstance(
                "the encapsulated pixel data is truncated: its Sequence Delimitation Item is missing",
                CANNOT_UNDERSTAND,
            )
        group, element, length = struct.unpack(f"{order}HHL", header)
        tag = group << 16 | element
        if tag == _SEQUENCE_DELIMITER:
            return items
        if tag != _ITEM or length == 0xFFFFFFFF:
            raise InvalidInstance(
                f"unexpected tag ({group:04X},{element:04X}) inside encapsulated pixel data",
                CANNOT_UNDERSTAND,
            )
        offset = fp.tell()
        if offset + length > file_size:
            raise InvalidInstance(
                f"the encapsulated pixel data is truncated: a fragment of {length} bytes at "
                f"offset {offset} ends past the end of the file ({file_size} bytes)",
                CANNOT_UNDERSTAND,
            )
        items.append((offset, length))
        fp.seek(length, 1)


def _group_fragments(
    fp: BinaryIO, dataset: Dataset, items: list[tuple[int, int]], frame_count: int
) -> tuple[Frame, ...] | None:
    """Assign fragments to frames (PS3.5 §A.4): one frame, one per frame, the offset table, or markers."""
    if not items:
        raise InvalidInstance("encapsulated pixel data without a Basic Offset Table item", CANNOT_UNDERSTAND)
    table, fragments = items[0], items[1:]
    if not fragments:
        return tuple()
    if frame_count == 1:
        return (Frame(tuple(fragments)),)
    if len(fragments) == frame_count:
        return tuple(Frame((fragment,)) for fragment in fragments)
    starts = _frame_starts_from_offset_table(fp, dataset, table, fragments)
    if starts is None:
        starts = [i for i, (offset, _) in enumerate(fragments) if _opens_frame(fp, offset)]
    if len(starts) != frame_count or (starts and starts[0] != 0):
        return None
    bounds = [*starts, len(fragments)]
    return tuple(Frame(tuple(fragments[bounds[i] : bounds[i + 1]])) for i in range(frame_count))


def _frame_starts_from_offset_table(
    fp: BinaryIO, dataset: Dataset, table: tuple[int, int], fragments: list[tuple[int, int]]
) -> list[int] | None:
    """Indexes of each frame's first fragment from the Extended or Basic Offset Table, if present."""
    if "ExtendedOffsetTable" in dataset:
        raw = dataset.ExtendedOffsetTable
        offsets = list(struct.unpack(f"<{len(raw) // 8}Q", raw))
    elif table[1]:
        fp.seek(table[0])
        raw = fp.read(table[1])
        offsets = list(struct.unpack(f"<{len(raw) // 4}L", raw))
    else:
        return None
    # Offsets are counted from the first byte of the first fragment's item tag (PS3.5 §A.4).
    first_item = fragments[0][0] - 8
    position_to_index = {offset - 8 - first_item: i for i, (offset, _) in enumerate(fragments)}
    starts = [position_to_index.get(offset) for offset in offsets]
    if any(start is None for start in starts):
        return None
    return [start for start in starts if start is not None]


def _opens_frame(fp: BinaryIO, offset: int) -> bool:
    fp.seek(offset)
    head = fp.read(6)
    return any(head.startswith(marker) for marker in _FRAME_START_MARKERS)


def _text(dataset: Dataset, keyword: str) -> str:
    """The attribute's value as one str ('' when absent; multi-values joined by backslash)."""
    element = dataset.get(keyword)
    if element is None or element == "":
        return ""
    if isinstance(element, list | tuple) or type(element).__name__ == "MultiValue":
        return "\\".join(str(item) for item in element)
    return str(element).strip()


def _integer(dataset: Dataset, keyword: str) -> int | None:
    value = dataset.get(keyword)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
