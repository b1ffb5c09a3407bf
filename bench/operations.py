"""Integrity check, backup, restore and retention speed on an archive of generated studies (issue #9).

    .venv/bin/python bench/operations.py --studies 500 --instances-per-study 4 --size 256

For each backend (SQLite, PostgreSQL at 127.0.0.1:5432) a fresh archive with a folder of blobs is
filled through `Archive.store` (as STOW does), then timed: `verify_archive` (every blob re-read and
hashed), a first `backup_archive` to a folder (every blob copied and hashed, plus the snapshot), a
second one (incremental: nothing new), `restore_archive` into a new empty archive, and a retention
dry run that selects every study. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

_REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(_REPO)]  # the packages first: tests/storage must not shadow storage
sys.path.append(str(_REPO / "tests"))
from dicomdata import Patient, SeriesSpec, StudySpec, build_instances, new_uid, part10  # noqa: E402
from postgres_databases import create_postgres_database, drop_postgres_database  # noqa: E402

from storage.archive import Archive  # noqa: E402
from storage.backup import BackupTarget, backup_archive, restore_archive  # noqa: E402
from storage.blobs import open_blob_store  # noqa: E402
from storage.index import Index  # noqa: E402
from storage.index.database import migrate, open_engine  # noqa: E402
from storage.integrity import verify_archive  # noqa: E402
from storage.retention import PolicyFields, create_policy, expired_studies  # noqa: E402


def database_url(backend: str, folder: Path) -> str:
    return create_postgres_database() if backend == "postgresql" else f"sqlite:///{folder / 'index.sqlite3'}"


def fill(archive: Archive, studies: int, per_study: int, size: int) -> int:
    total = 0
    for number in range(studies):
        spec = StudySpec(
            Patient(f"BENCH^{number}", f"B{number:06d}"),
            "20000101",
            f"A{number}",
            (SeriesSpec("CT", per_study, size=size),),
        )
        for ds in build_instances(spec):
            data = part10(ds)
            path = archive.blobs.staging_dir() / new_uid()
            path.write_bytes(data)
            archive.store(path, hashlib.sha256(data).hexdigest())
            total += len(data)
    return total


def timed(label: str, rows: list[tuple[str, float]], action: object) -> None:
    started = time.perf_counter()
    action()  # type: ignore[operator]
    rows.append((label, time.perf_counter() - started))


def run(backend: str, args: argparse.Namespace) -> list[str]:
    with tempfile.TemporaryDirectory(prefix="bench-ops-") as scratch:
        folder = Path(scratch)
        url = database_url(backend, folder)
        restored_url = database_url(backend, folder / "restored") if backend == "postgresql" else ""
        try:
            migrate(url)
            engine = open_engine(url)
            archive = Archive(Index(engine), open_blob_store(str(folder / "blobs")))
            total = fill(archive, args.studies, args.instances_per_study, args.size)
            count = args.studies * args.instances_per_study
            target = BackupTarget(str(folder / "backup"))
            rows: list[tuple[str, float]] = []
            timed("verify", rows, lambda: verify_archive(engine, archive))
            timed("backup (first, full)", rows, lambda: backup_archive(engine, archive.blobs, target))
            timed("backup (again, nothing new)", rows, lambda: backup_archive(engine, archive.blobs, target))
            (folder / "restored").mkdir()
            restored_url = restored_url or f"sqlite:///{folder / 'restored' / 'index.sqlite3'}"
            restored_blobs = open_blob_store(str(folder / "restored" / "blobs"))
            timed("restore", rows, lambda: restore_archive(target, restored_url, restored_blobs))
            create_policy(engine, PolicyFields("all", 365))
            timed(
                f"retention dry run ({args.studies} studies expire)",
                rows,
                lambda: expired_studies(engine, as_of=datetime.now(UTC)),
            )
            engine.dispose()
        finally:
            if backend == "postgresql":
                drop_postgres_database(url)
                if restored_url.startswith("postgresql"):
                    drop_postgres_database(restored_url)
    megabytes = total / 1e6
    # The retention dry run reads no blob: its rate per instance or per MB would mean nothing.
    return [
        f"| {backend} | {label} | {seconds:.2f} s | {count / seconds:,.0f} | {megabytes / seconds:,.1f} |"
        if not label.startswith("retention")
        else f"| {backend} | {label} | {seconds:.2f} s | - | - |"
        for label, seconds in rows
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=500)
    parser.add_argument("--instances-per-study", type=int, default=4)
    parser.add_argument("--size", type=int, default=256, help="rows = columns of each 16-bit image")
    parser.add_argument("--backends", nargs="+", default=["sqlite", "postgresql"])
    args = parser.parse_args()
    print("| backend | operation | time | instances/s | MB/s |")
    print("|---|---|---|---|---|")
    for backend in args.backends:
        for line in run(backend, args):
            print(line, flush=True)


if __name__ == "__main__":
    main()
