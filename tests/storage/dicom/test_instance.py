from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_charset_files, get_testdata_file
from pydicom.encaps import generate_frames

from storage.dicom.instance import read_instance
from storage.dicom.records import BULK_BASE
from storage.errors import InvalidInstance


def bundled(name: str) -> Path:
    found = get_testdata_file(name) or get_charset_files(name)[0]
    return Path(str(found))


def frame_bytes(path: Path, frame: int) -> bytes:
    parsed = read_instance(path)
    assert parsed.frames is not None
    data = path.read_bytes()
    return b"".join(data[offset : offset + length] for offset, length in parsed.frames[frame].fragments)


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
