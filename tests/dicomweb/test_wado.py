"""WADO-RS (PS3.18 §10.4): study and series retrieve, metadata against pydicom, BulkDataURIs, frames,
and the errors a client meets (404, 406 with a reason, never 500)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from dicomdata import (
    Patient,
    SeriesSpec,
    StudySpec,
    build_instances,
    bundled,
    dataset_of,
    expected_metadata,
    frames_of,
    new_uid,
    normalize_metadata,
    part10,
    split_multipart,
    uids_of,
)
from live_pacs import AS_STORED, first

if TYPE_CHECKING:
    from live_pacs import Pacs

OCTETS = 'multipart/related; type="application/octet-stream"'


@dataclass(frozen=True)
class Archive:
    """What this module stored: a two-series study with an overlay, a multi-frame, compressed files."""

    study: StudySpec
    files: dict[str, bytes]  # SOP Instance UID -> Part-10 bytes of the generated study
    multiframe: bytes
    compressed: dict[str, bytes]  # bundled file name -> bytes


def _with_overlay(data: bytes) -> bytes:
    """The instance with an overlay plane: OverlayData (6000,3000) is a second bulk data element."""
    ds = dataset_of(data)
    ds.add_new(0x60000010, "US", 128)  # OverlayRows
    ds.add_new(0x60000011, "US", 128)  # OverlayColumns
    ds.add_new(0x60000040, "CS", "G")  # OverlayType
    ds.add_new(0x60000050, "SS", [1, 1])  # OverlayOrigin
    ds.add_new(0x60000100, "US", 1)  # OverlayBitsAllocated
    ds.add_new(0x60000102, "US", 0)  # OverlayBitPosition
    ds.add_new(0x60003000, "OW", bytes(range(256)) * 8)  # OverlayData: 128 x 128 bits
    return part10(ds)


@pytest.fixture(scope="module")
def archive(pacs: Pacs) -> Archive:
    study = StudySpec(
        Patient("WADO^TESTER", f"W-{new_uid()[-8:]}"),
        "20220202",
        "WADO0001",
        (SeriesSpec("CT", 3, number=1, size=128), SeriesSpec("CT", 2, number=2, size=32)),
    )
    files = [part10(ds) for ds in build_instances(study)]
    files[0] = _with_overlay(files[0])
    multiframe_spec = StudySpec(
        Patient("WADO^MULTI", "W-MULTI"), "20220203", "WADO0002", (SeriesSpec("MR", 1, size=32, frames=5),)
    )
    (multiframe,) = [part10(ds) for ds in build_instances(multiframe_spec)]
    compressed = {
        name: bundled(name)
        for name in (
            "examples_ybr_color.dcm",
            "SC_rgb_jpeg_gdcm.dcm",
            "MR_small_jp2klossless.dcm",
            "MR_small_jpeg_ls_lossless.dcm",
            "MR_small_RLE.dcm",
            "SC_rgb_rle_2frame.dcm",
            "image_dfl.dcm",
            "MR_small_bigendian.dcm",
        )
    }
    pacs.store(*files, multiframe, *compressed.values())
    return Archive(study, {uids_of(data)[2]: data for data in files}, multiframe, compressed)


def _metadata_by_sop(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {first(item, "00080018"): item for item in items}


class TestRetrieveStudyAndSeries:
    def test_study_retrieve_has_one_part_per_instance_with_the_stored_bytes(self, pacs: Pacs, archive: Archive) -> None:
        parts = pacs.retrieve(f"/dicomweb/studies/{archive.study.study_uid}")
        assert sorted(part.content for part in parts) == sorted(archive.files.values())
        assert all(part.content_type.startswith("application/dicom") for part in parts)

    def test_series_retrieve_has_the_series_instances_only(self, pacs: Pacs, archive: Archive) -> None:
        series = archive.study.series[0]
        parts = pacs.retrieve(f"/dicomweb/studies/{archive.study.study_uid}/series/{series.series_uid}", accept=None)
        assert len(parts) == series.instances
        assert {uids_of(part.content)[1] for part in parts} == {series.series_uid}
        assert {part.content for part in parts} <= set(archive.files.values())

    def test_every_part_names_its_location(self, pacs: Pacs, archive: Archive) -> None:
        parts = pacs.retrieve(f"/dicomweb/studies/{archive.study.study_uid}")
        for part in parts:
            location = part.headers.get("content-location", "")
            assert location.endswith(f"/instances/{uids_of(part.content)[2]}")


class TestMetadata:
    def test_study_metadata_equals_pydicom_json_of_every_header(self, pacs: Pacs, archive: Archive) -> None:
        response = pacs.http.get(f"/dicomweb/studies/{archive.study.study_uid}/metadata")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/dicom+json")
        served = _metadata_by_sop(response.json())
        assert served.keys() == archive.files.keys()
        for sop_uid, data in archive.files.items():
            assert normalize_metadata(served[sop_uid]) == expected_metadata(data)

    def test_series_metadata_lists_the_series_instances(self, pacs: Pacs, archive: Archive) -> None:
        series = archive.study.series[1]
        items = pacs.http.get(f"/dicomweb/studies/{archive.study.study_uid}/series/{series.series_uid}/metadata").json()
        assert len(items) == series.instances
        for item in items:
            assert normalize_metadata(item) == expected_metadata(archive.files[first(item, "00080018")])

    @pytest.mark.parametrize(
        "name", ["examples_ybr_color.dcm", "image_dfl.dcm", "MR_small_bigendian.dcm", "SC_rgb_rle_2frame.dcm"]
    )
    def test_instance_metadata_of_bundled_files_equals_pydicom_json(
        self, pacs: Pacs, archive: Archive, name: str
    ) -> None:
        data = archive.compressed[name]
        (item,) = pacs.http.get(pacs.instance_path(data) + "/metadata").json()
        assert normalize_metadata(item) == expected_metadata(data)
        assert first(item, "00083002") == str(dataset_of(data).file_meta.TransferSyntaxUID)

    def test_pixel_data_bulk_data_uri_serves_the_pixel_data(self, pacs: Pacs, archive: Archive) -> None:
        data = next(iter(archive.files.values()))
        (item,) = pacs.http.get(pacs.instance_path(data) + "/metadata").json()
        uri = item["7FE00010"]["BulkDataURI"]
        assert uri.startswith(pacs.url + "/dicomweb/")
        (part,) = pacs.retrieve(uri, accept=OCTETS)
        assert part.content == dataset_of(data).PixelData

    def test_overlay_bulk_data_uri_serves_the_overlay_bytes(self, pacs: Pacs, archive: Archive) -> None:
        data = next(iter(archive.files.values()))
        (item,) = pacs.http.get(pacs.instance_path(data) + "/metadata").json()
        (part,) = pacs.retrieve(item["60003000"]["BulkDataURI"], accept=None)
        assert part.content == dataset_of(data)[0x60003000].value

    def test_a_byte_range_of_bulk_data_gives_206_with_those_bytes(self, pacs: Pacs, archive: Archive) -> None:
        """Issue #3: bulk data with HTTP Range (RFC 9110 §14)."""
        data = next(iter(archive.files.values()))
        (item,) = pacs.http.get(pacs.instance_path(data) + "/metadata").json()
        response = pacs.http.get(item["60003000"]["BulkDataURI"], headers={"Range": "bytes=100-299"})
        assert response.status_code == 206, f"{response.status_code}: Range ignored"
        value = dataset_of(data)[0x60003000].value
        content_type = response.headers["content-type"]
        parts = split_multipart(response.content, content_type) if content_type.startswith("multipart/") else None
        assert (parts[0].content if parts else response.content) == value[100:300]


class TestFrames:
    def test_a_native_frame_is_its_original_bytes(self, pacs: Pacs, archive: Archive) -> None:
        (part,) = pacs.retrieve(pacs.instance_path(archive.multiframe) + "/frames/3", accept=OCTETS)
        assert part.content_type.startswith("application/octet-stream")
        assert part.content == frames_of(archive.multiframe)[2]

    def test_a_frame_list_gives_the_frames_in_the_asked_order(self, pacs: Pacs, archive: Archive) -> None:
        parts = pacs.retrieve(pacs.instance_path(archive.multiframe) + "/frames/5,1,2", accept=OCTETS)
        frames = frames_of(archive.multiframe)
        assert [part.content for part in parts] == [frames[4], frames[0], frames[1]]

    @pytest.mark.parametrize(
        ("name", "accept", "media_type"),
        [
            ("examples_ybr_color.dcm", 'multipart/related; type="image/jpeg"', "image/jpeg"),
            (
                "SC_rgb_jpeg_gdcm.dcm",
                'multipart/related; type="image/jpeg"; transfer-syntax=1.2.840.10008.1.2.4.70',
                "image/jpeg",
            ),
            ("MR_small_jp2klossless.dcm", 'multipart/related; type="image/jp2"', "image/jp2"),
            ("MR_small_jpeg_ls_lossless.dcm", 'multipart/related; type="image/jls"', "image/jls"),
            ("SC_rgb_rle_2frame.dcm", 'multipart/related; type="image/dicom-rle"', "image/dicom-rle"),
            # As stored: the part says which syntax its octets are in (what OHIF asks for).
            (
                "examples_ybr_color.dcm",
                'multipart/related; type="application/octet-stream"; transfer-syntax=*',
                "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.4.50",
            ),
        ],
    )
    def test_compressed_frames_are_pydicoms_encapsulated_frames(
        self, pacs: Pacs, archive: Archive, name: str, accept: str, media_type: str
    ) -> None:
        data = archive.compressed[name]
        frames = frames_of(data)
        wanted = [1, len(frames)] if len(frames) > 1 else [1]
        parts = pacs.retrieve(pacs.instance_path(data) + "/frames/" + ",".join(map(str, wanted)), accept=accept)
        assert [part.content for part in parts] == [frames[number - 1] for number in wanted]
        for part in parts:
            assert part.content_type.replace('"', "").startswith(media_type), part.content_type

    @pytest.mark.parametrize(
        "name", ["MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_bigendian.dcm", "image_dfl.dcm"]
    )
    def test_lossless_frames_asked_as_octets_are_decoded_pixels(self, pacs: Pacs, archive: Archive, name: str) -> None:
        data = archive.compressed[name]
        (part,) = pacs.retrieve(pacs.instance_path(data) + "/frames/1", accept=OCTETS)
        pixels = dataset_of(data).pixel_array
        assert part.content == pixels.astype(pixels.dtype.newbyteorder("<")).tobytes()

    def test_a_frame_beyond_the_last_gives_404(self, pacs: Pacs, archive: Archive) -> None:
        response = pacs.http.get(pacs.instance_path(archive.multiframe) + "/frames/1,6", headers={"Accept": OCTETS})
        assert response.status_code == 404
        assert "5 frame" in response.text

    @pytest.mark.parametrize("frames", ["0", "1,x", "-1"])
    def test_a_malformed_frame_list_gives_400(self, pacs: Pacs, archive: Archive, frames: str) -> None:
        response = pacs.http.get(
            pacs.instance_path(archive.multiframe) + f"/frames/{frames}", headers={"Accept": OCTETS}
        )
        assert response.status_code == 400


class TestNotFound:
    @pytest.mark.parametrize(
        "suffix", ["", "/metadata", "/series/1.2.3", "/series/1.2.3/metadata", "/series/1.2.3/instances/1.2.3.4"]
    )
    def test_unknown_study_gives_404(self, pacs: Pacs, suffix: str) -> None:
        accept = "application/dicom+json" if suffix.endswith("metadata") else AS_STORED
        response = pacs.http.get(f"/dicomweb/studies/{new_uid()}{suffix}", headers={"Accept": accept})
        assert response.status_code == 404, response.text

    def test_unknown_instance_of_a_known_series_gives_404(self, pacs: Pacs, archive: Archive) -> None:
        study, series, _ = uids_of(archive.multiframe)
        for suffix in ("", "/metadata", "/frames/1"):
            response = pacs.http.get(f"/dicomweb/studies/{study}/series/{series}/instances/{new_uid()}{suffix}")
            assert response.status_code == 404, (suffix, response.text)


class TestNotAcceptable:
    @pytest.mark.parametrize(
        ("resource", "accept"),
        [
            ("instance", 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50'),
            ("instance", "image/png"),
            ("instance", 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.2'),
            # 16-bit frames: JPEG baseline carries 8-bit samples only (PS3.5 §A.4.1).
            ("frame", 'multipart/related; type="image/jpeg"; transfer-syntax=1.2.840.10008.1.2.4.50'),
            ("frame", "text/html"),
            ("metadata", 'multipart/related; type="application/dicom"'),
            ("metadata", "image/jpeg"),
        ],
    )
    def test_what_cannot_be_served_gives_406_with_a_reason(
        self, pacs: Pacs, archive: Archive, resource: str, accept: str
    ) -> None:
        path = (
            pacs.instance_path(archive.multiframe)
            + {"instance": "", "frame": "/frames/1", "metadata": "/metadata"}[resource]
        )
        response = pacs.http.get(path, headers={"Accept": accept})
        assert response.status_code == 406, response.text
        assert len(response.json()["detail"]) > 20

    @pytest.mark.parametrize("accept", ["not a media type", 'multipart/related; type="application/dicom"; q=7', ";;;"])
    def test_a_malformed_accept_header_is_a_client_error(self, pacs: Pacs, archive: Archive, accept: str) -> None:
        response = pacs.http.get(pacs.instance_path(archive.multiframe), headers={"Accept": accept})
        assert 400 <= response.status_code < 500, response.text


class TestDecodedDefaults:
    def test_a_lossless_instance_is_decompressed_for_the_default_media_type(self, pacs: Pacs, archive: Archive) -> None:
        data = archive.compressed["MR_small_jpeg_ls_lossless.dcm"]
        (part,) = pacs.retrieve(pacs.instance_path(data), accept="application/dicom")
        returned = dataset_of(part.content)
        assert returned.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
        np.testing.assert_array_equal(returned.pixel_array, dataset_of(data).pixel_array)
