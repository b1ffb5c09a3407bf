"""Transcoding and rendering latency: one 512x512 16-bit CT frame, in process and over real HTTP.

    .venv/bin/python bench/transcode.py [--repeat 50]

1. In process: the frame (pydicom's CT_small scaled up to 512x512, signed 16-bit, so the codecs see
   anatomy, not noise) encoded to each lossless target, and decoded + encoded from a stored file.
2. Over HTTP against `webpacs serve --no-bridge` on a fresh archive (auth included): a frame asked as
   JPEG lossless / J2K / HTJ2K, the rendered JPEG (window 40,400), and thumbnails cold (each request a
   new viewport, so always rendered) and cached (the same one again).

Prints a markdown table of p50 / p95 in milliseconds.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

_REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(_REPO)]  # the packages first: tests/storage must not shadow storage
sys.path.append(str(_REPO / "tests"))
from conftest import start_server, stop_server  # noqa: E402 - after the sys.path set-up above
from dicomdata import multipart_body  # noqa: E402

from storage.dicom.transcode import PixelFormat, encode_frame, transcode_frames  # noqa: E402

if TYPE_CHECKING:
    from collections.abc import Callable

TARGETS = {
    "JPEG lossless SV1": "1.2.840.10008.1.2.4.70",
    "JPEG 2000 lossless": "1.2.840.10008.1.2.4.90",
    "HTJ2K lossless": "1.2.840.10008.1.2.4.201",
    "JPEG-LS lossless": "1.2.840.10008.1.2.4.80",
    "RLE lossless": "1.2.840.10008.1.2.5",
    "JPEG 2000 10:1": "1.2.840.10008.1.2.4.91",
}
MEDIA_TYPES = {
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.201": "image/jphc",
}


def ct_512() -> bytes:
    """CT_small (128x128) scaled to 512x512 by pixel repetition, with fresh UIDs, as Part-10 bytes."""
    dataset = dcmread(str(get_testdata_file("CT_small.dcm")))
    pixels = np.kron(dataset.pixel_array, np.ones((4, 4), dtype=dataset.pixel_array.dtype))
    dataset.Rows, dataset.Columns = pixels.shape
    dataset.PixelData = pixels.tobytes()
    dataset.StudyInstanceUID, dataset.SeriesInstanceUID = generate_uid(), generate_uid()
    dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def percentiles(run: Callable[[int], object], repeat: int) -> tuple[float, float]:
    for attempt in range(3):
        run(attempt)
    samples = []
    for attempt in range(repeat):
        started = time.perf_counter()
        run(attempt)
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return samples[len(samples) // 2], samples[min(len(samples) - 1, int(0.95 * len(samples)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()
    data = ct_512()
    rows: list[tuple[str, float, float]] = []
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "ct.dcm"
        path.write_bytes(data)
        header = dcmread(path)
        frame, pixel = header.pixel_array, PixelFormat.of(header)
        for name, uid in TARGETS.items():
            rows.append(
                (f"encode only: {name}", *percentiles(lambda _, u=uid: encode_frame(frame, pixel, u), args.repeat))
            )
        for name, uid in TARGETS.items():
            rows.append(
                (
                    f"decode + encode from file: {name}",
                    *percentiles(lambda _, u=uid: b"".join(transcode_frames(path, [0], u)), args.repeat),
                )
            )
        rows += over_http(Path(folder), data, args.repeat)
    print("| operation (512x512, 16-bit CT frame) | p50 ms | p95 ms |")
    print("|---|---:|---:|")
    for name, p50, p95 in rows:
        print(f"| {name} | {p50:.1f} | {p95:.1f} |")
    return 0


def over_http(folder: Path, data: bytes, repeat: int) -> list[tuple[str, float, float]]:
    server = start_server(folder / "archive")
    try:
        with server.client() as client:
            body, content_type = multipart_body([data])
            client.post("/dicomweb/studies", content=body, headers={"Content-Type": content_type}).raise_for_status()
            header = dcmread(io.BytesIO(data), stop_before_pixels=True)
            instance = (
                f"/dicomweb/studies/{header.StudyInstanceUID}/series/{header.SeriesInstanceUID}"
                f"/instances/{header.SOPInstanceUID}"
            )

            def get(url: str, accept: str, params: dict[str, str] | None = None) -> None:
                client.get(url, headers={"Accept": accept}, params=params).raise_for_status()

            rows = []
            for uid, media_type in MEDIA_TYPES.items():
                accept = f'multipart/related; type="{media_type}"; transfer-syntax={uid}'
                rows.append(
                    (
                        f"HTTP frame as {media_type} ({uid})",
                        *percentiles(lambda _, a=accept: get(instance + "/frames/1", a), repeat),
                    )
                )
            rows.append(
                (
                    "HTTP rendered JPEG, window 40,400",
                    *percentiles(
                        lambda _: get(instance + "/rendered", "image/jpeg", {"window": "40,400,linear"}), repeat
                    ),
                )
            )
            rows.append(
                (
                    "HTTP thumbnail, cold (a new viewport each time)",
                    *percentiles(
                        lambda i: get(instance + "/thumbnail", "image/jpeg", {"viewport": f"{64 + i},{64 + i}"}), repeat
                    ),
                )
            )
            rows.append(
                (
                    "HTTP thumbnail, cached",
                    *percentiles(lambda _: get(instance + "/thumbnail", "image/jpeg"), repeat),
                )
            )
            rows.append(
                (
                    "HTTP metadata (for scale: no pixels)",
                    *percentiles(lambda _: get(instance + "/metadata", "application/dicom+json"), repeat),
                )
            )
    finally:
        stop_server(server)
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
