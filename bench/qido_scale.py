"""QIDO at scale, index level: fill an index fast, then time Index.search and Index.metadata.

    .venv/bin/python bench/qido_scale.py sqlite:///.bench-data/index.sqlite3
    .venv/bin/python bench/qido_scale.py postgresql+psycopg://postgres@127.0.0.1/webpacs_bench \
        --studies 100000 --instances 1000000

The database must be empty (a new SQLite file, or a newly created PostgreSQL database): the script
migrates it, bulk-loads it through the index's own tables (Core executemany, explicit ids), then
prints a markdown table of p50/p95 latencies.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import Progress
from sqlalchemy import func, insert, select, text

from storage.index import Index
from storage.index.database import migrate, open_engine
from storage.index.models import (
    instance_table,
    normalize_person_name,
    series_table,
    study_modality_table,
    study_sop_class_table,
    study_table,
)
from storage.index.query import Level, parse_query

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from sqlalchemy import Table
    from sqlalchemy.engine import Connection, Engine

CHUNK = 5000
BIG_SERIES = 1000  # instances in the one series timed by Index.metadata
SURNAMES = [
    "SMITH",
    "SMITHSON",
    "SMYTHE",
    "JOHNSON",
    "WILLIAMS",
    "BROWN",
    "JONES",
    "GARCÍA",
    "MILLER",
    "MÜLLER",
    "DAVIS",
    "RODRIGUEZ",
    "MARTINEZ",
    "HERNANDEZ",
    "LOPEZ",
    "GONZALEZ",
    "WILSON",
    "ANDERSON",
    "THOMAS",
    "TAYLOR",
    "MOORE",
    "JACKSON",
    "MARTIN",
    "LEE",
    "PEREZ",
    "THOMPSON",
    "WHITE",
    "HARRIS",
    "SANCHEZ",
    "CLARK",
    "RAMIREZ",
    "LEWIS",
    "ROBINSON",
    "WALKER",
    "YOUNG",
    "ALLEN",
    "KING",
    "WRIGHT",
    "SCOTT",
    "TORRES",
    "NGUYEN",
    "HILL",
    "FLORES",
    "GREEN",
    "ADAMS",
    "NELSON",
    "BAKER",
    "HALL",
    "RIVERA",
    "CAMPBELL",
    "MITCHELL",
    "CARTER",
    "ROBERTS",
    "DUBOIS",
]
GIVEN = ["JOHN", "JANE", "ANNA", "PETER", "MARIA", "HANS", "JOSÉ", "LI", "SEAN", "EVA", "OMAR"]
MODALITIES = ["CT", "MR", "CR", "US", "PT", "DX", "MG", "NM", "XA", "SR"]
SOP_CLASS = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"


def _pn(value: str) -> dict[str, Any]:
    return {"vr": "PN", "Value": [{"Alphabetic": value}]}


def _str(vr: str, value: object) -> dict[str, Any]:
    return {"vr": vr, "Value": [value]}


class Loader:
    """Generates the rows of N studies / M instances, deterministic for a seed."""

    def __init__(self, studies: int, instances: int, seed: int) -> None:
        self.studies = studies
        self.instances = instances
        self.rng = random.Random(seed)
        self.now = datetime.now(UTC)
        self.series_id = 0
        self.instance_id = 0

    def study_rows(self, study_id: int, instances: int) -> dict[str, list[dict[str, Any]]]:
        rng = self.rng
        uid = f"1.2.826.0.1.3680043.10.1.{study_id}"
        name = f"{rng.choice(SURNAMES)}^{rng.choice(GIVEN)}^{rng.choice('ABCDEFGHJKLMNOPRSTW')}"
        patient_id = f"P{rng.randrange(self.studies // 2 + 1):08d}"
        study_date = f"{rng.randint(2005, 2024)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"
        study_time = f"{rng.randint(7, 19):02d}{rng.randint(0, 59):02d}{rng.randint(0, 59):02d}"
        accession = f"A{study_id:09d}"
        study_json = {
            "00080020": _str("DA", study_date),
            "00080030": _str("TM", study_time),
            "00080050": _str("SH", accession),
            "00100010": _pn(name),
            "00100020": _str("LO", patient_id),
            "0020000D": _str("UI", uid),
        }
        n_series = 1 if instances < 4 else rng.randint(1, 4)
        if instances >= BIG_SERIES:
            n_series = 1
        modalities = sorted({rng.choice(MODALITIES) for _ in range(n_series)})
        rows: dict[str, list[dict[str, Any]]] = {
            "study": [
                {
                    "id": study_id,
                    "study_instance_uid": uid,
                    "patient_id": patient_id,
                    "patient_name": name,
                    "patient_name_norm": normalize_person_name(name),
                    "study_date": study_date,
                    "study_time": study_time,
                    "accession_number": accession,
                    "num_series": n_series,
                    "num_instances": instances,
                    "json": json.dumps(study_json, ensure_ascii=False),
                    "created_at": self.now,
                    "updated_at": self.now,
                }
            ],
            "study_modality": [{"study_id": study_id, "modality": m} for m in modalities],
            "study_sop_class": [{"study_id": study_id, "sop_class_uid": SOP_CLASS}],
            "series": [],
            "instance": [],
        }
        per_series = [instances // n_series + (s < instances % n_series) for s in range(n_series)]
        for s, count in enumerate(per_series, start=1):
            self.series_id += 1
            series_uid = f"{uid}.{s}"
            modality = modalities[(s - 1) % len(modalities)]
            rows["series"].append(
                {
                    "id": self.series_id,
                    "study_id": study_id,
                    "series_instance_uid": series_uid,
                    "modality": modality,
                    "series_number": s,
                    "num_instances": count,
                    "json": json.dumps({"00080060": _str("CS", modality)}),
                    "created_at": self.now,
                }
            )
            for i in range(1, count + 1):
                self.instance_id += 1
                sop_uid = f"{series_uid}.{i}"
                meta = {**study_json, "00080018": _str("UI", sop_uid), "00200013": _str("IS", i)}
                if instances >= BIG_SERIES:  # realistic size for the one timed series (~4 KB)
                    meta["00291010"] = {"vr": "OB", "InlineBinary": "A" * 3500}
                rows["instance"].append(
                    {
                        "id": self.instance_id,
                        "series_id": self.series_id,
                        "study_id": study_id,
                        "sop_instance_uid": sop_uid,
                        "sop_class_uid": SOP_CLASS,
                        "instance_number": i,
                        "transfer_syntax_uid": EXPLICIT_LE,
                        "rows": 512,
                        "columns": 512,
                        "bits_allocated": 16,
                        "number_of_frames": 1,
                        "json": json.dumps({"00200013": _str("IS", i)}),
                        "metadata": json.dumps(meta).encode(),
                        "frames": "[[[1234,524288]]]",
                        "blob_key": f"bench/{sop_uid}",
                        "size": 525000,
                        "sha256": "0" * 64,
                        "created_at": self.now,
                    }
                )
        return rows

    def chunks(self) -> Iterator[tuple[dict[str, list[dict[str, Any]]], int]]:
        """Rows in chunks of about CHUNK instances; (rows, studies in the chunk)."""
        remaining = self.instances - BIG_SERIES
        base, extra = divmod(remaining, self.studies - 1)
        tables: dict[str, list[dict[str, Any]]] = {}
        count = 0
        big = self.studies // 2 + 1
        for study_id in range(1, self.studies + 1):
            ordinal = study_id - 1 if study_id < big else study_id - 2  # among the ordinary studies
            instances = BIG_SERIES if study_id == big else base + (ordinal < extra)
            for table, rows in self.study_rows(study_id, instances).items():
                tables.setdefault(table, []).extend(rows)
            count += 1
            if len(tables["instance"]) >= CHUNK:
                yield tables, count
                tables, count = {}, 0
        if tables:
            yield tables, count


TABLES: dict[str, Table] = {
    "study": study_table,
    "study_modality": study_modality_table,
    "study_sop_class": study_sop_class_table,
    "series": series_table,
    "instance": instance_table,
}


def load(engine: Engine, loader: Loader, console: Console) -> float:
    started = time.perf_counter()
    with Progress(console=console) as progress:
        task = progress.add_task("loading studies", total=loader.studies)
        for tables, studies in loader.chunks():
            with engine.begin() as connection:
                for name in ("study", "study_modality", "study_sop_class", "series", "instance"):
                    connection.execute(insert(TABLES[name]), tables[name])
            progress.advance(task, studies)
    with engine.connect() as connection:
        finish(connection)
    return time.perf_counter() - started


def finish(connection: Connection) -> None:
    """Sequences after explicit ids, and planner statistics."""
    if connection.dialect.name == "postgresql":
        for table in ("study", "series", "instance"):
            connection.execute(
                text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")
            )
        connection.commit()
        autocommit = connection.execution_options(isolation_level="AUTOCOMMIT")
        autocommit.exec_driver_sql("VACUUM ANALYZE")
    else:
        connection.exec_driver_sql("ANALYZE")
        connection.commit()


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def measure(run: Callable[[int], object], repeat: int) -> tuple[float, float]:
    run(0)  # warm
    samples = []
    for attempt in range(repeat):
        started = time.perf_counter()
        run(attempt)
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples), percentile(samples, 0.95)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url", help="index URL: sqlite:///PATH or postgresql+psycopg://... (empty)")
    parser.add_argument("--studies", type=int, default=100_000)
    parser.add_argument("--instances", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--measure-only", action="store_true", help="time an index this script filled before")
    args = parser.parse_args()
    console = Console(stderr=True)
    if args.instances < args.studies + BIG_SERIES:
        console.print("--instances must be at least --studies + 1000")
        return 2
    migrate(args.url)
    engine = open_engine(args.url)
    with engine.connect() as connection:
        loaded = connection.execute(select(func.count()).select_from(study_table)).scalar_one()
    if args.measure_only != bool(loaded):
        console.print(f"{args.url}: give a new database, or --measure-only for one this script filled")
        return 2
    if not args.measure_only:
        seconds = load(engine, Loader(args.studies, args.instances, args.seed), console)
        console.print(f"loaded {args.studies} studies / {args.instances} instances in {seconds:.0f} s")
    index = Index(engine)
    with engine.connect() as connection:
        big_series = connection.execute(
            select(study_table.c.study_instance_uid, series_table.c.series_instance_uid)
            .join(series_table, series_table.c.study_id == study_table.c.id)
            .where(series_table.c.num_instances == BIG_SERIES)
            .limit(1)
        ).one()
        patient_ids = list(
            connection.execute(
                select(study_table.c.patient_id).order_by(func.random()).limit(args.repeat + 1)
            ).scalars()
        )

    def qido(level: Level, params: Callable[[int], list[tuple[str, str]]]) -> Callable[[int], object]:
        return lambda attempt: index.search(parse_query(level, params(attempt)), max_results=1000)

    names = ["SMI*", "GARC*", "mull*", "JOHNSON^J*", "smyth*"]

    def year(attempt: int) -> str:
        return str(2005 + attempt % 20)

    cases: list[tuple[str, Callable[[int], object]]] = [
        ("PatientID, limit=100", qido(Level.STUDY, lambda a: [("PatientID", patient_ids[a]), ("limit", "100")])),
        (
            "PatientName prefix, limit=100",
            qido(Level.STUDY, lambda a: [("PatientName", names[a % len(names)]), ("limit", "100")]),
        ),
        (
            "PatientName prefix, 1000 rows (server max)",
            qido(Level.STUDY, lambda a: [("PatientName", names[a % len(names)])]),
        ),
        (
            "StudyDate range, limit=100",
            qido(Level.STUDY, lambda a: [("StudyDate", f"{year(a)}0101-{year(a)}0630"), ("limit", "100")]),
        ),
        (
            "ModalitiesInStudy, limit=100",
            qido(Level.STUDY, lambda a: [("ModalitiesInStudy", MODALITIES[a % len(MODALITIES)]), ("limit", "100")]),
        ),
        ("offset=50000 limit=100", qido(Level.STUDY, lambda a: [("offset", str(50_000 + a)), ("limit", "100")])),
        (
            "series of a study",
            qido(
                Level.SERIES, lambda a: [("StudyInstanceUID", f"1.2.826.0.1.3680043.10.1.{1 + a * 997 % args.studies}")]
            ),
        ),
        (f"metadata of a {BIG_SERIES}-instance series", lambda a: index.metadata(*big_series)),
    ]
    lines = [
        f"{engine.dialect.name}, {args.studies:,} studies / {args.instances:,} instances, {args.repeat} runs each",
        "",
        "| operation | p50 ms | p95 ms |",
        "|---|---:|---:|",
    ]
    for label, run in cases:
        p50, p95 = measure(run, args.repeat)
        lines.append(f"| {label} | {p50:.1f} | {p95:.1f} |")
    sys.stdout.write("\n".join(lines) + "\n")
    engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
