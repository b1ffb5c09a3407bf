"""WADO-RS Accept negotiation to every transfer syntax offered (PS3.18 §8.7), against a real server.

What comes back is decoded with pydicom's pylibjpeg plugins and compared with the stored pixels:
exactly for lossless syntaxes, within a bound for lossy ones. Negotiation itself (q-values, several
alternatives, 406 with a reason) is checked on the answers' transfer syntax.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pytest
from dicomdata import (
    Patient,
    SeriesSpec,
    StudySpec,
    build_instances,
    bundled,
    dataset_of,
    new_uid,
    part10,
    uids_of,
)
from pydicom.encaps import encapsulate
from pydicom.pixels.utils import pixel_array

if TYPE_CHECKING:
    from live_pacs import Pacs

EXPLICIT_LE = "1.2.840.10008.1.2.1"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
JPEG_LOSSLESS = "1.2.840.10008.1.2.4.70"
JPEG_LS = "1.2.840.10008.1.2.4.80"
JPEG_LS_NEAR = "1.2.840.10008.1.2.4.81"
J2K_LOSSLESS = "1.2.840.10008.1.2.4.90"
J2K = "1.2.840.10008.1.2.4.91"
HTJ2K_LOSSLESS = "1.2.840.10008.1.2.4.201"
RLE = "1.2.840.10008.1.2.5"
DEFLATED = "1.2.840.10008.1.2.1.99"
LOSSLESS_TARGETS = (EXPLICIT_LE, JPEG_LOSSLESS, JPEG_LS, J2K_LOSSLESS, HTJ2K_LOSSLESS, RLE, DEFLATED)
# Frames travel in the media type of their syntax (PS3.18 Table 8.7.3-5).
FRAME_MEDIA_TYPES = {
    JPEG_LOSSLESS: "image/jpeg",
    JPEG_BASELINE: "image/jpeg",
    JPEG_LS: "image/jls",
    JPEG_LS_NEAR: "image/jls",
    J2K_LOSSLESS: "image/jp2",
    J2K: "image/jp2",
    HTJ2K_LOSSLESS: "image/jphc",
    RLE: "image/dicom-rle",
}


def dicom(transfer_syntax: str, q: str | None = None) -> str:
    accept = f'multipart/related; type="application/dicom"; transfer-syntax={transfer_syntax}'
    return accept if q is None else f"{accept}; q={q}"


def _pixels(data: bytes) -> np.ndarray:
    dataset = dataset_of(data)
    if dataset.file_meta.TransferSyntaxUID.is_compressed:
        return pixel_array(dataset, decoding_plugin="pylibjpeg")
    return dataset.pixel_array


def _frame_pixels(data: bytes, transfer_syntax: str, frame: bytes) -> np.ndarray:
    """One returned frame decoded by pydicom, in a copy of the instance's header."""
    header = dataset_of(data)
    header.file_meta.TransferSyntaxUID = transfer_syntax
    header.PixelData = encapsulate([frame])
    header.NumberOfFrames = 1
    return pixel_array(header, decoding_plugin="pylibjpeg").astype(float)


@dataclass(frozen=True)
class Stored:
    """A generated 16-bit CT study (two instances, one a 3-frame), and bundled 8-bit colour files."""

    study_uid: str
    ct: bytes
    multiframe: bytes
    colour: bytes  # RLE, 8-bit RGB, 2 frames
    jpeg_ls: bytes  # JPEG-LS lossless MR
    anatomy: bytes  # CT_small: a real image (the generated ones are noise, which lossy codecs cannot keep)


@pytest.fixture(scope="module")
def stored(pacs: Pacs) -> Stored:
    spec = StudySpec(
        Patient("TRANSCODE^TEST", f"T-{new_uid()[-8:]}"),
        "20230303",
        "TC0001",
        (SeriesSpec("CT", 1, number=1, size=64), SeriesSpec("CT", 1, number=2, size=32, frames=3)),
    )
    ct, multiframe = (part10(ds) for ds in build_instances(spec))
    colour, jpeg_ls = bundled("SC_rgb_rle_2frame.dcm"), bundled("MR_small_jpeg_ls_lossless.dcm")
    anatomy = bundled("CT_small.dcm")
    pacs.store(ct, multiframe, colour, jpeg_ls, anatomy)
    return Stored(spec.study_uid, ct, multiframe, colour, jpeg_ls, anatomy)


class TestInstances:
    @pytest.mark.parametrize("target", LOSSLESS_TARGETS)
    def test_an_instance_asked_in_a_lossless_syntax_keeps_every_pixel(
        self, pacs: Pacs, stored: Stored, target: str
    ) -> None:
        for data in (stored.ct, stored.jpeg_ls, stored.colour):
            (part,) = pacs.retrieve(pacs.instance_path(data), accept=dicom(target))
            assert f"transfer-syntax={target}" in part.content_type
            assert dataset_of(part.content).file_meta.TransferSyntaxUID == target
            np.testing.assert_array_equal(_pixels(part.content), _pixels(data))

    @pytest.mark.parametrize("target", [JPEG_LS_NEAR, J2K])
    def test_a_lossy_syntax_stays_within_its_bound_and_says_it_is_lossy(
        self, pacs: Pacs, stored: Stored, target: str
    ) -> None:
        (part,) = pacs.retrieve(pacs.instance_path(stored.anatomy), accept=dicom(target))
        returned = dataset_of(part.content)
        assert returned.LossyImageCompression == "01"
        assert returned.DerivationCodeSequence[0].CodeValue == "113040"
        error = np.abs(_pixels(part.content).astype(float) - _pixels(stored.anatomy).astype(float))
        assert (
            error.max() <= 2 if target == JPEG_LS_NEAR else error.mean() / float(np.ptp(_pixels(stored.anatomy))) < 0.02
        )

    def test_jpeg_baseline_serves_8_bit_colour(self, pacs: Pacs, stored: Stored) -> None:
        (part,) = pacs.retrieve(pacs.instance_path(stored.colour), accept=dicom(JPEG_BASELINE))
        returned = dataset_of(part.content)
        assert returned.PhotometricInterpretation == "YBR_FULL_422"
        assert np.abs(returned.pixel_array.astype(float) - _pixels(stored.colour)).mean() < 4

    def test_a_series_and_a_study_are_transcoded_instance_by_instance(self, pacs: Pacs, stored: Stored) -> None:
        parts = pacs.retrieve(f"/dicomweb/studies/{stored.study_uid}", accept=dicom(J2K_LOSSLESS))
        assert len(parts) == 2
        by_sop = {uids_of(data)[2]: data for data in (stored.ct, stored.multiframe)}
        for part in parts:
            np.testing.assert_array_equal(_pixels(part.content), _pixels(by_sop[uids_of(part.content)[2]]))

    def test_star_keeps_the_stored_bytes(self, pacs: Pacs, stored: Stored) -> None:
        (part,) = pacs.retrieve(pacs.instance_path(stored.jpeg_ls), accept=dicom("*"))
        assert dataset_of(part.content).file_meta.TransferSyntaxUID == JPEG_LS


class TestNegotiation:
    def test_the_highest_q_value_wins(self, pacs: Pacs, stored: Stored) -> None:
        accept = f"{dicom(RLE, '0.5')}, {dicom(HTJ2K_LOSSLESS, '0.9')}, {dicom(JPEG_LS, '0.7')}"
        (part,) = pacs.retrieve(pacs.instance_path(stored.ct), accept=accept)
        assert dataset_of(part.content).file_meta.TransferSyntaxUID == HTJ2K_LOSSLESS

    def test_an_alternative_the_server_cannot_make_falls_to_the_next(self, pacs: Pacs, stored: Stored) -> None:
        # 16-bit CT: JPEG baseline (8-bit only) is skipped for the next acceptable syntax.
        accept = f"{dicom(JPEG_BASELINE)}, {dicom(JPEG_LOSSLESS, '0.8')}"
        (part,) = pacs.retrieve(pacs.instance_path(stored.ct), accept=accept)
        assert dataset_of(part.content).file_meta.TransferSyntaxUID == JPEG_LOSSLESS

    @pytest.mark.parametrize(
        "accept",
        [
            dicom(JPEG_BASELINE),  # 16-bit samples
            dicom("1.2.840.10008.1.2.4.100"),  # MPEG-2: no encoder
            'multipart/related; type="image/jpeg"; transfer-syntax=1.2.840.10008.1.2.4.50',
        ],
    )
    def test_what_cannot_be_made_is_406_with_a_reason(self, pacs: Pacs, stored: Stored, accept: str) -> None:
        path = pacs.instance_path(stored.ct) + ("/frames/1" if "image/" in accept else "")
        response = pacs.http.get(path, headers={"Accept": accept})
        assert response.status_code == 406, response.text
        assert "stored as" in response.json()["detail"]


class TestFrames:
    @pytest.mark.parametrize("target", sorted(FRAME_MEDIA_TYPES.keys() - {JPEG_BASELINE}))
    def test_frames_come_in_the_media_type_of_the_syntax_asked(self, pacs: Pacs, stored: Stored, target: str) -> None:
        media_type = FRAME_MEDIA_TYPES[target]
        accept = f'multipart/related; type="{media_type}"; transfer-syntax={target}'
        (part,) = pacs.retrieve(pacs.instance_path(stored.anatomy) + "/frames/1", accept=accept)
        assert part.content_type.split(";")[0] == media_type
        assert f"transfer-syntax={target}" in part.content_type
        error = np.abs(_frame_pixels(stored.anatomy, target, part.content) - _pixels(stored.anatomy))
        if target == JPEG_LS_NEAR:
            assert error.max() <= 2
        elif target == J2K:
            assert error.mean() < 0.02 * float(np.ptp(_pixels(stored.anatomy)))
        else:
            assert error.max() == 0

    def test_frames_of_a_multi_frame_are_transcoded_in_the_order_asked(self, pacs: Pacs, stored: Stored) -> None:
        accept = f'multipart/related; type="image/jphc"; transfer-syntax={HTJ2K_LOSSLESS}'
        parts = pacs.retrieve(pacs.instance_path(stored.multiframe) + "/frames/3,1", accept=accept)
        source = _pixels(stored.multiframe)
        for part, index in zip(parts, (2, 0), strict=True):
            np.testing.assert_array_equal(_frame_pixels(stored.multiframe, HTJ2K_LOSSLESS, part.content), source[index])

    def test_a_media_type_without_syntax_gets_its_default_syntax(self, pacs: Pacs, stored: Stored) -> None:
        parts = pacs.retrieve(pacs.instance_path(stored.ct) + "/frames/1", accept='multipart/related; type="image/jp2"')
        assert f"transfer-syntax={J2K_LOSSLESS}" in parts[0].content_type
        assert parts[0].content.startswith(b"\xff\x4f")  # a J2K codestream (SOC marker)


class TestZip:
    def test_a_study_as_zip_holds_every_instance_as_stored(self, pacs: Pacs, stored: Stored) -> None:
        response = pacs.http.get(f"/dicomweb/studies/{stored.study_uid}", headers={"Accept": "application/zip"})
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/zip"
        assert "attachment" in response.headers["content-disposition"]
        with zipfile.ZipFile(io.BytesIO(response.content)) as bundle:
            assert bundle.testzip() is None  # every CRC checks
            members = {name.rsplit("/", 1)[1]: bundle.read(name) for name in bundle.namelist()}
        assert members == {f"{uids_of(data)[2]}.dcm": data for data in (stored.ct, stored.multiframe)}

    def test_a_series_as_zip_holds_the_series_only(self, pacs: Pacs, stored: Stored) -> None:
        study, series, sop = uids_of(stored.multiframe)
        response = pacs.http.get(f"/dicomweb/studies/{study}/series/{series}", headers={"Accept": "application/zip"})
        with zipfile.ZipFile(io.BytesIO(response.content)) as bundle:
            assert bundle.namelist() == [f"{study}/{series}/{sop}.dcm"]

    def test_zip_wins_only_when_preferred(self, pacs: Pacs, stored: Stored) -> None:
        accept = f"application/zip; q=0.5, {dicom('*')}"
        response = pacs.http.get(f"/dicomweb/studies/{stored.study_uid}", headers={"Accept": accept})
        assert response.headers["content-type"].startswith("multipart/related")
