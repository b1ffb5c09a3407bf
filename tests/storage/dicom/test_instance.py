from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pydicom.data
import pytest
from dicomdata import dataset_of, part10, sample_study
from pydicom import dcmread
from pydicom.data import get_charset_files, get_testdata_file
from pydicom.encaps import generate_frames

from storage.dicom.instance import read_instance
from storage.dicom.records import BULK_BASE
from storage.errors import InvalidInstance

if TYPE_CHECKING:
    from pydicom.dataset import Dataset


def bundled(name: str) -> Path:
    found = get_testdata_file(name) or get_charset_files(name)[0]
    return Path(str(found))


def frame_bytes(path: Path, frame: int) -> bytes:
    parsed = read_instance(path)
    assert parsed.frames is not None
    data = path.read_bytes()
    return b"".join(data[offset : offset + length] for offset, length in parsed.frames[frame].fragments)


def _pydicom_text(dataset: Dataset, keyword: str) -> str:
    """The reference for a text index value: pydicom's value as one str, multi-values joined by backslash."""
    value = dataset.get(keyword)
    if value is None or value == "":
        return ""
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return "\\".join("" if item is None else str(item) for item in value)
    return str(value).strip()


def _pydicom_integer(dataset: Dataset, keyword: str) -> int | None:
    value = dataset.get(keyword)
    try:
        return None if value is None or value == "" else int(value)
    except (TypeError, ValueError):
        return None


def _readable(path: Path) -> bool:
    try:
        read_instance(path)
    except InvalidInstance:
        return False
    return True


# Every file pydicom ships that the archive would store.
_STORABLE = [p for p in sorted(Path(pydicom.data.__file__).parent.rglob("*.dcm")) if _readable(p)]
_TEXT_KEYS = {
    "study": {
        "patient_id": "PatientID",
        "patient_name": "PatientName",
        "patient_birth_date": "PatientBirthDate",
        "patient_sex": "PatientSex",
        "study_date": "StudyDate",
        "study_time": "StudyTime",
        "accession_number": "AccessionNumber",
        "study_id": "StudyID",
        "study_description": "StudyDescription",
        "referring_physician_name": "ReferringPhysicianName",
        "institution_name": "InstitutionName",
    },
    "series": {
        "modality": "Modality",
        "series_description": "SeriesDescription",
        "body_part_examined": "BodyPartExamined",
        "performed_procedure_step_start_date": "PerformedProcedureStepStartDate",
        "performed_procedure_step_start_time": "PerformedProcedureStepStartTime",
    },
}
_INTEGER_KEYS = {
    "series": {"series_number": "SeriesNumber"},
    "instance": {
        "instance_number": "InstanceNumber",
        "rows": "Rows",
        "columns": "Columns",
        "bits_allocated": "BitsAllocated",
    },
}


@pytest.mark.parametrize("path", _STORABLE, ids=lambda p: p.name)
def test_every_index_value_is_what_pydicom_reads(path: Path) -> None:
    parsed = read_instance(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        source = dcmread(path, stop_before_pixels=True)
    got: dict[str, Any] = {}
    expected: dict[str, Any] = {}
    for level, keys in _TEXT_KEYS.items():
        for field, keyword in keys.items():
            got[keyword] = getattr(getattr(parsed, level), field)
            expected[keyword] = _pydicom_text(source, keyword)
    for level, keys in _INTEGER_KEYS.items():
        for field, keyword in keys.items():
            got[keyword] = getattr(getattr(parsed, level), field)
            expected[keyword] = _pydicom_integer(source, keyword)
    assert got == expected


@pytest.mark.parametrize(
    "values",
    [
        {"Modality": "CT\\MR", "PatientID": "A\\\\B", "SeriesNumber": "1\\2"},  # VM broken, an empty item
        {"PatientName": "=Yamada^Tarou", "ReferringPhysicianName": "Doe^Jane=Doe^Jane", "InstanceNumber": ""},
        {"StudyDescription": "  padded  ", "SeriesNumber": " 12 ", "PatientSex": ""},
    ],
    ids=["multi-values", "name-groups", "padding"],
)
def test_edge_values_are_indexed_as_pydicom_reads_them(tmp_path: Path, values: dict[str, str]) -> None:
    dataset = dataset_of(sample_study()[1][0])
    for keyword, value in values.items():
        setattr(dataset, keyword, value)
    path = tmp_path / "edge.dcm"
    path.write_bytes(part10(dataset))
    test_every_index_value_is_what_pydicom_reads(path)


def test_the_comparison_covers_names_in_several_character_sets_and_multi_values() -> None:
    names = {path.name for path in _STORABLE}
    assert {"chrH31.dcm", "chrRuss.dcm", "CT_small.dcm", "MR_small.dcm"} <= names
    assert len(_STORABLE) > 50


class TestIndexKeys:
    def test_ct_keys_come_from_the_header(self) -> None:
        parsed = read_instance(bundled("CT_small.dcm"))
        source = dcmread(bundled("CT_small.dcm"))
        assert parsed.study.study_instance_uid == source.StudyInstanceUID
        assert parsed.series.series_instance_uid == source.SeriesInstanceUID
        assert parsed.instance.sop_instance_uid == source.SOPInstanceUID
        assert parsed.study.patient_name == str(source.PatientName)
        assert parsed.series.modality == "CT"
        assert parsed.instance.rows == 128
        assert parsed.instance.number_of_frames == 1

    @pytest.mark.parametrize(
        ("name", "expected"),
        [
            ("chrH31.dcm", "Yamada^Tarou=山田^太郎=やまだ^たろう"),
            ("chrRuss.dcm", "Люкceмбypг"),
            ("chrGerm.dcm", "Äneas^Rüdiger"),
        ],
    )
    def test_names_in_any_character_set_decode_to_unicode(self, name: str, expected: str) -> None:
        assert read_instance(bundled(name)).study.patient_name == expected

    def test_level_json_holds_patient_attributes_at_study_level(self) -> None:
        parsed = read_instance(bundled("CT_small.dcm"))
        assert "00100010" in parsed.study.json
        assert "00080060" in parsed.series.json
        assert "00080018" in parsed.instance.json


class TestMetadata:
    def test_pixel_data_becomes_a_bulk_data_uri(self) -> None:
        parsed = read_instance(bundled("CT_small.dcm"))
        metadata = json.loads(parsed.metadata)
        uri = metadata["7FE00010"]["BulkDataURI"]
        assert uri.startswith(BULK_BASE + "/studies/")
        assert uri.endswith("/bulk/7FE00010")
        assert "InlineBinary" not in metadata["7FE00010"]

    def test_metadata_equals_pydicom_json_model_outside_bulk_data(self) -> None:
        path = bundled("MR_small.dcm")
        parsed = json.loads(read_instance(path).metadata)
        expected = dcmread(path, stop_before_pixels=True).to_json_dict(bulk_data_threshold=1 << 30)
        for tag, element in expected.items():
            assert parsed[tag] == element, tag
        assert parsed["00083002"]["Value"] == ["1.2.840.10008.1.2.1"]


class TestFrameOffsets:
    def test_native_frame_is_the_pixel_data_value(self) -> None:
        path = bundled("MR_small.dcm")
        assert frame_bytes(path, 0) == dcmread(path).PixelData

    @pytest.mark.parametrize(
        "name", ["SC_rgb_rle_2frame.dcm", "examples_ybr_color.dcm", "JPEG2000.dcm", "MR_small_jpeg_ls_lossless.dcm"]
    )
    def test_encapsulated_frames_equal_pydicoms_frames(self, name: str) -> None:
        path = bundled(name)
        source = dcmread(path)
        count = int(source.get("NumberOfFrames", 1))
        expected = list(generate_frames(source.PixelData, number_of_frames=count))
        assert [frame_bytes(path, index) for index in range(count)] == expected

    @pytest.mark.parametrize("name", ["image_dfl.dcm", "MR_small_bigendian.dcm"])
    def test_offsets_are_unknown_where_bytes_are_not_native_little_endian(self, name: str) -> None:
        parsed = read_instance(bundled(name))
        assert parsed.frames is None
        assert parsed.instance.number_of_frames == 1


class TestRejection:
    def test_a_file_without_preamble_is_not_part_10(self) -> None:
        with pytest.raises(InvalidInstance, match="Part-10") as caught:
            read_instance(bundled("ExplVR_LitEndNoMeta.dcm"))
        assert caught.value.failure_reason == 0xC000

    def test_truncated_native_pixel_data_is_refused_with_the_instance_uids(self) -> None:
        with pytest.raises(InvalidInstance, match="truncated") as caught:
            read_instance(bundled("MR_truncated.dcm"))
        assert caught.value.sop_instance_uid

    def test_truncated_encapsulated_pixel_data_is_refused(self, tmp_path: Path) -> None:
        source = bundled("SC_rgb_rle_2frame.dcm")
        cut = tmp_path / "cut.dcm"
        cut.write_bytes(source.read_bytes()[:-200])
        with pytest.raises(InvalidInstance, match="truncated"):
            read_instance(cut)

    def test_a_missing_study_uid_is_named(self, tmp_path: Path) -> None:
        dataset = dcmread(bundled("CT_small.dcm"))
        del dataset.StudyInstanceUID
        path = tmp_path / "no-study.dcm"
        dataset.save_as(path)
        with pytest.raises(InvalidInstance, match="StudyInstanceUID"):
            read_instance(path)

    def test_a_malformed_uid_is_refused(self, tmp_path: Path) -> None:
        dataset = dcmread(bundled("CT_small.dcm"))
        dataset.SeriesInstanceUID = "1.2.abc"
        path = tmp_path / "bad-uid.dcm"
        dataset.save_as(path)
        with pytest.raises(InvalidInstance, match="not a valid UID"):
            read_instance(path)

    def test_garbage_is_refused_not_raised(self, tmp_path: Path) -> None:
        path = tmp_path / "garbage.dcm"
        shutil.copy(bundled("CT_small.dcm"), path)
        data = bytearray(path.read_bytes())
        data[200:400] = b"\xff" * 200
        path.write_bytes(bytes(data))
        with pytest.raises(InvalidInstance):
            read_instance(path)
