"""Table of a `bench/peer/dimse.sh` run: per metric, each target's median over the rounds and the
webpacs / Orthanc ratio per round (rates: webpacs / Orthanc; latencies: Orthanc / webpacs; above 1 is
webpacs ahead).

    .venv/bin/python bench/peer/dimse_table.py bench/peer/results STAMP
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

# (label, path into the phases, True for a rate / False for a latency)
METRICS: list[tuple[str, tuple[Any, ...], bool]] = [
    ("C-ECHO new association p50 (ms)", ("echo", "new_association_each", "p50_ms"), False),
    ("C-ECHO same association p50 (ms)", ("echo", "one_association", "p50_ms"), False),
    ("C-STORE pynetdicom x1 (inst/s)", ("store", "cells", 0, "instances_per_s"), True),
    ("C-STORE pynetdicom x4 (inst/s)", ("store", "cells", 1, "instances_per_s"), True),
    ("C-STORE storescu x1 (inst/s)", ("store", "cells", 2, "instances_per_s"), True),
    ("C-STORE storescu x4 (inst/s)", ("store", "cells", 3, "instances_per_s"), True),
    ("C-FIND PatientID p50 (ms)", ("find", "patient_id", "p50_ms"), False),
    ("C-FIND SMITH* p50 (ms)", ("find", "patient_name_wildcard", "p50_ms"), False),
    ("C-MOVE 50-instance study (inst/s)", ("move", "instances_per_s"), True),
    ("C-GET 50-instance study (inst/s)", ("get", "instances_per_s"), True),
]


def value(result: dict[str, Any], path: tuple[Any, ...]) -> float | None:
    node: Any = result.get("phases", {})
    for key in path:
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            return None
    return float(node) if isinstance(node, int | float) else None


def main(folder: str, stamp: str) -> None:
    runs: dict[str, dict[int, dict[str, Any]]] = {"orthanc": {}, "webpacs": {}}
    for path in Path(folder).glob(f"dimse-{stamp}-*.json"):
        target, round_number = path.stem.removeprefix(f"dimse-{stamp}-").rsplit("-", 1)
        runs.setdefault(target, {})[int(round_number)] = json.loads(path.read_text())
    rounds = sorted(set(runs["orthanc"]) & set(runs["webpacs"]))
    print(f"# DIMSE side by side, {stamp}: Orthanc and webpacs alternating, {len(rounds)} rounds\n")
    header = " | ".join(f"round {r} ratio" for r in rounds)
    print(f"| metric | Orthanc median | webpacs median | median ratio | {header} |")
    print("|---|---|---|---|" + "---|" * len(rounds))
    for label, keys, is_rate in METRICS:
        ours = [value(runs["webpacs"][r], keys) for r in rounds]
        theirs = [value(runs["orthanc"][r], keys) for r in rounds]
        ratios = [(o / t if is_rate else t / o) if o and t else None for o, t in zip(ours, theirs, strict=True)]
        known = [r for r in ratios if r is not None]
        print(
            f"| {label} | {_median(theirs)} | {_median(ours)} | "
            f"{round(statistics.median(known), 2) if known else '-'} | "
            + " | ".join("-" if r is None else f"{r:.2f}" for r in ratios)
            + " |"
        )


def _median(values: list[float | None]) -> str:
    known = [v for v in values if v is not None]
    return f"{statistics.median(known):.1f}" if known else "-"


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
