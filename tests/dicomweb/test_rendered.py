"""Rendered resources, thumbnails and WADO-URI images over HTTP (PS3.18 §10.4.1.1.3-4, §9), on a real server.

Renderings are compared with pydicom's windowing of the stored pixels, scaled to 8 bits.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pytest
from dicomdata import bundled, dataset_of, split_multipart, uids_of
from PIL import Image
from pydicom.pixels.processing import apply_modality_lut, apply_windowing

if TYPE_CHECKING:
    from pathlib import Path

    from live_pacs import Pacs


def _image(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


def _reference(data: bytes, center: float, width: float) -> np.ndarray:
    """pydicom's LINEAR window of the stored pixels, its output range scaled onto 0..255."""
    dataset = dataset_of(data)
    values = apply_modality_lut(dataset.pixel_array, dataset).astype(np.float64)
    dataset.WindowCenter, dataset.WindowWidth, dataset.VOILUTFunction = center, width, "LINEAR"
    low, high = apply_windowing(np.array([-1e12, 1e12]), dataset)
    return np.rint((apply_windowing(values, dataset) - low) / (high - low) * 255)


@dataclass(frozen=True)
class Stored:
    """One study: a CT slice and a 30-frame colour JPEG (two series)."""

    ct: bytes
    cine: bytes

    @property
    def study(self) -> str:
        return uids_of(self.ct)[0]


@pytest.fixture(scope="module")
def stored(pacs: Pacs) -> Stored:
    ct = bundled("CT_small.dcm")
    study = dataset_of(ct).StudyInstanceUID
    cine = dataset_of(bundled("examples_ybr_color.dcm"))
    cine.StudyInstanceUID = study
    buffer = io.BytesIO()
    cine.save_as(buffer, enforce_file_format=True)
    pacs.store(ct, buffer.getvalue())
    return Stored(ct, buffer.getvalue())


class TestRendered:
    def test_a_windowed_png_of_an_instance_matches_the_reference(self, pacs: Pacs, stored: Stored) -> None:
        response = pacs.http.get(
            pacs.instance_path(stored.ct) + "/rendered",
            params={"window": "40,400,linear"},
            headers={"Accept": "image/png"},
        )
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "image/png"
        rendered = np.asarray(_image(response.content)).astype(np.float64)
        assert np.abs(rendered - _reference(stored.ct, 40, 400)).max() <= 1

    def test_jpeg_is_the_default_and_quality_is_honoured(self, pacs: Pacs, stored: Stored) -> None:
        path = pacs.instance_path(stored.ct) + "/rendered"
        low, high = (pacs.http.get(path, params={"quality": q}) for q in ("10", "95"))
        assert low.headers["content-type"] == high.headers["content-type"] == "image/jpeg"
        assert len(low.content) < len(high.content)

    def test_a_frame_is_rendered_into_the_viewport(self, pacs: Pacs, stored: Stored) -> None:
        response = pacs.http.get(pacs.instance_path(stored.cine) + "/frames/5/rendered", params={"viewport": "160,160"})
        assert _image(response.content).size == (160, 120)
        expected = Image.fromarray(dataset_of(stored.cine).pixel_array[4]).resize((160, 120), Image.Resampling.BOX)
        error = np.abs(np.asarray(_image(response.content), dtype=float) - np.asarray(expected, dtype=float))
        assert error.mean() < 4

    def test_a_multi_frame_instance_as_gif_is_an_animation(self, pacs: Pacs, stored: Stored) -> None:
        response = pacs.http.get(
            pacs.instance_path(stored.cine) + "/rendered", params={"viewport": "64,64"}, headers={"Accept": "image/gif"}
        )
        assert response.headers["content-type"] == "image/gif"
        animation = _image(response.content)
        # Pillow merges identical consecutive frames, adding up their durations: the total shows all 30.
        durations = []
        for index in range(animation.n_frames):
            animation.seek(index)
            durations.append(animation.info["duration"])
        frame_time = float(dataset_of(stored.cine).get("FrameTime", 100))
        assert animation.n_frames > 1
        # GIF counts time in hundredths of a second: each frame may lose up to 10 ms.
        assert sum(durations) == pytest.approx(30 * frame_time, abs=30 * 10)

    def test_a_study_is_rendered_one_part_per_instance(self, pacs: Pacs, stored: Stored) -> None:
        response = pacs.http.get(f"/dicomweb/studies/{stored.study}/rendered", params={"viewport": "64,64"})
        parts = split_multipart(response.content, response.headers["content-type"])
        assert [part.content_type for part in parts] == ["image/jpeg", "image/jpeg"]
        assert all(_image(part.content).format == "JPEG" for part in parts)

    def test_frames_asked_as_multipart_come_one_per_part(self, pacs: Pacs, stored: Stored) -> None:
        response = pacs.http.get(
            pacs.instance_path(stored.cine) + "/frames/1,2,3/rendered",
            headers={"Accept": 'multipart/related; type="image/png"'},
        )
        parts = split_multipart(response.content, response.headers["content-type"])
        assert len(parts) == 3
        assert np.asarray(_image(parts[1].content)).tolist() == dataset_of(stored.cine).pixel_array[1].tolist()

    @pytest.mark.parametrize(
        ("params", "accept", "status"),
        [
            ({"window": "40"}, "image/jpeg", 400),
            ({"viewport": "0,10"}, "image/jpeg", 400),
            ({"quality": "101"}, "image/jpeg", 400),
            ({"annotation": "everything"}, "image/jpeg", 400),
            ({"colour": "blue"}, "image/jpeg", 400),
            ({}, "application/pdf", 406),
        ],
    )
    def test_bad_parameters_and_media_types_are_refused_with_a_reason(
        self, pacs: Pacs, stored: Stored, params: dict[str, str], accept: str, status: int
    ) -> None:
        response = pacs.http.get(pacs.instance_path(stored.ct) + "/rendered", params=params, headers={"Accept": accept})
        assert response.status_code == status, response.text
        assert len(response.json()["detail"]) > 20


class TestThumbnail:
    @pytest.mark.parametrize("level", ["study", "series", "instance", "frame"])
    def test_every_level_has_a_thumbnail(self, pacs: Pacs, stored: Stored, level: str) -> None:
        study, series, _ = uids_of(stored.cine)
        path = {
            "study": f"/dicomweb/studies/{study}",
            "series": f"/dicomweb/studies/{study}/series/{series}",
            "instance": pacs.instance_path(stored.cine),
            "frame": pacs.instance_path(stored.cine) + "/frames/2",
        }[level]
        response = pacs.http.get(path + "/thumbnail")
        assert response.status_code == 200, response.text
        assert max(_image(response.content).size) == 128

    def test_a_thumbnail_is_cached_on_disk_and_served_from_there(self, pacs: Pacs, stored: Stored) -> None:
        cache = pacs.data_dir / "cache" / "thumbnails"
        path = pacs.instance_path(stored.ct) + "/thumbnail"
        first = pacs.http.get(path, params={"viewport": "77,77"})
        entries = _entries(cache)
        assert any(entry.read_bytes() == first.content for entry in entries)
        second = pacs.http.get(path, params={"viewport": "77,77"})
        assert second.content == first.content
        assert _entries(cache) == entries

    def test_a_thumbnail_takes_no_window(self, pacs: Pacs, stored: Stored) -> None:
        response = pacs.http.get(pacs.instance_path(stored.ct) + "/thumbnail", params={"window": "40,400,linear"})
        assert response.status_code == 400


def _entries(cache: Path) -> set[Path]:
    return {entry for entry in cache.glob("*/*") if not entry.name.startswith(".")}


class TestWadoUriImages:
    def test_jpeg_with_window_and_size(self, pacs: Pacs, stored: Stored) -> None:
        study, series, sop = uids_of(stored.ct)
        params = {
            "requestType": "WADO",
            "studyUID": study,
            "seriesUID": series,
            "objectUID": sop,
            "contentType": "image/png",
            "windowCenter": "40",
            "windowWidth": "400",
        }
        response = pacs.http.get("/wado", params=params)
        assert response.status_code == 200, response.text
        assert np.abs(np.asarray(_image(response.content), float) - _reference(stored.ct, 40, 400)).max() <= 1
        sized = pacs.http.get("/wado", params={**params, "contentType": "image/jpeg", "rows": "64", "columns": "64"})
        assert sized.headers["content-type"] == "image/jpeg"
        assert _image(sized.content).size == (64, 64)

    def test_frame_number_picks_the_frame(self, pacs: Pacs, stored: Stored) -> None:
        study, series, sop = uids_of(stored.cine)
        params = {"requestType": "WADO", "studyUID": study, "seriesUID": series, "objectUID": sop}
        response = pacs.http.get("/wado", params={**params, "contentType": "image/png", "frameNumber": "7"})
        np.testing.assert_array_equal(np.asarray(_image(response.content)), dataset_of(stored.cine).pixel_array[6])
        beyond = pacs.http.get("/wado", params={**params, "contentType": "image/png", "frameNumber": "31"})
        assert beyond.status_code == 404

    def test_half_a_window_is_refused(self, pacs: Pacs, stored: Stored) -> None:
        study, series, sop = uids_of(stored.ct)
        params = {"requestType": "WADO", "studyUID": study, "seriesUID": series, "objectUID": sop}
        response = pacs.http.get("/wado", params={**params, "contentType": "image/jpeg", "windowCenter": "40"})
        assert response.status_code == 400
