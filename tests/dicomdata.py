"""Test data for the DICOMweb suite: realistic instances made with pydicom, pydicom's bundled files
with fresh UIDs, multipart/related bodies, and the DICOM JSON that pydicom gives for a header.

Everything here is independent of the code under test (no import of storage/ or dicomweb/), so the
tests compare the server against pydicom, not against itself.
"""

from __future__ import annotations

import hashlib
import io
import random
import re
import struct
import unicodedata
import uuid
import zlib
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
from pydicom import dcmread, dcmwrite
from pydicom.data import get_charset_files, get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    BasicTextSRStorage,
    CTImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
    PositronEmissionTomographyImageStorage,
    generate_uid,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = [
    "BULK_VRS",
    "BUNDLED_FILES",
    "CHARSET_FILES",
    "Patient",
    "ReceivedPart",
    "SeriesSpec",
    "StudySpec",
    "build_instances",
    "bundled",
    "dataset_of",
    "expected_metadata",
    "frames_of",
    "header_of",
    "iter_instances",
    "multipart_body",
    "new_uid",
    "normalize_metadata",
    "normalize_name",
    "part10",
    "sample_study",
    "split_multipart",
    "uids_of",
    "wildcard_matches",
    "with_new_uids",
]

# pydicom-bundled test files of every transfer syntax the issue names (pydicom.data).
BUNDLED_FILES: Final = (
    "CT_small.dcm",  # explicit VR little endian, ISO_IR 100
    "MR_small.dcm",  # explicit VR little endian
    "SC_rgb_jpeg_dcmtk.dcm",  # JPEG baseline (lossy), ISO_IR 192
    "examples_ybr_color.dcm",  # JPEG baseline, 30 frames
    "SC_rgb_jpeg_gdcm.dcm",  # JPEG lossless SV1
    "JPEG2000.dcm",  # JPEG 2000 (lossy)
    "MR_small_jp2klossless.dcm",  # JPEG 2000 lossless
    "MR_small_jpeg_ls_lossless.dcm",  # JPEG-LS lossless
    "MR_small_RLE.dcm",  # RLE lossless
    "SC_rgb_rle_2frame.dcm",  # RLE, 2 frames, colour
    "image_dfl.dcm",  # deflated explicit VR little endian
    "MR_small_bigendian.dcm",  # explicit VR big endian (retired)
)
# Character sets: Latin-1 (French, German), UTF-8 (Chinese), ISO 2022 IR 87 (Japanese), Cyrillic.
CHARSET_FILES: Final = ("chrFren.dcm", "chrGerm.dcm", "chrX1.dcm", "chrH31.dcm", "chrRuss.dcm")

BULK_VRS: Final = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
_DEFLATED: Final = "1.2.840.10008.1.2.1.99"
_UID_TAGS: Final = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
_PREAMBLE: Final = 128


def new_uid() -> str:
    """A fresh UID."""
    return str(generate_uid())


# --- generated instances ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Patient:
    """A patient of the generated archive."""

    name: str
    id: str
    birth_date: str = "19700101"
    sex: str = "O"


@dataclass(frozen=True)
class SeriesSpec:
    """A series to generate: modality, number of instances, image size, frames per instance."""

    modality: str
    instances: int
    number: int = 1
    size: int = 32
    frames: int = 1
    description: str = ""
    series_uid: str = field(default_factory=new_uid)


@dataclass(frozen=True)
class StudySpec:
    """A study to generate, with its series."""

    patient: Patient
    study_date: str
    accession: str
    series: tuple[SeriesSpec, ...]
    study_time: str = "101500"
    description: str = ""
    study_uid: str = field(default_factory=new_uid)

    @property
    def instance_count(self) -> int:
        """Instances in the study."""
        return sum(series.instances for series in self.series)

    @property
    def modalities(self) -> set[str]:
        """ModalitiesInStudy."""
        return {series.modality for series in self.series}


_SOP_CLASSES: Final = {
    "CT": CTImageStorage,
    "MR": MRImageStorage,
    "PT": PositronEmissionTomographyImageStorage,
    "SR": BasicTextSRStorage,
}


def build_instances(study: StudySpec) -> list[Dataset]:
    """Every instance of `study`, as pydicom Datasets (UTF-8, Explicit VR Little Endian)."""
    return list(iter_instances(study))


def iter_instances(study: StudySpec) -> Iterator[Dataset]:
    """Every instance of `study`, made one at a time (for studies too big to hold at once)."""
    for series in study.series:
        for number in range(1, series.instances + 1):
            yield _instance(study, series, number)


def _instance(study: StudySpec, series: SeriesSpec, number: int) -> Dataset:
    ds = Dataset()
    sop_uid = new_uid()
    if series.frames > 1:
        sop_class = MultiFrameGrayscaleWordSecondaryCaptureImageStorage
    else:
        sop_class = _SOP_CLASSES[series.modality]
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = study.study_date
    ds.SeriesDate = study.study_date
    ds.StudyTime = study.study_time
    ds.AccessionNumber = study.accession
    ds.Modality = series.modality
    ds.Manufacturer = "webpacs tests"
    ds.ReferringPhysicianName = "WELBY^MARCUS"
    ds.StudyDescription = study.description or f"{series.modality} study of {study.patient.id}"
    ds.SeriesDescription = series.description or f"{series.modality} series {series.number}"
    ds.PatientName = study.patient.name
    ds.PatientID = study.patient.id
    ds.PatientBirthDate = study.patient.birth_date
    ds.PatientSex = study.patient.sex
    ds.StudyInstanceUID = study.study_uid
    ds.SeriesInstanceUID = series.series_uid
    ds.StudyID = study.accession[-4:]
    ds.SeriesNumber = series.number
    ds.InstanceNumber = number
    ds.FrameOfReferenceUID = new_uid()
    if series.modality == "SR":
        ds.ValueType = "CONTAINER"
        ds.ContentDate = study.study_date
        ds.ContentTime = study.study_time
        return ds
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SliceThickness = "1.25"
    ds.ImagePositionPatient = [0, 0, float(number)]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [0.5, 0.5]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = series.size
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = "-1024"
    ds.RescaleSlope = "1"
    ds.WindowCenter = "40"
    ds.WindowWidth = "400"
    if series.frames > 1:
        ds.NumberOfFrames = series.frames
    seed = int.from_bytes(hashlib.sha256(sop_uid.encode()).digest()[:8], "little")
    pixels = np.random.default_rng(seed).integers(0, 4096, (series.frames, series.size, series.size), dtype="<u2")
    ds.PixelData = pixels.tobytes()
    return ds


def part10(ds: Dataset, transfer_syntax: str = ExplicitVRLittleEndian) -> bytes:
    """The Part-10 file of `ds` (preamble, File Meta Information, data set)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = transfer_syntax
    ds.file_meta = meta
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def sample_study(
    patient: Patient | None = None, *, modality: str = "CT", instances: int = 1, size: int = 16, frames: int = 1
) -> tuple[StudySpec, list[bytes]]:
    """A small study of one series on a new patient; its spec and the Part-10 bytes of its instances."""
    patient = patient or Patient(f"SAMPLE^{uuid.uuid4().hex[:6].upper()}", f"S-{uuid.uuid4().hex[:10]}")
    spec = StudySpec(
        patient,
        "20230405",
        f"A{random.randrange(10**7):07d}",
        (SeriesSpec(modality, instances, size=size, frames=frames),),
    )
    return spec, [part10(ds) for ds in build_instances(spec)]


# --- pydicom's bundled files -------------------------------------------------------------------------


def bundled(name: str, *, fresh_uids: bool = True) -> bytes:
    """The bytes of a pydicom-bundled file (test or charset file), by default with fresh UIDs.

    Several bundled files share a SOP Instance UID (MR_small*, SC_rgb_*); fresh UIDs let them all be
    stored in one archive, and let each test store its own copy.
    """
    path = get_testdata_file(name)
    if path is None:
        matches = get_charset_files(name)
        if not matches:
            raise FileNotFoundError(f"{name} is not bundled with this pydicom")
        path = matches[0]
    data = Path(path).read_bytes()
    return with_new_uids(data) if fresh_uids else data


def with_new_uids(data: bytes) -> bytes:
    """`data` with its Study, Series and SOP Instance UIDs replaced by fresh UIDs of the same length.

    The replacement is done on the bytes, so every transfer syntax (big endian, encapsulated pixel
    data) keeps its exact encoding; a deflated data set is inflated, edited and deflated again.
    """
    header = dcmread(io.BytesIO(data), stop_before_pixels=True)
    old = [str(header.get(keyword, "")) for keyword in _UID_TAGS]
    mapping = {uid.encode(): _same_length_uid(len(uid)).encode() for uid in old if uid}
    if header.file_meta.TransferSyntaxUID != _DEFLATED:
        return _replace_all(data, mapping)
    meta_end = _file_meta_end(data)
    inflated = zlib.decompress(data[meta_end:], -zlib.MAX_WBITS)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    deflated = compressor.compress(_replace_all(inflated, mapping)) + compressor.flush()
    if len(deflated) % 2:
        deflated += b"\x00"
    return _replace_all(data[:meta_end], mapping) + deflated


def _same_length_uid(length: int) -> str:
    digits = str(uuid.uuid4().int) * 2
    body = digits.lstrip("0")[: length - 5]
    return "2.25." + body


def _replace_all(data: bytes, mapping: dict[bytes, bytes]) -> bytes:
    # Longest first: a series UID may extend the study UID it was made from.
    for old, new in sorted(mapping.items(), key=lambda item: -len(item[0])):
        data = data.replace(old, new)
    return data


def _file_meta_end(data: bytes) -> int:
    """Offset just past the File Meta Information (its group length element says where it ends)."""
    start = _PREAMBLE + 4
    if data[start : start + 4] != b"\x02\x00\x00\x00" or data[start + 4 : start + 6] != b"UL":
        raise ValueError("the File Meta Information has no group length")
    (length,) = struct.unpack("<L", data[start + 8 : start + 12])
    return start + 12 + length


# --- reading what was sent or received ----------------------------------------------------------------


def dataset_of(data: bytes, *, stop_before_pixels: bool = False) -> Dataset:
    """pydicom's reading of Part-10 bytes."""
    return dcmread(io.BytesIO(data), stop_before_pixels=stop_before_pixels)


def header_of(data: bytes) -> Dataset:
    """The data set of Part-10 bytes without its pixel data."""
    return dataset_of(data, stop_before_pixels=True)


def uids_of(data: bytes) -> tuple[str, str, str]:
    """(study, series, SOP instance) UIDs of Part-10 bytes."""
    header = header_of(data)
    return str(header.StudyInstanceUID), str(header.SeriesInstanceUID), str(header.SOPInstanceUID)


def frames_of(data: bytes) -> list[bytes]:
    """The stored frames of Part-10 bytes: each encapsulated frame's codestream, or native frame bytes."""
    from pydicom.encaps import generate_frames

    ds = dataset_of(data)
    count = int(ds.get("NumberOfFrames", 1) or 1)
    if ds.file_meta.TransferSyntaxUID.is_encapsulated:
        return list(generate_frames(ds.PixelData, number_of_frames=count))
    pixels = bytes(ds.PixelData)
    size = len(pixels) // count
    return [pixels[i * size : (i + 1) * size] for i in range(count)]


def expected_metadata(data: bytes) -> dict[str, Any]:
    """What pydicom's `Dataset.to_json_dict` gives for the header, binary values above 1 KiB by
    reference, normalised with `normalize_metadata`; PixelData (not read) is by reference too."""
    header = header_of(data)
    result = header.to_json_dict(bulk_data_threshold=1024, bulk_data_element_handler=lambda _: "bulk")
    if "PixelData" in dataset_of(data) or "FloatPixelData" in dataset_of(data):
        result["7FE00010"] = {"vr": "OW", "BulkDataURI": "bulk"}
    return normalize_metadata(result)


def normalize_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    """DICOM JSON with every BulkDataURI replaced by a marker (so two servers' URIs compare equal),
    the pixel data VR (OB or OW, a matter of transfer syntax) and Available Transfer Syntax dropped."""
    result: dict[str, Any] = {}
    for tag, element in metadata.items():
        if tag == "00083002":
            continue
        if "BulkDataURI" in element:
            result[tag] = {"BulkDataURI": True} if tag == "7FE00010" else {"vr": element["vr"], "BulkDataURI": True}
        else:
            result[tag] = element
    return result


# --- multipart/related ----------------------------------------------------------------------------------


def multipart_body(
    parts: list[bytes], *, part_type: str = "application/dicom", boundary: str | None = None
) -> tuple[bytes, str]:
    """A multipart/related body of `parts` and its Content-Type header value."""
    boundary = boundary or f"webpacs-test-{uuid.uuid4().hex}"
    chunks = [f"--{boundary}\r\nContent-Type: {part_type}\r\n\r\n".encode() + part + b"\r\n" for part in parts]
    body = b"".join(chunks) + f"--{boundary}--\r\n".encode()
    return body, f'multipart/related; type="{part_type}"; boundary={boundary}'


@dataclass(frozen=True)
class ReceivedPart:
    """One part of a multipart response."""

    headers: dict[str, str]
    content: bytes

    @property
    def content_type(self) -> str:
        """The part's Content-Type ('' when absent)."""
        return self.headers.get("content-type", "")


def split_multipart(body: bytes, content_type: str) -> list[ReceivedPart]:
    """The parts of a multipart/related response, with exact content bytes (RFC 2046 §5.1.1)."""
    message = Message()
    message["content-type"] = content_type
    if message.get_content_type() != "multipart/related":
        raise AssertionError(f"expected a multipart/related response, got {content_type!r}")
    boundary = message.get_param("boundary")
    if not isinstance(boundary, str):
        raise AssertionError(f"no boundary in {content_type!r}")
    delimiter = b"\r\n--" + boundary.encode()
    # The first delimiter may open the body (no CRLF before it).
    body = b"\r\n" + body
    sections = body.split(delimiter)
    if not sections[-1].startswith(b"--"):
        raise AssertionError("the multipart body has no closing delimiter")
    parts = []
    for section in sections[1:-1]:
        head, separator, content = section.partition(b"\r\n\r\n")
        if not separator:
            raise AssertionError(f"a part has no header/body separator: {section[:80]!r}")
        headers = {}
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        parts.append(ReceivedPart(headers, content))
    return parts


def normalize_name(value: str) -> str:
    """Upper-case, accent-free form of a person name, as a reference for case/accent-insensitive matching."""
    decomposed = unicodedata.normalize("NFKD", value)
    folded = "".join(char for char in decomposed if not unicodedata.combining(char))
    return unicodedata.normalize("NFC", folded).upper()


def wildcard_matches(pattern: str, value: str) -> bool:
    """PS3.4 §C.2.2.2.4 wild card matching (`*`, `?`) of `value`, ignoring case and accents."""
    regex = "".join(
        ".*" if char == "*" else "." if char == "?" else re.escape(char) for char in normalize_name(pattern)
    )
    return re.fullmatch(regex, normalize_name(value), re.DOTALL) is not None
