"""STOW-RS and WADO-RS throughput of the scale-out profile (PostgreSQL + S3, 1/2/4 workers) and the embedded default.

    .venv/bin/python bench/scale_out.py --instances 400 --rounds 3 --clients 8 --workers 1 2 4

For each configuration a fresh archive: the embedded default (SQLite + folder, one worker), then
`webpacs serve --workers N` on a new PostgreSQL database (127.0.0.1:5432) and a bucket of a
moto_server started here (S3 over HTTP on the same machine). Each round, `--clients` threads store
a fresh set of instances (one per STOW request, as modalities and the bridge send; each client its
own studies), retrieve each one (WADO-RS, transfer-syntax=*, checked byte for byte) and ask for the
metadata of its series (20 instances: work of the worker alone, no blob read). The CPU seconds of
the server processes, PostgreSQL, moto_server, the benchmark's clients and the whole machine
(/proc/stat) during each phase say where the time goes. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator

    import httpx

_REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(_REPO)]  # the packages first: tests/storage must not shadow storage
sys.path.append(str(_REPO / "tests"))
from conftest import LiveServer, start_server, stop_server  # noqa: E402 - after the sys.path set-up above
from dicomdata import Patient, SeriesSpec, StudySpec, build_instances, multipart_body, part10, uids_of  # noqa: E402
from postgres_databases import create_postgres_database, drop_postgres_database  # noqa: E402
from s3_server import S3Server, start_s3_server  # noqa: E402

AS_STORED = 'multipart/related; type="application/dicom"; transfer-syntax=*'
_TICKS = os.sysconf("SC_CLK_TCK")
MACHINE = "machine"


def make_instances(count: int, size: int) -> list[bytes]:
    """`count` CT instances of size x size 16-bit pixels, 20 per series, 2 series per study."""
    instances: list[bytes] = []
    while len(instances) < count:
        spec = StudySpec(
            Patient(f"BENCH^{len(instances)}", f"B{len(instances)}"),
            "20240101",
            "A1",
            (SeriesSpec("CT", 20, number=1, size=size), SeriesSpec("CT", 20, number=2, size=size)),
        )
        instances += [part10(ds) for ds in build_instances(spec)]
    return instances[:count]


def cpu_seconds(pids: dict[str, list[int]]) -> dict[str, float]:
    """utime + stime of each component's processes (and their reaped children)."""
    used: dict[str, float] = {}
    for name, members in pids.items():
        total = 0
        for pid in members:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
        used[name] = total / _TICKS
    return used


def processes(server: LiveServer, s3: S3Server | None) -> dict[str, list[int]]:
    """The server (serve + workers), PostgreSQL (every postgres process) and moto_server."""
    by_parent: dict[int, list[int]] = {}
    names: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        pid = int(entry.name)
        names[pid] = stat[stat.index("(") + 1 : stat.rindex(")")]
        by_parent.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(pid)
    server_pids = [server.process.pid, *by_parent.get(server.process.pid, [])]
    found = {
        "webpacs": server_pids,
        "postgres": [pid for pid, name in names.items() if name == "postgres"],
    }
    if s3 is not None:
        found["moto_server"] = [s3.process.pid]
    return found


def timed(
    server: LiveServer, s3: S3Server | None, clients: int, work: list[bytes], run: object
) -> tuple[float, dict[str, float]]:
    before = cpu_seconds(processes(server, s3))
    machine_before, clients_before = machine_busy_seconds(), sum(os.times()[:2])
    started = time.perf_counter()
    barrier = threading.Barrier(clients)

    def worker(n: int) -> None:
        barrier.wait()
        with server.client() as http:
            share = -(-len(work) // clients)  # each client its own studies, as separate modalities send
            for data in work[n * share : (n + 1) * share]:
                run(http, data)  # type: ignore[operator]

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(worker, range(clients)))
    seconds = time.perf_counter() - started
    after = cpu_seconds(processes(server, s3))
    used = {name: after[name] - before.get(name, 0.0) for name in after}
    used["bench clients"] = sum(os.times()[:2]) - clients_before
    used[MACHINE] = machine_busy_seconds() - machine_before
    return seconds, used


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent not idle (/proc/stat), every process of every user."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / _TICKS


def stow(http: httpx.Client, data: bytes) -> None:
    body, content_type = multipart_body([data])
    response = http.post("/dicomweb/studies", content=body, headers={"Content-Type": content_type})
    if response.status_code != 200:
        raise RuntimeError(f"STOW failed: {response.status_code} {response.text[:300]}")


def retrieve(http: httpx.Client, data: bytes) -> None:
    study, series, sop = uids_of(data)
    response = http.get(f"/dicomweb/studies/{study}/series/{series}/instances/{sop}", headers={"Accept": AS_STORED})
    if response.status_code != 200 or data not in response.content:
        raise RuntimeError(f"retrieve failed: {response.status_code}")


def series_metadata(http: httpx.Client, data: bytes) -> None:
    """The metadata of the instance's series (20 instances): work done by the worker alone, no blob read."""
    study, series, _ = uids_of(data)
    response = http.get(f"/dicomweb/studies/{study}/series/{series}/metadata")
    if response.status_code != 200 or len(response.json()) != 20:
        raise RuntimeError(f"metadata failed: {response.status_code}")


PHASES = (("STOW-RS", stow), ("WADO-RS", retrieve), ("series metadata", series_metadata))


def wait_for_workers(server: LiveServer, workers: int) -> None:
    """Until every worker has said "Application startup complete." (uvicorn), then a few requests."""
    deadline = time.monotonic() + 120
    log = server.data_dir / "server.log"
    while log.read_bytes().count(b"Application startup complete.") < workers:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{workers} workers did not start: {log.read_text()[-2000:]}")
        time.sleep(0.1)
    for _ in range(20):  # connections to the database and the store, on each worker
        with server.client() as http:
            http.get("/dicomweb/studies", params={"limit": 1})


def bench(label: str, server: LiveServer, s3: S3Server | None, rounds: list[list[bytes]], clients: int) -> None:
    """Each round stores a fresh set of instances, then retrieves it; prints the best and median round."""
    results: dict[str, list[tuple[float, float, dict[str, float]]]] = {phase: [] for phase, _ in PHASES}
    count = 0
    for instances in rounds:
        count = len(instances)
        megabytes = sum(len(data) for data in instances) / 1e6
        for phase, run in PHASES:
            seconds, cpu = timed(server, s3, clients, instances, run)
            results[phase].append((len(instances) / seconds, megabytes / seconds, cpu))
    for phase, measured in results.items():
        rates = sorted(rate for rate, _, _ in measured)
        best_rate, best_megabytes, cpu = max(measured, key=lambda result: result[0])
        machine = cpu.pop(MACHINE)
        per_instance = " / ".join(f"{name} {1000 * value / count:.1f}" for name, value in cpu.items())
        ours, everything = (sum(cpu.values()) * best_rate / count, machine * best_rate / count)
        print(
            f"| {label} | {phase} | {best_rate:.0f} ({rates[len(rates) // 2]:.0f}) "
            f"| {'-' if phase == 'series metadata' else f'{best_megabytes:.1f}'} "
            f"| {per_instance} | {ours:.2f} of {everything:.2f} |",
            flush=True,
        )


def sets(args: argparse.Namespace) -> Iterator[list[bytes]]:
    """A fresh set of instances (new UIDs) per round, made when the round starts."""
    return (make_instances(args.instances, args.size) for _ in range(args.rounds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", type=int, default=400)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--size", type=int, default=256, help="image rows = columns (256: 128 KiB instances)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--rounds", type=int, default=3, help="fresh instance sets per configuration")
    args = parser.parse_args()
    size = len(make_instances(1, args.size)[0]) // 1024
    print(
        f"{args.instances} instances of {size} KiB per round, {args.rounds} rounds, {args.clients} clients, "
        f"{os.cpu_count()} CPUs, load average {', '.join(f'{value:.1f}' for value in os.getloadavg())}\n"
    )
    print(
        "| configuration | phase | requests/s best (median) | MB/s best | CPU ms per request (best round) "
        "| cores busy: this benchmark of the whole machine |"
    )
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        (root / "embedded").mkdir()
        server = start_server(root / "embedded")
        try:
            wait_for_workers(server, 1)
            bench("embedded (SQLite + folder), 1 worker", server, None, sets(args), args.clients)
        finally:
            stop_server(server)
        s3 = start_s3_server(root / "moto.log")
        try:
            for workers in args.workers:
                database_url = create_postgres_database()
                bucket = f"bench-{workers}"
                s3.client().create_bucket(Bucket=bucket)
                data_dir = root / f"scale-out-{workers}"
                data_dir.mkdir()
                environment = {**s3.environment(), "WEBPACS_BLOB_URL": f"s3://{bucket}/blobs"}
                server = start_server(
                    data_dir, database_url=database_url, extra=("--workers", str(workers)), env=environment
                )
                try:
                    wait_for_workers(server, workers)
                    label = f"PostgreSQL + S3 (moto), {workers} worker(s)"
                    bench(label, server, s3, sets(args), args.clients)
                finally:
                    stop_server(server)
                    drop_postgres_database(database_url)
        finally:
            s3.stop()


if __name__ == "__main__":
    main()
