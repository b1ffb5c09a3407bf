"""Index write path: time Index.add_instance, Index.add_instances, and reads/deletes of a big study.

    .venv/bin/python bench/index_writes.py sqlite:///.bench-data/writes.sqlite3 --count 300
    .venv/bin/python bench/index_writes.py postgresql+psycopg://postgres@127.0.0.1/webpacs_writes

The database must be empty (a new SQLite file, or a newly created PostgreSQL database): the script
migrates it, indexes the first `--count` Part-10 files of `--data` one transaction each
(`add_instance`), deletes their studies, indexes them again in batches (`add_instances`, one
transaction per batch), then builds one study of `--big-study` instances and times
`stored_instances` and `delete` on it. Files are parsed before the clock starts: only the index is
timed.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from storage.dicom.instance import read_instance
from storage.index import Index, NewInstance
from storage.index.database import migrate, open_engine

if TYPE_CHECKING:
    from collections.abc import Callable

    from storage.dicom.records import ParsedInstance

DEFAULT_DATA = "/tmp/peer-bench/data/ingest/studies"  # where the peer-bench harness writes its data


def _items(parsed: list[ParsedInstance], tag: str) -> list[NewInstance]:
    return [NewInstance(p, f"{tag}/{i}", 1, f"{i:064d}") for i, p in enumerate(parsed)]


def _big_study(template: ParsedInstance, count: int) -> list[NewInstance]:
    """`count` instances of one study in 4 series, derived from one parsed file (new UIDs)."""
    study_uid = "2.25.1000"
    items = []
    for i in range(count):
        series_uid = f"{study_uid}.{i % 4}"
        sop_uid = f"{series_uid}.{i}"
        parsed = dataclasses.replace(
            template,
            study=dataclasses.replace(template.study, study_instance_uid=study_uid),
            series=dataclasses.replace(template.series, series_instance_uid=series_uid, series_number=i % 4),
            instance=dataclasses.replace(template.instance, sop_instance_uid=sop_uid, instance_number=i),
        )
        items.append(NewInstance(parsed, f"big/{i}", 1, f"{i:064d}"))
    return items


def _rounds(actions: list[Callable[[], object]], per_round: int, *, scale: int = 1) -> str:
    """Run `actions` in rounds; "median / best" milliseconds per action over the rounds.

    On a shared machine the best round shows the code, the median what the neighbours left of it.
    An action that does `scale` things counts as `scale` actions.
    """
    per_action = []
    for first in range(0, len(actions), per_round):
        chunk = actions[first : first + per_round]
        start = time.perf_counter()
        for action in chunk:
            action()
        per_action.append((time.perf_counter() - start) * 1000 / len(chunk) / scale)
    return f"{statistics.median(per_action):.2f} / {min(per_action):.2f}"


def main() -> int:
    """Run the benchmark; print a markdown table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url", help="an empty index database: sqlite:///PATH or postgresql+psycopg://...")
    parser.add_argument("--count", type=int, default=300, help="files to index (default 300)")
    parser.add_argument("--batch", type=int, default=50, help="add_instances batch size (default 50)")
    parser.add_argument("--big-study", type=int, default=2000, help="instances in the big study (default 2000)")
    parser.add_argument("--data", default=DEFAULT_DATA, help="folder of Part-10 files (*.dcm, recursive)")
    args = parser.parse_args()
    console = Console()

    files = sorted(Path(args.data).rglob("*.dcm"))[: args.count]
    if not files:
        console.print(f"no *.dcm files under {args.data}")
        return 1
    parsed = [read_instance(path) for path in files]
    migrate(args.url)
    engine = open_engine(args.url)
    index = Index(engine)
    studies = sorted({p.study.study_instance_uid for p in parsed})
    rows: list[tuple[str, str]] = []

    def add_one(item: NewInstance) -> Callable[[], object]:
        return lambda: index.add_instance(item.parsed, blob_key=item.blob_key, size=item.size, sha256=item.sha256)

    single = [add_one(item) for item in _items(parsed, "a")]
    rows.append(("add_instance, ms per instance", _rounds(single, 50)))
    rows.append(("add_instance again (already present), ms per instance", _rounds(single, 50)))
    for study in studies:
        index.delete(study)

    batched = _items(parsed, "b")
    batches = [batched[first : first + args.batch] for first in range(0, len(batched), args.batch)]
    adds = [lambda batch=batch: index.add_instances(batch) for batch in batches]
    rows.append((f"add_instances (batches of {args.batch}), ms per instance", _rounds(adds, 1, scale=args.batch)))

    big = _big_study(parsed[0], args.big_study)
    for first in range(0, len(big), 500):
        index.add_instances(big[first : first + 500])
    study_uid = big[0].parsed.study.study_instance_uid
    rows.append(
        (
            f"stored_instances of a {args.big_study}-instance study, ms",
            _rounds([lambda: index.stored_instances(study_uid)] * 5, 1),
        )
    )
    doomed = [item.parsed for item in big[-5:]]
    deletes = [
        lambda p=p: index.delete(study_uid, p.series.series_instance_uid, p.instance.sop_instance_uid) for p in doomed
    ]
    rows.append((f"delete one instance of the {args.big_study}-instance study, ms", _rounds(deletes, 1)))
    start = time.perf_counter()
    index.delete(study_uid, big[0].parsed.series.series_instance_uid)
    rows.append(("delete one of its 4 series, ms", f"{(time.perf_counter() - start) * 1000:.1f}"))
    start = time.perf_counter()
    index.delete(study_uid)
    rows.append(("delete the rest of the study, ms", f"{(time.perf_counter() - start) * 1000:.1f}"))
    engine.dispose()

    console.print(f"{engine.dialect.name}, {len(parsed)} files in {len(studies)} studies")
    console.print("| operation | median / best |\n|---|---:|", highlight=False)
    for name, value in rows:
        console.print(f"| {name} | {value} |", highlight=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
