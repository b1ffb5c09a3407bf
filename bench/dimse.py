"""DIMSE bridge benchmark: C-ECHO, C-STORE (storescu x1 and x4), C-FIND, C-MOVE and C-GET.

    .venv/bin/python bench/dimse.py [--study 100] [--store4 200] [--find-studies 1000] [--json out.json]
    .venv/bin/python bench/dimse.py --index .bench-data/index.sqlite3   # C-FIND at 100,000 studies

Starts its own `webpacs serve --no-bridge` on a fresh embedded archive in a temporary folder and a
`webpacs-bridge` in front of it, both on 127.0.0.1, then measures:
  - C-ECHO latency, a new association each time and many on one association (p50 / p95);
  - C-STORE instances/s with DCMTK storescu, one association (the 100-instance study used below) and
    four storescu processes in parallel;
  - C-FIND STUDY-level latency by PatientID on one association, after loading `--find-studies`
    small studies through STOW-RS, or on a copy of an index `bench/qido_scale.py` filled (`--index`,
    PatientIDs drawn from it at random; the original file is never written);
  - C-MOVE (to a pynetdicom storage SCP registered as BENCHSCP) and C-GET of the 100-instance study,
    three runs each, median -> instances/s.
Instances are synthetic 512x512 16-bit CT images in Explicit VR Little Endian (about 0.5 MB).
Every loop is bounded in count; every wait has a timeout. Our side disables Nagle (storescu via
TCP_NODELAY=1, pynetdicom by socket option) so only the bridge's latency is measured.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]  # generated at import
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)
from rich.console import Console

from dimse_bridge.server import set_tcp_nodelay

REPO = Path(__file__).resolve().parents[1]
console = Console(stderr=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until(check: Any, what: str, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise SystemExit(f"{what} did not become ready within {timeout:.0f} s")


def summary(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p95_ms": round(ordered[max(0, int(len(ordered) * 0.95) - 1)] * 1000, 2),
        "n": len(ordered),
    }


def make_instances(directory: Path, count: int, *, study: str, patient: str, size: int = 512) -> list[Path]:
    template = dcmread(str(get_testdata_file("CT_small.dcm")))
    series = generate_uid()
    directory.mkdir(parents=True, exist_ok=True)
    y, x = np.mgrid[0:size, 0:size]
    paths = []
    for n in range(count):
        ds = copy.deepcopy(template)
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = study, series, generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.PatientID, ds.PatientName, ds.InstanceNumber = patient, f"BENCH^{patient}", n + 1
        pixels = (((x - size / 2) ** 2 + (y - size / 2) ** 2) < (size / 3 + n) ** 2) * 1000 + (x + n) % 200
        ds.Rows, ds.Columns = size, size
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelData = pixels.astype(np.uint16).tobytes()
        path = directory / f"{n:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


class Stack:
    """The server and the bridge, in a temporary folder; stopped on exit."""

    def __init__(self, root: Path, index: Path | None = None) -> None:
        self.root = root
        env = {**os.environ, "WEBPACS_DATA_DIR": str(root / "var")}
        if index is not None:
            # The server migrates and writes the copy, never the original.
            (root / "var").mkdir(parents=True, exist_ok=True)
            shutil.copyfile(index, root / "var" / "index.sqlite3")
        self.token = (
            subprocess.run(
                [str(REPO / ".venv/bin/webpacs"), "token", "create", "--name", "bench", "--role", "admin"],
                capture_output=True,
                text=True,
                check=True,
                env=env,
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        self.http_port, self.port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.server = subprocess.Popen(
            [str(REPO / ".venv/bin/webpacs"), "serve", "--no-bridge", "--port", str(self.http_port)],
            env=env,
            stdout=(root / "server.log").open("ab"),
            stderr=subprocess.STDOUT,
        )
        wait_until(self._healthy, "the server")
        self.bridge = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dimse_bridge",
                "--server",
                self.url,
                "--port",
                str(self.port),
                "--accept-unregistered",
                "--log-level",
                "WARNING",
            ],
            env={**os.environ, "WEBPACS_BRIDGE_TOKEN": self.token},
            stdout=(root / "bridge.log").open("ab"),
            stderr=subprocess.STDOUT,
        )
        wait_until(lambda: echo(self.port), "the bridge")

    def _healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=120)

    def stop(self) -> None:
        for process in (self.bridge, self.server):
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()


def scu(title: str = "BENCHSCU") -> AE:
    ae = AE(title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 120
    return ae


def associate(ae: AE, port: int, **kwargs: Any) -> Any:
    handlers = [(evt.EVT_CONN_OPEN, set_tcp_nodelay), *kwargs.pop("evt_handlers", [])]
    assoc = ae.associate("127.0.0.1", port, ae_title="WEBPACS", evt_handlers=handlers, **kwargs)
    if not assoc.is_established:
        raise SystemExit("the bridge refused the association")
    return assoc


def echo(port: int) -> bool:
    ae = scu()
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title="WEBPACS")
    if not assoc.is_established:
        return False
    ok = assoc.send_c_echo().Status == 0
    assoc.release()
    return bool(ok)


def phase_echo(stack: Stack, reps: int) -> dict[str, Any]:
    ae = scu()
    ae.add_requested_context(Verification)
    new_each = []
    for _ in range(reps):
        started = time.perf_counter()
        assoc = associate(ae, stack.port)
        assoc.send_c_echo()
        assoc.release()
        new_each.append(time.perf_counter() - started)
    assoc = associate(ae, stack.port)
    same = []
    for _ in range(reps):
        started = time.perf_counter()
        assoc.send_c_echo()
        same.append(time.perf_counter() - started)
    assoc.release()
    return {"new_association": summary(new_each), "same_association": summary(same)}


def storescu(port: int, files: list[Path]) -> None:
    result = subprocess.run(
        ["storescu", "-aet", "BENCHSCU", "-aec", "WEBPACS", "127.0.0.1", str(port), *map(str, files)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, "TCP_NODELAY": "1"},
    )
    if result.returncode != 0:
        raise SystemExit(f"storescu failed: {result.stderr[-2000:]}")


def phase_store(stack: Stack, one: list[Path], four: list[Path]) -> dict[str, Any]:
    results = {}
    for name, files, processes in (("storescu_x1", one, 1), ("storescu_x4", four, 4)):
        size = sum(p.stat().st_size for p in files)
        started = time.perf_counter()
        with ThreadPoolExecutor(processes) as pool:
            list(pool.map(lambda chunk: storescu(stack.port, chunk), [files[n::processes] for n in range(processes)]))
        elapsed = time.perf_counter() - started
        results[name] = {
            "instances": len(files),
            "seconds": round(elapsed, 2),
            "instances_per_s": round(len(files) / elapsed, 1),
            "MB_per_s": round(size / elapsed / 1e6, 1),
        }
    return results


def load_small_studies(stack: Stack, count: int, directory: Path) -> list[str]:
    """`count` one-instance 8x8 studies through STOW-RS, 50 per request; returns their PatientIDs."""
    template = dcmread(str(get_testdata_file("CT_small.dcm")))
    patients = []
    with stack.api() as client:
        for start in range(0, count, 50):
            parts = []
            for n in range(start, min(start + 50, count)):
                ds = copy.deepcopy(template)
                ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = (
                    generate_uid(),
                    generate_uid(),
                    generate_uid(),
                )
                ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
                ds.PatientID = f"FIND{n:06d}"
                ds.Rows = ds.Columns = 8
                ds.PixelData = bytes(128)
                path = directory / "small.dcm"
                ds.save_as(path, enforce_file_format=True)
                parts.append(path.read_bytes())
                patients.append(ds.PatientID)
            boundary = "benchboundary"
            body = (
                b"".join(
                    f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + p + b"\r\n" for p in parts
                )
                + f"--{boundary}--\r\n".encode()
            )
            response = client.post(
                "/dicomweb/studies",
                content=body,
                headers={"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'},
            )
            if response.status_code != 200:
                raise SystemExit(f"STOW-RS load failed: {response.status_code} {response.text[:300]}")
    return patients


def indexed_patients(index: Path, count: int) -> tuple[list[str], int]:
    """`count` PatientIDs drawn at random from a filled index, and its number of studies."""
    with sqlite3.connect(f"file:{index}?mode=ro", uri=True) as db:
        studies = int(db.execute("SELECT count(*) FROM study").fetchone()[0])
        rows = db.execute("SELECT patient_id FROM study ORDER BY random() LIMIT ?", (count,)).fetchall()
    patients = [str(row[0]) for row in rows]
    random.shuffle(patients)
    return patients, studies


def phase_find(stack: Stack, patients: list[str], reps: int, studies: int) -> dict[str, Any]:
    ae = scu()
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = associate(ae, stack.port)
    latencies, wrong = [], 0
    for n in range(reps):
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.PatientID = patients[(n * 7919) % len(patients)]
        query.StudyInstanceUID = ""
        query.PatientName = ""
        query.StudyDate = ""
        query.ModalitiesInStudy = ""
        started = time.perf_counter()
        statuses = [s.Status for s, _ in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind)]
        latencies.append(time.perf_counter() - started)
        # At least one match, all Pending, then Success (a random patient of a filled index may have several).
        wrong += len(statuses) < 2 or statuses[-1] != 0x0000 or any(s != 0xFF00 for s in statuses[:-1])
    assoc.release()
    return {"study_by_patient_id": summary(latencies), "wrong_answers": wrong, "studies_in_archive": studies}


def move_destination(received: list[int]) -> tuple[AE, int]:
    ae = AE("BENCHSCP")
    ae.add_supported_context(CTImageStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])

    def on_store(event: Any) -> int:
        received[0] += 1
        return 0x0000

    port = free_port()
    ae.start_server(
        ("127.0.0.1", port),
        block=False,
        evt_handlers=[(evt.EVT_C_STORE, on_store), (evt.EVT_CONN_OPEN, set_tcp_nodelay)],
    )
    return ae, port


def phase_retrieve(stack: Stack, study: str, count: int, reps: int) -> dict[str, Any]:
    received = [0]
    destination, port = move_destination(received)
    with stack.api() as client:
        client.delete("/api/dicom-nodes/BENCHSCP")
        response = client.post("/api/dicom-nodes", json={"ae_title": "BENCHSCP", "host": "127.0.0.1", "port": port})
        if response.status_code != 201:
            raise SystemExit(f"cannot register BENCHSCP: {response.status_code} {response.text[:300]}")
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study
    results: dict[str, Any] = {}
    try:
        times = []
        for _ in range(reps):
            received[0] = 0
            ae = scu()
            ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
            assoc = associate(ae, stack.port)
            started = time.perf_counter()
            final = [s for s, _ in assoc.send_c_move(query, "BENCHSCP", StudyRootQueryRetrieveInformationModelMove)][-1]
            times.append(time.perf_counter() - started)
            assoc.release()
            if final.Status != 0 or received[0] != count:
                raise SystemExit(f"C-MOVE: status 0x{final.Status:04X}, {received[0]} of {count} received")
        results["c_move"] = {
            "instances": count,
            "median_s": round(statistics.median(times), 2),
            "instances_per_s": round(count / statistics.median(times), 1),
        }
    finally:
        destination.shutdown()
    times = []
    for _ in range(reps):
        got = [0]

        def on_store(event: Any, got: list[int] = got) -> int:
            got[0] += 1
            return 0x0000

        ae = scu()
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
        ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        assoc = associate(
            ae,
            stack.port,
            ext_neg=[build_role(CTImageStorage, scp_role=True)],
            evt_handlers=[(evt.EVT_C_STORE, on_store)],
        )
        started = time.perf_counter()
        final = [s for s, _ in assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet)][-1]
        times.append(time.perf_counter() - started)
        assoc.release()
        if final.Status != 0 or got[0] != count:
            raise SystemExit(f"C-GET: status 0x{final.Status:04X}, {got[0]} of {count} received")
    results["c_get"] = {
        "instances": count,
        "median_s": round(statistics.median(times), 2),
        "instances_per_s": round(count / statistics.median(times), 1),
    }
    return results


def markdown(result: dict[str, Any]) -> str:
    echo_r, store, find, retrieve = result["echo"], result["store"], result["find"], result["retrieve"]
    rows = [
        (
            "C-ECHO p50, new association / same association (ms)",
            f"{echo_r['new_association']['p50_ms']} / {echo_r['same_association']['p50_ms']}",
        ),
        (
            "C-STORE storescu x1 (inst/s, MB/s)",
            f"{store['storescu_x1']['instances_per_s']} ({store['storescu_x1']['MB_per_s']} MB/s)",
        ),
        (
            "C-STORE storescu x4 (inst/s, MB/s)",
            f"{store['storescu_x4']['instances_per_s']} ({store['storescu_x4']['MB_per_s']} MB/s)",
        ),
        (
            f"C-FIND STUDY by PatientID, {find['studies_in_archive']} studies: p50 / p95 (ms)",
            f"{find['study_by_patient_id']['p50_ms']} / {find['study_by_patient_id']['p95_ms']}",
        ),
        (
            f"C-MOVE {retrieve['c_move']['instances']}-instance study (inst/s)",
            str(retrieve["c_move"]["instances_per_s"]),
        ),
        (f"C-GET {retrieve['c_get']['instances']}-instance study (inst/s)", str(retrieve["c_get"]["instances_per_s"])),
    ]
    return "\n".join(["| metric | webpacs bridge |", "|---|---|", *[f"| {a} | {b} |" for a, b in rows]])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", type=int, default=100, help="instances of the study stored x1 and retrieved")
    parser.add_argument("--store4", type=int, default=200, help="instances stored by 4 parallel storescu")
    parser.add_argument("--find-studies", type=int, default=1000, help="small studies loaded before C-FIND")
    parser.add_argument("--reps", type=int, default=50, help="C-ECHO and C-FIND repetitions")
    parser.add_argument(
        "--index",
        type=Path,
        help="start on a copy of this SQLite index filled by bench/qido_scale.py (C-FIND at scale) "
        "instead of loading --find-studies",
    )
    parser.add_argument("--json", type=Path, help="also write the raw numbers here")
    parser.add_argument("--logs", type=Path, help="copy the server and bridge logs here at the end")
    args = parser.parse_args()
    if shutil.which("storescu") is None:
        raise SystemExit("storescu (DCMTK) is needed: apt-get install dcmtk")
    with tempfile.TemporaryDirectory(prefix="webpacs-bench-dimse-") as scratch:
        root = Path(scratch)
        console.log("generating instances")
        study = generate_uid()
        one = make_instances(root / "x1", args.study, study=study, patient="BENCH1")
        four = make_instances(root / "x4", args.store4, study=generate_uid(), patient="BENCH4")
        console.log("starting server and bridge")
        stack = Stack(root, args.index)
        try:
            result: dict[str, Any] = {"echo": phase_echo(stack, args.reps)}
            console.log("C-STORE")
            result["store"] = phase_store(stack, one, four)
            if args.index is None:
                console.log(f"loading {args.find_studies} studies for C-FIND")
                patients = load_small_studies(stack, args.find_studies, root)
                studies = len(patients) + 3
            else:
                patients, studies = indexed_patients(args.index, args.reps)
                studies += 3
            result["find"] = phase_find(stack, patients, args.reps, studies)
            console.log("C-MOVE / C-GET")
            result["retrieve"] = phase_retrieve(stack, study, args.study, 3)
        finally:
            stack.stop()
            if args.logs:
                args.logs.mkdir(parents=True, exist_ok=True)
                for log in ("server.log", "bridge.log"):
                    shutil.copy(root / log, args.logs / log)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    sys.stdout.write(markdown(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
