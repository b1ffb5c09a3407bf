"""Compression on ingest through a real server: WEBPACS_INGEST_COMPRESSION set, STOW-RS, WADO-RS back."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pytest
from dicomdata import bundled, dataset_of, multipart_body, split_multipart, uids_of
from pydicom.pixels.utils import pixel_array

if TYPE_CHECKING:
    from conftest import ServerFactory  # tests/conftest.py

JPEG_LS = "1.2.840.10008.1.2.4.80"


def test_a_policy_stores_ct_compressed_losslessly_and_serves_it(
    live_servers: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WEBPACS_INGEST_COMPRESSION", f"modality:CT={JPEG_LS}")
    server = live_servers.start("sqlite")
    try:
        with server.client() as client:
            ct, mr = bundled("CT_small.dcm"), bundled("MR_small.dcm")
            body, content_type = multipart_body([ct, mr])
            assert (
                client.post("/dicomweb/studies", content=body, headers={"Content-Type": content_type}).status_code
                == 200
            )
            for data, expected in ((ct, JPEG_LS), (mr, "1.2.840.10008.1.2.1")):
                study, series, sop = uids_of(data)
                path = f"/dicomweb/studies/{study}/series/{series}/instances/{sop}"
                response = client.get(
                    path, headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'}
                )
                (part,) = split_multipart(response.content, response.headers["content-type"])
                stored = dataset_of(part.content)
                assert stored.file_meta.TransferSyntaxUID == expected
                np.testing.assert_array_equal(
                    pixel_array(stored, decoding_plugin="pylibjpeg"), dataset_of(data).pixel_array
                )
                metadata = client.get(path + "/metadata").json()[0]
                assert metadata["00083002"]["Value"] == [expected]  # Available Transfer Syntax UID
    finally:
        live_servers.stop(server)


def test_a_malformed_policy_stops_the_server_with_its_name(
    live_servers: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WEBPACS_INGEST_COMPRESSION", "CT=JPEG")
    with pytest.raises(AssertionError, match="WEBPACS_INGEST_COMPRESSION"):
        live_servers.stop(live_servers.start("sqlite"))
