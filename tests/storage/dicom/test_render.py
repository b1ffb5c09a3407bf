"""Rendering (storage/dicom/render.py) against a reference rendering made with pydicom's own LUT code.

The reference applies pydicom's apply_modality_lut and apply_windowing / apply_voi_lut and scales
their output range onto 0..255; the renderer under test applies the PS3.3 §C.11 formulas itself.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels.processing import apply_color_lut, apply_modality_lut, apply_windowing
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from storage.dicom.render import RenderOptions, Viewport, Window, parse_viewport, parse_window, render
from storage.errors import InvalidQuery, NotAcceptable


def _path(name: str) -> Path:
    found = get_testdata_file(name)
    assert found is not None, name
    return Path(str(found))


def _image(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def _reference_window(path: Path, center: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """pydicom's windowing, its output range found by windowing the extremes too, scaled to 8 bits."""
    dataset = dcmread(path)
    values = apply_modality_lut(dataset.pixel_array, dataset).astype(np.float64)
    dataset.WindowCenter, dataset.WindowWidth, dataset.VOILUTFunction = center, width, function
    extremes = np.array([-1e12, 1e12])
    low, high = apply_windowing(extremes, dataset)
    windowed = apply_windowing(values, dataset)
    return np.rint((windowed - low) / (high - low) * 255)


def _write(tmp_path: Path, dataset: Dataset) -> Path:
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    dataset.SOPClassUID = SecondaryCaptureImageStorage
    dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    path = tmp_path / "image.dcm"
    dataset.save_as(path, enforce_file_format=True)
    return path


def _grey(tmp_path: Path, pixels: np.ndarray, photometric: str) -> Path:
    dataset = Dataset()
    dataset.Rows, dataset.Columns = pixels.shape
    dataset.SamplesPerPixel, dataset.PhotometricInterpretation = 1, photometric
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit, dataset.PixelRepresentation = 16, 12, 11, 0
    dataset.PixelData = pixels.astype(np.uint16).tobytes()
    return _write(tmp_path, dataset)


class TestGreyscale:
    @pytest.mark.parametrize("function", ["LINEAR", "LINEAR_EXACT", "SIGMOID"])
    def test_a_window_asked_for_matches_the_reference(self, function: str) -> None:
        path = _path("CT_small.dcm")
        png = _image(render(path, [0], RenderOptions("image/png", window=Window(40, 400, function))))
        assert np.abs(png.astype(np.float64) - _reference_window(path, 40, 400, function)).max() <= 1

    def test_the_objects_own_window_is_the_default(self) -> None:
        path = _path("MR_small.dcm")
        dataset = dcmread(path, stop_before_pixels=True)
        reference = _reference_window(path, float(dataset.WindowCenter), float(dataset.WindowWidth))
        png = _image(render(path, [0], RenderOptions("image/png")))
        assert np.abs(png.astype(np.float64) - reference).max() <= 1

    def test_without_a_window_the_frame_range_fills_the_display(self) -> None:
        png = _image(render(_path("CT_small.dcm"), [0], RenderOptions("image/png")))
        assert png.min() == 0
        assert png.max() == 255

    def test_monochrome1_shows_the_lowest_value_white(self, tmp_path: Path) -> None:
        pixels = np.tile(np.arange(0, 4096, 64, dtype=np.uint16), (8, 1))
        one = _image(render(_grey(tmp_path, pixels, "MONOCHROME1"), [0], RenderOptions("image/png")))
        two = _image(render(_grey(tmp_path, pixels, "MONOCHROME2"), [0], RenderOptions("image/png")))
        np.testing.assert_array_equal(one.astype(int), 255 - two.astype(int))
        assert one[0, 0] == 255

    def test_jpeg_stays_close_to_the_lossless_rendering(self) -> None:
        path = _path("CT_small.dcm")
        options = {"window": Window(40, 400)}
        jpeg = _image(render(path, [0], RenderOptions("image/jpeg", quality=95, **options))).astype(np.float64)
        png = _image(render(path, [0], RenderOptions("image/png", **options))).astype(np.float64)
        assert np.abs(jpeg - png).mean() < 3


class TestColour:
    @pytest.mark.parametrize("name", ["SC_rgb_rle_2frame.dcm", "examples_ybr_color.dcm", "SC_rgb_jpeg_dcmtk.dcm"])
    def test_rgb_and_ybr_are_shown_as_pydicom_decodes_them(self, name: str) -> None:
        png = _image(render(_path(name), [0], RenderOptions("image/png")))
        expected = dcmread(_path(name)).pixel_array
        np.testing.assert_array_equal(png, expected[0] if expected.ndim == 4 else expected)

    def test_planar_configuration_1_is_interleaved_for_display(self, tmp_path: Path) -> None:
        rgb = np.random.default_rng(3).integers(0, 255, (4, 6, 3), dtype=np.uint8)
        dataset = Dataset()
        dataset.Rows, dataset.Columns, dataset.SamplesPerPixel = 4, 6, 3
        dataset.PhotometricInterpretation, dataset.PlanarConfiguration = "RGB", 1
        dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit, dataset.PixelRepresentation = 8, 8, 7, 0
        dataset.PixelData = rgb.transpose(2, 0, 1).tobytes()  # all red, then green, then blue
        np.testing.assert_array_equal(_image(render(_write(tmp_path, dataset), [0], RenderOptions("image/png"))), rgb)

    def test_palette_colour_goes_through_its_lookup_tables(self, tmp_path: Path) -> None:
        dataset = Dataset()
        dataset.Rows, dataset.Columns, dataset.SamplesPerPixel = 4, 64, 1
        dataset.PhotometricInterpretation = "PALETTE COLOR"
        dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit, dataset.PixelRepresentation = 8, 8, 7, 0
        ramp = np.arange(256, dtype=np.uint16) * 257
        for colour, table in (("Red", ramp), ("Green", ramp[::-1].copy()), ("Blue", np.full(256, 32768, np.uint16))):
            setattr(dataset, f"{colour}PaletteColorLookupTableDescriptor", [256, 0, 16])
            setattr(dataset, f"{colour}PaletteColorLookupTableData", table.tobytes())
        dataset.PixelData = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (4, 1)).tobytes()
        path = _write(tmp_path, dataset)
        expected = apply_color_lut(dcmread(path).pixel_array, dcmread(path)) // 257
        np.testing.assert_array_equal(_image(render(path, [0], RenderOptions("image/png"))), expected)


class TestViewportAndFormats:
    def test_the_image_is_fitted_into_the_viewport_keeping_its_aspect(self) -> None:
        image = Image.open(
            io.BytesIO(render(_path("examples_ybr_color.dcm"), [0], RenderOptions(viewport=Viewport(64, 64))))
        )
        assert image.size == (64, 48)  # 320 x 240 source

    def test_a_region_is_cut_out_and_a_negative_width_flips_it(self) -> None:
        path = _path("SC_rgb_rle_2frame.dcm")
        full = dcmread(path).pixel_array[0]
        region = Viewport(20, 10, (10, 20, -20, 10))
        flipped = _image(render(path, [0], RenderOptions("image/png", viewport=region)))
        np.testing.assert_array_equal(flipped, full[20:30, 10:30][:, ::-1])

    def test_several_frames_as_gif_make_an_animation(self) -> None:
        gif = Image.open(io.BytesIO(render(_path("examples_ybr_color.dcm"), [0, 1, 2], RenderOptions("image/gif"))))
        assert gif.n_frames == 3

    def test_annotation_burns_text_into_the_corner(self) -> None:
        path = _path("CT_small.dcm")
        plain = _image(render(path, [0], RenderOptions("image/png")))
        annotated = _image(render(path, [0], RenderOptions("image/png", annotation=("patient", "technique"))))
        assert not np.array_equal(plain[:30, :100], annotated[:30, :100])
        np.testing.assert_array_equal(plain[-20:, -20:], annotated[-20:, -20:])

    def test_an_instance_without_an_image_cannot_be_rendered(self, tmp_path: Path) -> None:
        dataset = Dataset()
        dataset.PatientName = "NO^IMAGE"
        with pytest.raises(NotAcceptable, match="no image"):
            render(_write(tmp_path, dataset), [0], RenderOptions())


class TestParameters:
    @pytest.mark.parametrize("text", ["40,400", "40,400,cubic", "a,b,linear", "40,0,linear"])
    def test_malformed_windows_are_refused_with_the_form(self, text: str) -> None:
        with pytest.raises(InvalidQuery, match="window="):
            parse_window(text)

    @pytest.mark.parametrize("text", ["512", "0,512", "512,512,0,0", "x,y", "99999,10"])
    def test_malformed_viewports_are_refused_with_the_form(self, text: str) -> None:
        with pytest.raises(InvalidQuery, match="viewport="):
            parse_viewport(text)

    def test_query_parameters_become_options(self) -> None:
        options = RenderOptions.from_query(
            "image/png", {"window": "40,400,sigmoid", "viewport": "256,256", "quality": "80", "annotation": "patient"}
        )
        assert options == RenderOptions("image/png", 80, Window(40, 400, "SIGMOID"), Viewport(256, 256), ("patient",))
