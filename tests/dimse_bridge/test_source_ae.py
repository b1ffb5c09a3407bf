"""The bridge records the calling AE in the File Meta of what it received, and nothing else changes."""

from __future__ import annotations

from io import BytesIO
from typing import TYPE_CHECKING

import pytest
from dicomdata import bundled
from pydicom import dcmread

from dimse_bridge.source_ae import NotPart10Error, with_source_ae

if TYPE_CHECKING:
    from pathlib import Path

    from dimse_bridge.stow_connection import Part10


def _data_set_bytes(data: bytes) -> bytes:
    meta = dcmread(BytesIO(data), stop_before_pixels=True).file_meta
    return data[132 + 12 + int(meta.FileMetaInformationGroupLength) :]


def _sent(part: Part10) -> bytes:
    """What goes on the wire: the new head, then the file from the offset on."""
    return part.head + part.path.read_bytes()[part.offset :]


class TestSourceAeStamp:
    def test_the_calling_ae_is_recorded_and_the_data_set_bytes_are_untouched(self, tmp_path: Path) -> None:
        path = tmp_path / "received.dcm"
        path.write_bytes(bundled("JPEG2000.dcm"))  # a compressed data set: any re-encoding would show
        original = dcmread(path)

        sent = _sent(with_source_ae(path, "CT_SCANNER_1"))

        stamped = dcmread(BytesIO(sent))
        assert stamped.file_meta.SourceApplicationEntityTitle == "CT_SCANNER_1"
        assert stamped.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
        assert stamped.file_meta.MediaStorageSOPInstanceUID == original.file_meta.MediaStorageSOPInstanceUID
        assert _data_set_bytes(sent) == _data_set_bytes(path.read_bytes())
        assert stamped.PixelData == original.PixelData
        assert len(sent) == with_source_ae(path, "CT_SCANNER_1").size()

    def test_a_second_stamp_replaces_the_first_and_keeps_tag_order(self, tmp_path: Path) -> None:
        path = tmp_path / "received.dcm"
        ds = dcmread(BytesIO(bundled("CT_small.dcm")))
        ds.file_meta.PrivateInformationCreatorUID = "1.2.3.4"  # (0002,0100): after (0002,0016)
        ds.file_meta.PrivateInformation = b"xy"
        ds.save_as(path, enforce_file_format=True)
        once = tmp_path / "once.dcm"
        once.write_bytes(_sent(with_source_ae(path, "FIRST")))
        twice = _sent(with_source_ae(once, "SECOND"))
        meta = dcmread(BytesIO(twice)).file_meta
        assert meta.SourceApplicationEntityTitle == "SECOND"
        assert meta.PrivateInformationCreatorUID == "1.2.3.4"
        assert list(meta.keys()) == sorted(meta.keys())
        assert _data_set_bytes(twice) == _data_set_bytes(path.read_bytes())

    def test_an_odd_title_is_padded_to_even_length(self, tmp_path: Path) -> None:
        path = tmp_path / "received.dcm"
        path.write_bytes(bundled("CT_small.dcm"))
        part = with_source_ae(path, "CT1")
        assert len(part.head) % 2 == 0
        assert dcmread(BytesIO(_sent(part))).file_meta.SourceApplicationEntityTitle == "CT1"

    def test_a_file_without_file_meta_is_refused(self, tmp_path: Path) -> None:
        path = tmp_path / "raw.dcm"
        path.write_bytes(b"\0" * 300)
        with pytest.raises(NotPart10Error):
            with_source_ae(path, "CT1")
