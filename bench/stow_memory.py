"""Server memory while one huge multi-frame instance is stored by STOW-RS, then retrieved.

    .venv/bin/python bench/stow_memory.py --gigabytes 2

Writes a multi-frame CT of the given size (header by pydicom, pixel data appended in chunks so the
generator itself stays small), starts `webpacs serve` on a fresh archive, streams the file with
httpx while sampling the server's resident memory (VmRSS) every 50 ms, checks the stored bytes are
byte-identical (SHA-256 of a streamed WADO-RS retrieve), and prints a markdown table.
"""

from __future__ import annotations

import argparse
import hashlib
import struct
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

_REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(_REPO)]  # the packages first: tests/storage must not shadow storage
sys.path.append(str(_REPO / "tests"))
from conftest import start_server, stop_server  # noqa: E402 - after the sys.path set-up above

from storage.dicom.multipart import MultipartWriter  # noqa: E402 - after the sys.path set-up above

CHUNK = 1024 * 1024


def write_multiframe(path: Path, gigabytes: float) -> int:
    """A valid Enhanced-CT-like multi-frame of 512x512x16-bit frames; returns the frame count."""
    frame_size = 512 * 512 * 2
    frames = int(gigabytes * 1024**3 // frame_size)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientName, ds.PatientID, ds.Modality = "BIG^MULTIFRAME", "BIG-1", "CT"
    ds.StudyDate, ds.SeriesNumber, ds.InstanceNumber = "20240101", 1, 1
    ds.Rows = ds.Columns = 512
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.NumberOfFrames = frames
    ds.save_as(path, enforce_file_format=True)
    with path.open("ab") as out:
        # Pixel Data (7FE0,0010) OW with a 32-bit length (PS3.5 §7.1.2), then the frames.
        out.write(struct.pack("<HH2sHL", 0x7FE0, 0x0010, b"OW", 0, frames * frame_size))
        block = bytes(range(256)) * (frame_size // 256)
        for _ in range(frames):
            out.write(block)
    return frames


def wado_uri_params(path: Path) -> dict[str, str]:
    header = dcmread(path, stop_before_pixels=True)
    return {
        "requestType": "WADO",
        "studyUID": header.StudyInstanceUID,
        "seriesUID": header.SeriesInstanceUID,
        "objectUID": header.SOPInstanceUID,
        "contentType": "application/dicom",
    }


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gigabytes", type=float, default=2.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        source = root / "big.dcm"
        frames = write_multiframe(source, args.gigabytes)
        size = source.stat().st_size
        server = start_server(root / "archive")
        samples: list[int] = []
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                samples.append(rss_kib(server.process.pid))
                time.sleep(0.05)

        baseline = rss_kib(server.process.pid)
        sampler = threading.Thread(target=sample)
        sampler.start()
        writer = MultipartWriter()

        def body():  # type: ignore[no-untyped-def]
            yield writer.part_header("application/dicom")
            with source.open("rb") as handle:
                while chunk := handle.read(CHUNK):
                    yield chunk
            yield writer.closing_delimiter()

        started = time.perf_counter()
        with server.client() as client:
            client.timeout = httpx.Timeout(3600)
            response = client.post(
                "/dicomweb/studies", content=body(), headers={"Content-Type": writer.content_type("application/dicom")}
            )
            stow_seconds = time.perf_counter() - started
            stow_peak = max(samples)
            retrieved = hashlib.sha256()
            started = time.perf_counter()
            with client.stream("GET", "/wado", params=wado_uri_params(source)) as answer:
                for chunk in answer.iter_bytes():
                    retrieved.update(chunk)
            retrieve_seconds = time.perf_counter() - started
        done.set()
        sampler.join()
        original = hashlib.sha256()
        with source.open("rb") as handle:
            while chunk := handle.read(CHUNK):
                original.update(chunk)
        stop_server(server)
    print(f"| instance | {size / 1024**3:.2f} GiB, {frames} frames of 512x512x16 bit |")
    print("|---|---|")
    print(f"| STOW-RS status | {response.status_code} |")
    print(f"| STOW-RS time | {stow_seconds:.1f} s ({size / 1e6 / stow_seconds:.0f} MB/s) |")
    print(f"| server RSS before | {baseline / 1024:.0f} MiB |")
    print(f"| server RSS peak during STOW | {stow_peak / 1024:.0f} MiB |")
    print(f"| server RSS peak overall (incl. retrieve) | {max(samples) / 1024:.0f} MiB |")
    print(f"| WADO-URI retrieve | {retrieve_seconds:.1f} s ({size / 1e6 / retrieve_seconds:.0f} MB/s) |")
    print(f"| retrieved bytes identical (SHA-256) | {retrieved.digest() == original.digest()} |")


if __name__ == "__main__":
    main()
