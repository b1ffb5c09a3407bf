"""Compression on ingest (storage/dicom/ingest_compression.py, Archive.store): off by default, lossless
bit-exact, the index and frame offsets describing the stored bytes, the original kept or replaced."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.encaps import generate_frames
from pydicom.pixels.utils import pixel_array

from storage.archive import Archive
from storage.blobs import open_blob_store
from storage.dicom.ingest_compression import ORIGINALS_PREFIX, CompressionPolicy
from storage.index import Index
from storage.index.database import migrate, open_engine

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

JPEG_LS = "1.2.840.10008.1.2.4.80"
HTJ2K = "1.2.840.10008.1.2.4.201"
J2K_LOSSLESS = "1.2.840.10008.1.2.4.90"


def _bundled(name: str) -> bytes:
    return Path(str(get_testdata_file(name))).read_bytes()


@pytest.fixture
def make_archive(tmp_path: Path) -> Iterator[Callable[[CompressionPolicy | None], Archive]]:
    engines = []

    def make(policy: CompressionPolicy | None) -> Archive:
        folder = tmp_path / f"archive{len(engines)}"
        folder.mkdir()
        url = f"sqlite:///{folder / 'index.sqlite3'}"
        migrate(url)
        engine = open_engine(url)
        engines.append(engine)
        return Archive(Index(engine), open_blob_store(str(folder / "blobs")), compression=policy)

    yield make
    for engine in engines:
        engine.dispose()


def _store(archive: Archive, data: bytes) -> None:
    staging = archive.blobs.staging_dir()
    staging.mkdir(parents=True, exist_ok=True)
    part = staging / "part.dcm"
    part.write_bytes(data)
    archive.store(part, hashlib.sha256(data).hexdigest())


def _served(archive: Archive, data: bytes) -> tuple[bytes, str]:
    header = dcmread(io.BytesIO(data), stop_before_pixels=True)
    (stored,) = archive.instances(header.StudyInstanceUID, header.SeriesInstanceUID, header.SOPInstanceUID)
    return archive.blobs.read_range(stored.blob_key, 0, stored.size), stored.blob_key


class TestPolicy:
    def test_rules_are_read_in_order_and_the_first_match_wins(self) -> None:
        policy = CompressionPolicy.parse(f"modality:ct={JPEG_LS}, source:US1={HTJ2K}, *={J2K_LOSSLESS}")
        common = {"transfer_syntax": "1.2.840.10008.1.2.1", "bits_allocated": 16, "has_pixels": True}
        assert policy.target(modality="CT", source_ae="US1", **common) == JPEG_LS
        assert policy.target(modality="US", source_ae="us1", **common) == HTJ2K
        assert policy.target(modality="MR", source_ae="", **common) == J2K_LOSSLESS

    def test_compressed_and_pixel_less_instances_are_left_as_received(self) -> None:
        policy = CompressionPolicy.parse(f"*={JPEG_LS}")
        assert (
            policy.target(transfer_syntax=J2K_LOSSLESS, modality="CT", source_ae="", bits_allocated=16, has_pixels=True)
            is None
        )
        assert (
            policy.target(
                transfer_syntax="1.2.840.10008.1.2.1",
                modality="SR",
                source_ae="",
                bits_allocated=None,
                has_pixels=False,
            )
            is None
        )

    @pytest.mark.parametrize(
        "text", ["CT=1.2.840.10008.1.2.4.80", "modality:CT=1.2.3", "colour:red=1.2.840.10008.1.2.4.80"]
    )
    def test_malformed_rules_are_refused_by_name(self, text: str) -> None:
        with pytest.raises(ValueError, match="rule"):
            CompressionPolicy.parse(text)

    def test_no_rules_is_the_default(self) -> None:
        assert CompressionPolicy.parse("") == CompressionPolicy()


class TestIngest:
    def test_without_a_policy_the_received_bytes_are_stored(self, make_archive: Callable[..., Archive]) -> None:
        archive, data = make_archive(None), _bundled("CT_small.dcm")
        _store(archive, data)
        assert _served(archive, data)[0] == data

    @pytest.mark.parametrize("target", [JPEG_LS, HTJ2K, J2K_LOSSLESS, "1.2.840.10008.1.2.5"])
    def test_lossless_compression_keeps_every_pixel_and_the_index_describes_it(
        self, make_archive: Callable[..., Archive], target: str
    ) -> None:
        archive, data = make_archive(CompressionPolicy.parse(f"modality:CT={target}")), _bundled("CT_small.dcm")
        _store(archive, data)
        served, _ = _served(archive, data)
        dataset = dcmread(io.BytesIO(served))
        assert dataset.file_meta.TransferSyntaxUID == target
        assert len(served) < len(data)
        np.testing.assert_array_equal(
            pixel_array(dataset, decoding_plugin="pylibjpeg"), dcmread(io.BytesIO(data)).pixel_array
        )
        (stored,) = archive.instances(dataset.StudyInstanceUID)
        assert stored.transfer_syntax_uid == target
        assert stored.size == len(served)
        assert stored.sha256 == hashlib.sha256(served).hexdigest()
        # The frame offsets computed at ingest cut the stored codestream exactly.
        assert stored.frames is not None
        cut = b"".join(served[offset : offset + length] for offset, length in stored.frames[0].fragments)
        assert cut.rstrip(b"\x00") == next(generate_frames(dataset.PixelData, number_of_frames=1)).rstrip(b"\x00")
        assert not list(archive.blobs.keys(ORIGINALS_PREFIX))

    def test_the_original_is_kept_when_asked_and_goes_with_its_instance(
        self, make_archive: Callable[..., Archive]
    ) -> None:
        policy = CompressionPolicy.parse(f"*={JPEG_LS}", keep_original=True)
        archive, data = make_archive(policy), _bundled("MR_small.dcm")
        _store(archive, data)
        _, key = _served(archive, data)
        assert archive.blobs.read_range(ORIGINALS_PREFIX + key, 0, len(data)) == data
        assert archive.sweep_orphans(grace_seconds=0, recent_days=None) == 0
        assert list(archive.blobs.keys(ORIGINALS_PREFIX)) == [ORIGINALS_PREFIX + key]
        archive.delete(dcmread(io.BytesIO(data)).StudyInstanceUID)
        assert not list(archive.blobs.keys(ORIGINALS_PREFIX))

    def test_pixels_the_codec_refuses_are_stored_as_received(self, make_archive: Callable[..., Archive]) -> None:
        # Near-lossless JPEG-LS cannot take signed 12-bit samples at the very bottom of their range.
        archive = make_archive(CompressionPolicy.parse("*=1.2.840.10008.1.2.4.81"))
        dataset = dcmread(io.BytesIO(_bundled("CT_small.dcm")))
        pixels = np.zeros((dataset.Rows, dataset.Columns), dtype=np.int16)
        pixels[0, 0] = -2048
        dataset.BitsStored, dataset.HighBit, dataset.PixelRepresentation = 12, 11, 1
        dataset.PixelData = pixels.tobytes()
        buffer = io.BytesIO()
        dataset.save_as(buffer)
        _store(archive, buffer.getvalue())
        assert _served(archive, buffer.getvalue())[0] == buffer.getvalue()
