"""Study management speed (issue #9): edit a large study, move a series, merge patients, recycle bin.

    .venv/bin/python bench/study_edits.py --instances 200 --size 512 --studies 5000

For each backend (SQLite, PostgreSQL at 127.0.0.1:5432) a fresh archive with a folder of blobs gets
one study of `--instances` instances of `--size`^2 x 16 bits (stored through `Archive.store`, as
STOW does), which is then edited (every instance rewritten, one index switch), half of it moved to
another study, and its patient merged into another. Then `--studies` one-instance studies are
stored, 1% of them recycled, and QIDO-RS study pages timed (the recycle filter is in every query):
the first page and a deep one. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

_REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(_REPO)]  # the packages first: tests/storage must not shadow storage
sys.path.append(str(_REPO / "tests"))
from dicomdata import Patient, SeriesSpec, StudySpec, iter_instances, new_uid, part10  # noqa: E402
from postgres_databases import create_postgres_database, drop_postgres_database  # noqa: E402

from storage.archive import Archive  # noqa: E402
from storage.blobs import open_blob_store  # noqa: E402
from storage.index import Index  # noqa: E402
from storage.index.database import migrate, open_engine  # noqa: E402
from storage.index.query import Level, parse_query  # noqa: E402
from storage.study_edits import PatientKey, edit_study, merge_patients, move_series_to_study, recycle  # noqa: E402

_PAGE_RUNS = 20


def _store(archive: Archive, spec: StudySpec) -> None:
    staging = archive.blobs.staging_dir()
    staging.mkdir(parents=True, exist_ok=True)
    for ds in iter_instances(spec):
        data = part10(ds)
        path = staging / f"{new_uid()}.part"
        path.write_bytes(data)
        archive.store(path, hashlib.sha256(data).hexdigest())


def _page_ms(archive: Archive, offset: int) -> float:
    query = parse_query(Level.STUDY, [("limit", "100"), ("offset", str(offset))])
    times = []
    for _ in range(_PAGE_RUNS):
        start = time.perf_counter()
        archive.index.search(query, max_results=1000)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def run(backend: str, args: argparse.Namespace, folder: Path) -> dict[str, str]:
    url = create_postgres_database() if backend == "postgresql" else f"sqlite:///{folder / 'index.sqlite3'}"
    migrate(url)
    engine = open_engine(url)
    archive = Archive(Index(engine), open_blob_store(str(folder / "blobs")))
    try:
        half = args.instances // 2
        moved, kept = SeriesSpec("CT", half, number=1, size=args.size), SeriesSpec("CT", half, 2, size=args.size)
        big = StudySpec(Patient("BENCH^BIG", "P-BIG"), "20240101", "ACC1", (moved, kept))
        other = StudySpec(Patient("BENCH^OTHER", "P-OTHER"), "20240102", "ACC2", (SeriesSpec("MR", 1, size=8),))
        _store(archive, big)
        _store(archive, other)
        row: dict[str, str] = {"backend": backend}
        start = time.perf_counter()
        edit_study(engine, archive, big.study_uid, {"PatientName": "EDITED^NAME", "AccessionNumber": "ACC9"})
        seconds = time.perf_counter() - start
        megabytes = args.instances * args.size * args.size * 2 / 1e6
        row["edit"] = f"{seconds:.2f} s ({args.instances / seconds:.0f} inst/s, {megabytes / seconds:.0f} MB/s)"
        start = time.perf_counter()
        move_series_to_study(engine, archive, big.study_uid, moved.series_uid, other.study_uid)
        row["move series"] = f"{time.perf_counter() - start:.2f} s ({half} inst)"
        start = time.perf_counter()
        merge_patients(engine, archive, PatientKey("P-OTHER"), PatientKey("P-BIG"))
        row["merge"] = f"{time.perf_counter() - start:.2f} s ({half + 1} inst)"
        for number in range(args.studies):
            spec = StudySpec(
                Patient(f"Q^{number}", f"Q-{number}"),
                f"2023{1 + number % 12:02d}{1 + number % 28:02d}",
                f"Q{number}",
                (SeriesSpec("CT", 1, size=8),),
            )
            _store(archive, spec)
            if number % 100 == 0:
                recycle(engine, spec.study_uid, by="bench")
        row["QIDO page 1"] = f"{_page_ms(archive, 0):.1f} ms"
        row[f"QIDO offset {args.studies - 200}"] = f"{_page_ms(archive, args.studies - 200):.1f} ms"
        return row
    finally:
        engine.dispose()
        if backend == "postgresql":
            drop_postgres_database(url)


def main() -> None:
    """Run the benchmark on both backends and print a markdown table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", type=int, default=200, help="instances in the edited study")
    parser.add_argument("--size", type=int, default=512, help="rows and columns of each instance")
    parser.add_argument("--studies", type=int, default=5000, help="studies for the QIDO page timings")
    args = parser.parse_args()
    rows = []
    for backend in ("sqlite", "postgresql"):
        with tempfile.TemporaryDirectory() as scratch:
            rows.append(run(backend, args, Path(scratch)))
    columns = list(rows[0])
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(row[c] for c in columns) + " |")


if __name__ == "__main__":
    main()
