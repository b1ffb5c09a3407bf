"""Transcoding (storage/dicom/transcode.py): every bundled file of pydicom to every target syntax.

The output is decoded with pydicom's pylibjpeg plugins (libjpeg, OpenJPEG, the Rust RLE decoder),
which share no code with the encoders used (libjpeg-turbo and OpenJPH through imagecodecs, CharLS,
pydicom's RLE encoder), and compared with pydicom's decoding of the source: exactly for lossless
targets, within a stated bound for lossy ones.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.multival import MultiValue
from pydicom.pixels.utils import pixel_array

from storage.dicom.transcode import (
    ENCODABLE,
    PixelFormat,
    can_encode,
    encode_frame,
    transcode_frames,
    transcode_instance,
)
from storage.errors import NotAcceptable

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

BUNDLED = (
    "CT_small.dcm",  # explicit VR little endian, signed 16-bit
    "MR_small.dcm",
    "SC_rgb_jpeg_dcmtk.dcm",  # JPEG baseline, YBR_FULL
    "examples_ybr_color.dcm",  # JPEG baseline, YBR_FULL_422, 30 frames
    "SC_rgb_jpeg_gdcm.dcm",  # JPEG lossless, RGB
    "JPEG2000.dcm",  # JPEG 2000 lossy
    "MR_small_jp2klossless.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
    "MR_small_RLE.dcm",
    "SC_rgb_rle_2frame.dcm",  # RLE, colour, 2 frames
    "MR_small_bigendian.dcm",  # explicit VR big endian (retired)
    "MR_small_implicit.dcm",
)
EXPLICIT_LE = "1.2.840.10008.1.2.1"
DEFLATED = "1.2.840.10008.1.2.1.99"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
JPEG_LS_NEAR = "1.2.840.10008.1.2.4.81"
J2K = "1.2.840.10008.1.2.4.91"
LOSSY = {JPEG_BASELINE, JPEG_LS_NEAR, J2K}
TARGETS = sorted(ENCODABLE)


def _path(name: str) -> Path:
    found = get_testdata_file(name)
    assert found is not None, name
    return Path(str(found))


def _decoded(data: bytes) -> tuple[Dataset, np.ndarray]:
    dataset = dcmread(io.BytesIO(data))
    compressed = dataset.file_meta.TransferSyntaxUID.is_compressed
    pixels = pixel_array(dataset, decoding_plugin="pylibjpeg") if compressed else dataset.pixel_array
    return dataset, pixels


def _last(value: object) -> object:
    return value[-1] if isinstance(value, MultiValue) else value


def _bits_allocated(name: str) -> int:
    return int(dcmread(_path(name), stop_before_pixels=True).BitsAllocated)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("name", BUNDLED)
class TestEveryFileToEveryTarget:
    def test_pixels_survive_within_the_bound_of_the_target(self, name: str, target: str) -> None:
        source = dcmread(_path(name))
        expected = source.pixel_array.astype(np.float64)
        if not can_encode(target, _bits_allocated(name)):
            with pytest.raises(NotAcceptable, match="cannot carry"):
                b"".join(transcode_instance(_path(name), target))
            return
        dataset, pixels = _decoded(b"".join(transcode_instance(_path(name), target)))
        assert dataset.file_meta.TransferSyntaxUID == target
        assert dataset.SOPInstanceUID == source.SOPInstanceUID
        assert pixels.shape == expected.shape
        error = np.abs(pixels.astype(np.float64) - expected)
        if target == JPEG_LS_NEAR:
            assert error.max() <= 2  # NEAR=2 bounds every sample (ISO 14495-1)
        elif target in LOSSY:
            span = max(1.0, float(expected.max() - expected.min()))
            assert error.mean() / span < 0.02, error.mean()
        else:
            assert error.max() == 0

    def test_lossy_targets_say_so_and_lossless_ones_keep_the_flag_as_it_was(self, name: str, target: str) -> None:
        if not can_encode(target, _bits_allocated(name)):
            return
        source = dcmread(_path(name), stop_before_pixels=True)
        dataset = dcmread(io.BytesIO(b"".join(transcode_instance(_path(name), target))), stop_before_pixels=True)
        if target in LOSSY:
            # PS3.3 §C.7.6.1.1.5 and §C.7.6.1.1.3
            assert dataset.LossyImageCompression == "01"
            assert _last(dataset.LossyImageCompressionMethod) in {"ISO_10918_1", "ISO_14495_1", "ISO_15444_1"}
            assert float(_last(dataset.LossyImageCompressionRatio)) > 1
            assert dataset.DerivationCodeSequence[-1].CodeValue == "113040"
            assert "Lossy compression" in dataset.DerivationDescription
        else:
            assert dataset.get("LossyImageCompression") == source.get("LossyImageCompression")


class TestFrameByFrame:
    def test_a_multi_frame_instance_is_produced_one_frame_per_chunk(self) -> None:
        path = _path("examples_ybr_color.dcm")
        frames = int(dcmread(path, stop_before_pixels=True).NumberOfFrames)
        chunks = list(transcode_instance(path, "1.2.840.10008.1.2.4.90"))
        # file meta, data set, pixel data header, the frames, the sequence delimiter
        assert len(chunks) == 3 + frames + 1
        assert max(map(len, chunks)) < 320 * 240 * 3  # no chunk holds more than one frame

    def test_frames_asked_by_index_are_the_frames_of_the_source(self) -> None:
        path = _path("SC_rgb_rle_2frame.dcm")
        source = dcmread(path).pixel_array
        pixel = PixelFormat.of(dcmread(path, stop_before_pixels=True))
        (second,) = transcode_frames(path, [1], EXPLICIT_LE)
        decoded = np.frombuffer(second, dtype=np.uint8).reshape(pixel.rows, pixel.columns, 3)
        np.testing.assert_array_equal(decoded, source[1])

    def test_deflated_output_is_a_raw_deflate_stream_after_the_file_meta(self) -> None:
        data = b"".join(transcode_instance(_path("CT_small.dcm"), DEFLATED))
        dataset = dcmread(io.BytesIO(data))
        np.testing.assert_array_equal(dataset.pixel_array, dcmread(_path("CT_small.dcm")).pixel_array)
        assert len(data) < _path("CT_small.dcm").stat().st_size


class TestRefusals:
    def test_jpeg_baseline_refuses_16_bit_samples_with_a_way_out(self) -> None:
        frame = np.zeros((8, 8), dtype=np.uint16)
        pixel = PixelFormat(8, 8, 1, 16, 12, 0, "MONOCHROME2")
        with pytest.raises(NotAcceptable, match=r"16-bit.*transfer-syntax="):
            encode_frame(frame, pixel, JPEG_BASELINE)

    def test_palette_indices_are_never_lossy_compressed(self) -> None:
        frame = np.zeros((8, 8), dtype=np.uint8)
        pixel = PixelFormat(8, 8, 1, 8, 8, 0, "PALETTE COLOR")
        with pytest.raises(NotAcceptable, match="palette"):
            encode_frame(frame, pixel, J2K)
        assert encode_frame(frame, pixel, "1.2.840.10008.1.2.4.90")

    def test_what_no_encoder_makes_is_not_encodable(self) -> None:
        assert not can_encode("1.2.840.10008.1.2.4.100", 8)  # MPEG2
        assert not can_encode("1.2.840.10008.1.2.4.70", 32)
        assert can_encode(EXPLICIT_LE, 1)
