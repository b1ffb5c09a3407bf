"""The fast DICOM JSON of raw elements gives exactly what pydicom's conversion gives."""

from __future__ import annotations

import json
import struct
import warnings
from io import BytesIO
from pathlib import Path
from typing import Any

import pydicom.data
import pytest
from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.tag import Tag
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from storage.dicom.dicom_json import BULK_DATA_THRESHOLD, dataset_json, element_json
from storage.dicom.raw_json import raw_element_json

UIDS = ("1.2.3", "1.2.3.4", "1.2.3.4.5")


def pydicom_json(dataset: Dataset) -> dict[int, Any]:
    """The reference: every element converted by pydicom, then `to_json_dict`."""
    result = {}
    for element in dataset:
        value = element.value
        binary = element.VR in ("OB", "OD", "OF", "OL", "OV", "OW", "UN") and isinstance(value, bytes)
        if binary and len(value) > BULK_DATA_THRESHOLD:
            result[int(element.tag)] = {"vr": element.VR, "BulkDataURI": "bulk"}
            continue
        if (converted := element_json(element)) is not None:
            result[int(element.tag)] = converted
    return result


def fast_json(dataset: Dataset) -> dict[int, Any]:
    converted = dataset_json(dataset, UIDS)
    return {tag: {"vr": v["vr"], "BulkDataURI": "bulk"} if "BulkDataURI" in v else v for tag, v in converted.items()}


def read(source: str | Path | BytesIO) -> Dataset | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return dcmread(source, stop_before_pixels=True, force=True)
    except Exception:  # noqa: BLE001  # pydicom's test files include deliberately broken ones
        return None


def as_json(converted: dict[int, Any]) -> str:
    # NaN compares unequal to itself; the serialised forms compare exactly.
    return json.dumps({f"{tag:08X}": value for tag, value in sorted(converted.items())}, sort_keys=True)


# Every file pydicom ships that pydicom itself can read (a few are deliberately broken).
BUNDLED = [str(p) for p in sorted(Path(pydicom.data.__file__).parent.rglob("*.dcm")) if read(p) is not None]


def test_bundled_files_are_many() -> None:
    assert len(BUNDLED) > 90


@pytest.mark.parametrize("path", BUNDLED, ids=lambda p: Path(p).name)
def test_every_bundled_file_converts_as_pydicom_does(path: str) -> None:
    fast, reference = read(path), read(path)
    assert fast is not None and reference is not None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert as_json(fast_json(fast)) == as_json(pydicom_json(reference))


def encoded(transfer_syntax: str, attributes: dict[str, object]) -> BytesIO:
    ds = Dataset()
    for keyword, value in attributes.items():
        if isinstance(value, tuple):  # (tag, VR, value): a VR the dictionary would not choose
            ds.add_new(*value)
        else:
            setattr(ds, keyword, value)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = UID(transfer_syntax)
    ds.file_meta.MediaStorageSOPClassUID = UID("1.2.840.10008.5.1.4.1.1.7")
    ds.file_meta.MediaStorageSOPInstanceUID = UID("1.2.3.4.5")
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    buffer.seek(0)
    return buffer


EDGE_CASES: dict[str, dict[str, object]] = {
    "padded multi-valued strings": {
        "ImageType": ["ORIGINAL ", "", "AXIAL"],
        "Modality": "CT",
        "StudyDate": "20240102",
        "StudyTime": "101010.5 ",
    },
    "text items with trailing spaces": {"OtherPatientIDs": ["A ", " B", ""], "StudyDescription": "  head  "},
    "single-valued text keeps backslashes": {"ImageComments": "a\\b  ", "AdditionalPatientHistory": " x"},
    "AE items lose both paddings": {"RetrieveAETitle": [" AE1 ", "AE2"]},
    "integer strings": {"SeriesNumber": " 7", "InstanceNumber": "+12", "ReferencedFrameNumber": ["1", "2", "3"]},
    "integer string not integral": {"SeriesNumber": "1.0", "InstanceNumber": "1.5"},
    "decimal strings": {
        "SliceThickness": "1.25",
        "PixelSpacing": [" 0.5", "5e-1 "],
        "WindowCenter": ["-40", "+.5"],
        "SliceLocation": "nan",
    },
    "binary numbers": {
        "Rows": 512,
        "SmallestImagePixelValue": (0x00280106, "SS", -3),
        "FrameIncrementPointer": 0x00181063,
    },
    "floats": {"RescaleSlope": "1", "FloatPixelPaddingValue": 1.5},
    "inline binary": {"ShadowOverlayData": b"\x01\x02"},
    "empty values": {"PatientName": "", "StudyID": "", "Rows": None, "ImageType": ""},
    "person names": {"PatientName": "Doe^John", "ReferringPhysicianName": ["A^B", "C^D"]},
    "sequences": {"ReferencedStudySequence": [Dataset()]},
}


@pytest.mark.parametrize("transfer_syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
@pytest.mark.parametrize("case", EDGE_CASES, ids=str)
def test_edge_cases_convert_as_pydicom_does(case: str, transfer_syntax: str) -> None:
    fast = read(encoded(transfer_syntax, EDGE_CASES[case]))
    reference = read(encoded(transfer_syntax, EDGE_CASES[case]))
    assert fast is not None and reference is not None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert as_json(fast_json(fast)) == as_json(pydicom_json(reference))


def raw(tag: int, vr: str | None, value: bytes, *, little: bool = True) -> RawDataElement:
    return RawDataElement(Tag(tag), vr, len(value), value, 0, vr is None, little)


def test_fast_path_takes_the_common_cases() -> None:
    assert raw_element_json(raw(0x00080060, "CS", b"CT")) == {"vr": "CS", "Value": ["CT"]}
    assert raw_element_json(raw(0x00280010, "US", b"\x00\x02")) == {"vr": "US", "Value": [512]}
    assert raw_element_json(raw(0x00200013, None, b"12")) == {"vr": "IS", "Value": [12]}
    assert raw_element_json(raw(0x00280030, "DS", b"0.5\\0.25")) == {"vr": "DS", "Value": [0.5, 0.25]}


@pytest.mark.parametrize(
    ("element", "why"),
    [
        (raw(0x00100010, "PN", b"Doe^John"), "person names"),
        (raw(0x00080008, "CS", b"ORIGINAL", little=False), "big endian"),
        (raw(0x00081030, "LO", "Tête".encode("latin-1")), "non-ASCII text"),
        (raw(0x00081030, "LO", b"\x1b$B"), "ISO 2022 escape"),
        (raw(0x00091010, None, b"abc"), "implicit private element"),
        (raw(0x00280106, None, b"\x01\x00"), "implicit US or SS"),
        (raw(0x00200013, "IS", b"1.0"), "integer string pydicom judges"),
        (raw(0x00280010, "US", b"\x00\x02\x00"), "wrong length"),
        (raw(0x00280010, "UN", b"\x00\x02"), "UN"),
        (raw(0x00081110, "SQ", b"\x00"), "sequence"),
        (raw(0x00081110, "SQ", b""), "empty sequence"),
        (raw(0x00281101, "SS", struct.pack("<3h", -1, 0, 16)), "LUT Descriptor pydicom reads as unsigned"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_fast_path_leaves_the_rest_to_pydicom(element: RawDataElement, why: str) -> None:
    assert raw_element_json(element) is None, why
