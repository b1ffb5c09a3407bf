"""The bridge records the calling AE in the File Meta of what it received, and nothing else changes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dicomdata import bundled
from pydicom import dcmread
from pydicom.filereader import read_file_meta_info

from dimse_bridge.source_ae import stamp_source_ae

if TYPE_CHECKING:
    from pathlib import Path


def _data_set_bytes(path: Path) -> bytes:
    meta = read_file_meta_info(path)
    return path.read_bytes()[132 + 12 + int(meta.FileMetaInformationGroupLength) :]


class TestSourceAeStamp:
    def test_the_calling_ae_is_recorded_and_the_data_set_bytes_are_untouched(self, tmp_path: Path) -> None:
        path = tmp_path / "received.dcm"
        path.write_bytes(bundled("JPEG2000.dcm"))  # a compressed data set: any re-encoding would show
        before = _data_set_bytes(path)
        original = dcmread(path)

        stamp_source_ae(path, "CT_SCANNER_1")

        stamped = dcmread(path)
        assert stamped.file_meta.SourceApplicationEntityTitle == "CT_SCANNER_1"
        assert stamped.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
        assert _data_set_bytes(path) == before
        assert stamped.PixelData == original.PixelData

    def test_a_second_stamp_replaces_the_first(self, tmp_path: Path) -> None:
        path = tmp_path / "received.dcm"
        path.write_bytes(bundled("CT_small.dcm"))
        stamp_source_ae(path, "FIRST")
        stamp_source_ae(path, "SECOND")
        assert dcmread(path).file_meta.SourceApplicationEntityTitle == "SECOND"
        assert not list(tmp_path.glob("*.stamped"))
