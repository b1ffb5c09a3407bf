"""QIDO-RS and series metadata over real HTTP on a big index (what a client sees, auth included).

    .venv/bin/python bench/qido_scale.py sqlite:////tmp/big.sqlite3      # fill once (minutes)
    .venv/bin/python bench/qido_http.py sqlite:////tmp/big.sqlite3       # then time it over HTTP

Starts `webpacs serve --no-bridge` on that index (an empty blob folder: only the index is read),
picks sample values from the index itself, and prints p50 / p95 per query as a markdown table.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import create_engine, text

_REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(_REPO)]  # the packages first: tests/storage must not shadow storage
sys.path.append(str(_REPO / "tests"))
from conftest import start_server, stop_server  # noqa: E402 - after the sys.path set-up above

if TYPE_CHECKING:
    from collections.abc import Callable

    import httpx


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def timed(client: httpx.Client, make_url: Callable[[int], str], repeat: int) -> tuple[float, float, float]:
    """(p50 ms, p95 ms, mean result count) over `repeat` requests after two warm-ups."""
    for attempt in range(2):
        client.get(make_url(attempt)).raise_for_status()
    samples, counts = [], []
    for attempt in range(repeat):
        started = time.perf_counter()
        response = client.get(make_url(attempt))
        body = response.json()
        samples.append((time.perf_counter() - started) * 1000)
        response.raise_for_status()
        counts.append(len(body))
    return percentile(samples, 0.5), percentile(samples, 0.95), sum(counts) / len(counts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url", help="an index filled by bench/qido_scale.py")
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()
    engine = create_engine(args.url)
    with engine.connect() as connection:
        patients = [row[0] for row in connection.execute(text("SELECT patient_id FROM study ORDER BY id LIMIT 2000"))]
        studies = connection.execute(text("SELECT count(*) FROM study")).scalar_one()
        instances = connection.execute(text("SELECT count(*) FROM instance")).scalar_one()
        big_series = connection.execute(
            text(
                "SELECT s.series_instance_uid, st.study_instance_uid, s.num_instances FROM series s "
                "JOIN study st ON st.id = s.study_id ORDER BY s.num_instances DESC LIMIT 1"
            )
        ).one()
    engine.dispose()
    rng = random.Random(7)
    rng.shuffle(patients)
    queries: dict[str, Callable[[int], str]] = {
        "PatientID": lambda i: f"/dicomweb/studies?PatientID={patients[i % len(patients)]}",
        "PatientName prefix (SMITH*)": lambda _: "/dicomweb/studies?PatientName=SMITH*&limit=100",
        "StudyDate range, limit=100": lambda i: (
            f"/dicomweb/studies?StudyDate={2019 + i % 5}0101-{2019 + i % 5}1231&limit=100"
        ),
        "ModalitiesInStudy=MR, limit=100": lambda _: "/dicomweb/studies?ModalitiesInStudy=MR&limit=100",
        "deep offset (offset=50000, limit=100)": lambda _: "/dicomweb/studies?offset=50000&limit=100",
        f"series metadata ({big_series.num_instances} instances)": lambda _: (
            f"/dicomweb/studies/{big_series.study_instance_uid}/series/{big_series.series_instance_uid}/metadata"
        ),
    }
    with tempfile.TemporaryDirectory() as scratch:
        server = start_server(Path(scratch), database_url=args.url)
        try:
            with server.client() as client:
                results = {name: timed(client, make_url, args.repeat) for name, make_url in queries.items()}
        finally:
            stop_server(server)
    print(f"QIDO-RS over HTTP, {studies:,} studies / {instances:,} instances, {args.url.split(':')[0]}")
    print()
    print("| query | p50 ms | p95 ms | results |")
    print("|---|---|---|---|")
    for name, (p50, p95, count) in results.items():
        print(f"| {name} | {p50:.1f} | {p95:.1f} | {count:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
