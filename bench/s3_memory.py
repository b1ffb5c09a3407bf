"""Memory of the S3 blob store while it uploads (multipart) and reads back one large blob.

    .venv/bin/python bench/s3_memory.py --mebibytes 512

Starts moto_server (S3 over HTTP), writes a file of random bytes to the store's staging folder,
puts it with S3BlobStore.put_file (16 MiB parts, each with its SHA-256), streams it back with
open_range, and samples this process's resident memory (VmRSS) every 20 ms throughout.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

_REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(_REPO)]  # the packages first: tests/storage must not shadow storage
sys.path.append(str(_REPO / "tests"))
from s3_server import start_s3_server  # noqa: E402 - after the sys.path set-up above

from storage.blobs.s3 import S3BlobStore  # noqa: E402 - after the sys.path set-up above


def rss_mib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) // 1024
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mebibytes", type=int, default=512)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(dir=_REPO.parent))  # on disk: /tmp may be memory
    s3 = start_s3_server(scratch / "moto.log")
    try:
        store = S3BlobStore(s3.new_bucket(), "bench", s3.options(staging_dir=scratch / "staging"))
        source = store.staging_dir() / "big.dcm"
        with source.open("wb") as out:
            block = os.urandom(1024 * 1024)
            for _ in range(args.mebibytes):
                out.write(block)
        before = rss_mib()
        peak = [before]
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], rss_mib())
                time.sleep(0.02)

        sampler = threading.Thread(target=sample)
        sampler.start()
        started = time.perf_counter()
        store.put_file("big.dcm", source)
        put = time.perf_counter() - started
        started = time.perf_counter()
        received = sum(len(chunk) for chunk in store.open_range("big.dcm"))
        read = time.perf_counter() - started
        done.set()
        sampler.join()
        print("| blob | RSS before | RSS peak (put + read) | put | read |")
        print("|---|---|---|---|---|")
        print(f"| {received // 1024**2} MiB | {before} MiB | {peak[0]} MiB | {put:.1f} s | {read:.1f} s |")
    finally:
        s3.stop()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
