"""Every pydicom-bundled file goes in by STOW-RS and comes back: byte-exact as stored, or decoded to
Explicit VR Little Endian with the same pixel values (PS3.18 §8.7.3)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import numpy as np
import pytest
from dicomdata import BUNDLED_FILES, CHARSET_FILES, bundled, dataset_of, uids_of
from live_pacs import STOW_STATUS, first, sequence

if TYPE_CHECKING:
    from live_pacs import Pacs

EXPLICIT_VR_LITTLE_ENDIAN: Final = "1.2.840.10008.1.2.1"
BIG_ENDIAN: Final = "1.2.840.10008.1.2.2"
# Syntaxes whose pixel data may be lossy: PS3.18 §8.7.3 lets the server keep them when no syntax is asked.
LOSSY: Final = frozenset(
    {"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.81", "1.2.840.10008.1.2.4.91"}
)
ALL_FILES: Final = BUNDLED_FILES + CHARSET_FILES


@pytest.fixture(scope="module")
def sent(pacs: Pacs) -> dict[str, bytes]:
    """Every bundled file, with fresh UIDs, stored in one STOW-RS request."""
    files = {name: bundled(name) for name in ALL_FILES}
    answer = pacs.store(*files.values())
    stored = [
        first(item, STOW_STATUS["ReferencedSOPInstanceUID"])
        for item in sequence(answer, STOW_STATUS["ReferencedSOPSequence"])
    ]
    assert stored == [uids_of(data)[2] for data in files.values()]
    return files


def _transfer_syntax(data: bytes) -> str:
    return str(dataset_of(data).file_meta.TransferSyntaxUID)


def _part_transfer_syntax(content_type: str) -> str:
    params = dict(item.strip().split("=", 1) for item in content_type.split(";")[1:] if "=" in item)
    return params.get("transfer-syntax", "").strip('"')


def _same_pixels(original: bytes, returned: bytes) -> None:
    expected, actual = dataset_of(original), dataset_of(returned)
    if "PixelData" not in expected:
        assert "PixelData" not in actual
        return
    np.testing.assert_array_equal(actual.pixel_array, expected.pixel_array)


class TestRetrieveAsStored:
    @pytest.mark.parametrize("name", [name for name in ALL_FILES if name != "MR_small_bigendian.dcm"])
    def test_transfer_syntax_star_returns_the_original_bytes(
        self, pacs: Pacs, sent: dict[str, bytes], name: str
    ) -> None:
        (part,) = pacs.retrieve(pacs.instance_path(sent[name]))
        assert part.content == sent[name]
        assert part.content_type.startswith("application/dicom")
        assert _part_transfer_syntax(part.content_type) == _transfer_syntax(sent[name])

    def test_big_endian_is_served_as_explicit_little_endian_with_the_same_data(
        self, pacs: Pacs, sent: dict[str, bytes]
    ) -> None:
        """PS3.18 §8.7.3: Explicit VR Big Endian shall not be used with web services, even for transfer-syntax=*."""
        original = sent["MR_small_bigendian.dcm"]
        (part,) = pacs.retrieve(pacs.instance_path(original))
        returned = dataset_of(part.content)
        assert returned.file_meta.TransferSyntaxUID == EXPLICIT_VR_LITTLE_ENDIAN
        assert _part_transfer_syntax(part.content_type) == EXPLICIT_VR_LITTLE_ENDIAN
        expected = dataset_of(original)
        assert returned.PatientName == expected.PatientName
        assert returned.SOPInstanceUID == expected.SOPInstanceUID
        _same_pixels(original, part.content)

    @pytest.mark.parametrize("name", ALL_FILES)
    def test_the_blob_on_disk_is_the_received_bytes(self, pacs: Pacs, sent: dict[str, bytes], name: str) -> None:
        sop_uid = uids_of(sent[name])[2]
        (blob,) = [path for path in pacs.blob_files() if path.name.startswith(sop_uid + ".")]
        assert blob.read_bytes() == sent[name]


class TestRetrieveInTheDefaultSyntax:
    @pytest.mark.parametrize("name", ALL_FILES)
    def test_default_accept_gives_explicit_little_endian_with_equal_pixels(
        self, pacs: Pacs, sent: dict[str, bytes], name: str
    ) -> None:
        original = sent[name]
        (part,) = pacs.retrieve(pacs.instance_path(original), accept='multipart/related; type="application/dicom"')
        syntax = _part_transfer_syntax(part.content_type)
        assert dataset_of(part.content).file_meta.TransferSyntaxUID == syntax
        if syntax == EXPLICIT_VR_LITTLE_ENDIAN:
            _same_pixels(original, part.content)
            if _transfer_syntax(original) == EXPLICIT_VR_LITTLE_ENDIAN:
                assert part.content == original
        else:
            assert _transfer_syntax(original) in LOSSY, (
                f"{name} is lossless and must be served decompressed, not as {syntax}"
            )
            assert part.content == original

    @pytest.mark.parametrize(
        "accept",
        [
            None,
            "*/*",
            "multipart/related; type=application/dicom",
            'multipart/related; type="application/dicom", */*;q=0.5',
        ],
    )
    def test_ordinary_client_accept_headers_are_served(
        self, pacs: Pacs, sent: dict[str, bytes], accept: str | None
    ) -> None:
        original = sent["CT_small.dcm"]
        (part,) = pacs.retrieve(pacs.instance_path(original), accept=accept)
        assert part.content == original


class TestWadoUri:
    @pytest.mark.parametrize(
        "name",
        [name for name in ALL_FILES if _transfer_syntax(bundled(name, fresh_uids=False)) == EXPLICIT_VR_LITTLE_ENDIAN],
    )
    def test_returns_the_original_bytes_of_explicit_little_endian_files(
        self, pacs: Pacs, sent: dict[str, bytes], name: str
    ) -> None:
        study, series, sop = uids_of(sent[name])
        response = pacs.http.get(
            "/wado",
            params={
                "requestType": "WADO",
                "studyUID": study,
                "seriesUID": series,
                "objectUID": sop,
                "contentType": "application/dicom",
            },
        )
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("application/dicom")
        assert response.content == sent[name]

    def test_compressed_file_comes_back_decompressed_by_default(self, pacs: Pacs, sent: dict[str, bytes]) -> None:
        original = sent["MR_small_RLE.dcm"]
        study, series, sop = uids_of(original)
        response = pacs.http.get(
            "/wado", params={"requestType": "WADO", "studyUID": study, "seriesUID": series, "objectUID": sop}
        )
        assert response.status_code == 200, response.text
        assert dataset_of(response.content).file_meta.TransferSyntaxUID == EXPLICIT_VR_LITTLE_ENDIAN
        _same_pixels(original, response.content)

    def test_unknown_object_gives_404_and_wrong_request_type_400(self, pacs: Pacs, sent: dict[str, bytes]) -> None:
        study, series, _ = uids_of(sent["CT_small.dcm"])
        params = {"requestType": "WADO", "studyUID": study, "seriesUID": series, "objectUID": "1.2.3.4"}
        assert pacs.http.get("/wado", params=params).status_code == 404
        assert pacs.http.get("/wado", params={**params, "requestType": "RENDER"}).status_code == 400
