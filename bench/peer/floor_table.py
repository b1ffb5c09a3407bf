"""Table of a `bench/peer/floor.sh` run: per cell, each target's median instances/s over the rounds,
and the median of the same-round ratios to Orthanc (storescu cells) and of webpacs to its floor
(bridge-floor for storescu, http-floor for HTTP, retrieve-floor for C-GET and C-MOVE).

    .venv/bin/python bench/peer/floor_table.py bench/peer/results/floor-STAMP.jsonl
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

CELLS = ["storescu x1", "storescu x4", "HTTP x1", "HTTP x4", "C-GET 50", "C-MOVE 50"]
TARGETS = ["orthanc", "pynetdicom-ack", "bridge-floor", "http-floor", "retrieve-floor", "webpacs"]
# (numerator, denominator, the column's title)
RATIOS = [
    ("pynetdicom-ack", "orthanc", "pynetdicom-ack / Orthanc"),
    ("bridge-floor", "orthanc", "bridge-floor / Orthanc"),
    ("retrieve-floor", "orthanc", "retrieve-floor / Orthanc"),
    ("webpacs", "orthanc", "webpacs / Orthanc"),
    ("webpacs", "floor", "webpacs / its floor"),
]


def main(raw: Path) -> None:
    # rates[cell][target][round]; None where the measurement failed
    rates: dict[str, dict[str, dict[int, float | None]]] = defaultdict(lambda: defaultdict(dict))
    for line in raw.read_text().splitlines():
        row = json.loads(line)
        rates[row["cell"]][row["target"]][row["round"]] = row["instances_per_s"]
    rounds = sorted({r for cell in rates.values() for target in cell.values() for r in target})
    print(f"# DIMSE floors, {raw.stem.removeprefix('floor-')}: {len(rounds)} rounds, instances/s medians\n")
    print("| cell | " + " | ".join(TARGETS) + " | " + " | ".join(title for _, _, title in RATIOS) + " |")
    print("|---" * (1 + len(TARGETS) + len(RATIOS)) + "|")
    for cell in CELLS:
        floor = {"storescu": "bridge-floor", "HTTP": "http-floor"}.get(cell.split()[0], "retrieve-floor")
        medians = [_median(list(rates[cell][target].values())) for target in TARGETS]
        ratios = []
        for numerator, denominator, _ in RATIOS:
            ours, theirs = rates[cell][numerator], rates[cell][floor if denominator == "floor" else denominator]
            pairs = [(ours.get(r), theirs.get(r)) for r in rounds]
            ratios.append(_median([o / t if o and t else None for o, t in pairs], digits=2))
        print(f"| {cell} | " + " | ".join(medians) + " | " + " | ".join(ratios) + " |")
    failed = sum(v is None for cell in rates.values() for target in cell.values() for v in target.values())
    if failed:
        print(f"\n{failed} measurement(s) failed (null in {raw.name}); see {raw.with_suffix('.log').name}.")


def _median(values: list[float | None], digits: int = 1) -> str:
    known = [v for v in values if v is not None]
    return f"{statistics.median(known):.{digits}f}" if known else "-"


if __name__ == "__main__":
    main(Path(sys.argv[1]))
