"""Interoperability: dicomweb-client (a client nobody here wrote) asks for other transfer syntaxes,
rendered images and thumbnails, and decodes what it gets with pydicom."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import numpy as np
import pytest
from dicomdata import bundled, dataset_of, uids_of
from dicomweb_client.api import DICOMwebClient
from PIL import Image
from pydicom.encaps import encapsulate
from pydicom.pixels.utils import pixel_array

if TYPE_CHECKING:
    from live_pacs import Pacs

J2K_LOSSLESS = "1.2.840.10008.1.2.4.90"
JPEG_LS = "1.2.840.10008.1.2.4.80"
JPEG_LOSSLESS = "1.2.840.10008.1.2.4.70"


@pytest.fixture(scope="module")
def client(pacs: Pacs) -> DICOMwebClient:
    return DICOMwebClient(url=f"{pacs.url}/dicomweb", headers=pacs.auth())


@pytest.fixture(scope="module")
def stored(client: DICOMwebClient) -> bytes:
    data = bundled("MR_small_RLE.dcm")
    client.store_instances(datasets=[dataset_of(data)])
    return data


class TestDicomwebClient:
    @pytest.mark.parametrize(
        ("media_type", "transfer_syntax"), [("image/jp2", J2K_LOSSLESS), ("image/jls", JPEG_LS), ("image/jpeg", None)]
    )
    def test_frames_in_an_explicit_transfer_syntax_decode_to_the_stored_pixels(
        self, client: DICOMwebClient, stored: bytes, media_type: str, transfer_syntax: str | None
    ) -> None:
        study, series, sop = uids_of(stored)
        media = (media_type,) if transfer_syntax is None else (media_type, transfer_syntax)
        (frame,) = client.retrieve_instance_frames(study, series, sop, frame_numbers=[1], media_types=(media,))
        header = dataset_of(stored)
        header.file_meta.TransferSyntaxUID = transfer_syntax or JPEG_LOSSLESS  # image/jpeg's default
        header.PixelData = encapsulate([frame])
        np.testing.assert_array_equal(pixel_array(header, decoding_plugin="pylibjpeg"), pixel_array(dataset_of(stored)))

    def test_an_instance_in_another_syntax_is_a_dataset_in_that_syntax(
        self, client: DICOMwebClient, stored: bytes
    ) -> None:
        study, series, sop = uids_of(stored)
        dataset = client.retrieve_instance(study, series, sop, media_types=(("application/dicom", JPEG_LS),))
        assert dataset.file_meta.TransferSyntaxUID == JPEG_LS
        np.testing.assert_array_equal(pixel_array(dataset, decoding_plugin="pylibjpeg"), dataset_of(stored).pixel_array)

    def test_rendered_instances_and_frames_are_images(self, client: DICOMwebClient, stored: bytes) -> None:
        study, series, sop = uids_of(stored)
        rendered = client.retrieve_instance_rendered(
            study, series, sop, media_types=("image/png",), params={"viewport": "32,32"}
        )
        assert Image.open(io.BytesIO(rendered)).size == (32, 32)
        frame = client.retrieve_instance_frames_rendered(study, series, sop, [1], media_types=("image/jpeg",))
        assert Image.open(io.BytesIO(frame)).format == "JPEG"
