"""Throughput of the STOW-RS multipart reader: a 200 MB body of 0.5 MB parts fed in 64 KiB chunks.

Run: .venv/bin/python bench/multipart_reader.py [--size-mb 200] [--part-kb 512] [--chunk-kb 64]

The parts are spooled to a temporary directory and deleted as they come, as the STOW edge does once
it has moved them into the blob store. Prints MB/s and parts/s of `MultipartReader.feed`, by wall
clock and by this process's CPU time (the figure that matters on a shared machine).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from storage.dicom.multipart import MultipartReader, MultipartWriter


def main() -> None:
    """Build the body once in memory, then time feeding it to the reader."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--part-kb", type=int, default=512, help="a 512x512 16-bit frame is 512 KiB")
    parser.add_argument("--chunk-kb", type=int, default=64)
    parser.add_argument("--spool-dir", type=Path, default=Path(tempfile.gettempdir()))
    args = parser.parse_args()

    writer = MultipartWriter()
    payload = os.urandom(args.part_kb * 1024)  # random bytes: worst case for the boundary search
    count = args.size_mb * 1024 // args.part_kb
    pieces = []
    for _ in range(count):
        pieces += [writer.part_header("application/dicom"), payload]
    pieces.append(writer.closing_delimiter())
    body = memoryview(b"".join(pieces))
    chunk_size = args.chunk_kb * 1024

    with tempfile.TemporaryDirectory(dir=args.spool_dir) as spool:
        started, cpu_started = time.perf_counter(), time.process_time()
        parts = 0
        with MultipartReader(writer.boundary, Path(spool)) as reader:
            for offset in range(0, len(body), chunk_size):
                for part in reader.feed(bytes(body[offset : offset + chunk_size])):
                    part.path.unlink()
                    parts += 1
            reader.finish()
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started

    megabytes = len(body) / 1e6
    print(
        f"{megabytes:.0f} MB, {parts} parts of {args.part_kb} KiB, {args.chunk_kb} KiB chunks: "
        f"{megabytes / elapsed:.0f} MB/s, {parts / elapsed:.0f} parts/s ({elapsed:.2f} s wall); "
        f"per CPU second: {megabytes / cpu:.0f} MB/s, {parts / cpu:.0f} parts/s"
    )


if __name__ == "__main__":
    main()
