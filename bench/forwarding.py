"""Forwarding benchmark (issue #9): delivery speed by C-STORE and STOW-RS, rule match delay, queue round trip.

    .venv/bin/python bench/forwarding.py [--instances 100] [--runs 3] [--matches 20] [--cycles 200]

Starts `webpacs serve --no-bridge` (embedded SQLite + folder; the rule engine every second), a
`webpacs-bridge` claiming jobs every 0.2 s, DCMTK storescp, and a second webpacs server as STOW-RS
target, all on 127.0.0.1 in a temporary folder, then measures:
  - a manual send of a study of `--instances` synthetic 512x512 16-bit CT instances (about 0.5 MB,
    Explicit VR Little Endian) to storescp by C-STORE, and to the second server by STOW-RS: from
    the POST /api/studies/{study}/send to the job being done, median of `--runs` -> instances/s;
    and, for comparison, a C-MOVE of the same study to the same storescp (DCMTK movescu);
  - rule match delay: a `stored` rule; from a one-instance STOW-RS answered to its job being listed
    (bounded below by WEBPACS_FORWARD_INTERVAL_SECONDS), p50 / p95 of `--matches`;
  - the queue's own cost: claim + result of a job through the API, p50 / p95 of `--cycles`.
Every wait has a timeout.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

_REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(_REPO)]  # the packages first: tests/storage must not shadow storage
sys.path.append(str(_REPO / "tests"))
sys.path.append(str(_REPO / "tests" / "dimse_bridge"))
from conftest import free_port, start_server, stop_server  # noqa: E402
from dicomdata import multipart_body, sample_study  # noqa: E402
from dimse import make_instances  # noqa: E402  (bench/dimse.py: the same instances as the DIMSE figures)
from dimse_helpers import start_bridge, stop, wait_for_port  # noqa: E402
from pydicom.uid import generate_uid  # noqa: E402

ENV = {"WEBPACS_FORWARD_INTERVAL_SECONDS": "1", "WEBPACS_FORWARD_BACKOFF": "1,1,1"}


def wait_for(probe: Any, what: str, timeout: float = 300) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := probe():
            return value
        time.sleep(0.02)
    raise SystemExit(f"timed out waiting for {what}")


def percentiles(seconds: list[float]) -> str:
    ordered = sorted(seconds)
    p95 = ordered[max(0, int(len(ordered) * 0.95) - 1)]
    return f"{statistics.median(ordered) * 1000:.1f} / {p95 * 1000:.1f}"


def stow(client: Any, parts: list[bytes]) -> None:
    body, content_type = multipart_body(parts)
    response = client.post("/dicomweb/studies", content=body, headers={"Content-Type": content_type})
    if response.status_code != 200:
        raise SystemExit(f"STOW-RS failed: {response.status_code} {response.text[:300]}")


def send_and_wait(client: Any, study: str, destination: dict[str, str]) -> float:
    start = time.perf_counter()
    job = client.post(f"/api/studies/{study}/send", json=destination).json()

    def finished() -> dict[str, Any] | None:
        current: dict[str, Any] = client.get(f"/api/forwarding-jobs/{job['id']}").json()
        return current if current["state"] in ("done", "failed") else None

    done = wait_for(finished, f"job {job['id']}")
    if done["state"] != "done":
        raise SystemExit(f"job {job['id']} failed: {done['last_error']}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--matches", type=int, default=20)
    parser.add_argument("--cycles", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="webpacs-bench-forward-") as scratch:
        root = Path(scratch)
        (root / "a").mkdir()
        (root / "b").mkdir()
        archive = start_server(root / "a", env=ENV)
        peer = start_server(root / "b")
        bridge = start_bridge(archive, root, "--forward-poll", "0.2", "--accept-unregistered")
        scp_port = free_port()
        log = root / "storescp.log"
        storescp = subprocess.Popen(
            ["storescp", "-aet", "STORESCP", "--ignore", str(scp_port)], stdout=log.open("ab"), stderr=subprocess.STDOUT
        )
        try:
            wait_for_port(scp_port, storescp, log)
            with archive.client() as client:
                client.post("/api/dicom-nodes", json={"ae_title": "STORESCP", "host": "127.0.0.1", "port": scp_port})
                study = generate_uid()
                paths = make_instances(root / "study", args.instances, study=study, patient="FWD")
                stow(client, [path.read_bytes() for path in paths])
                rows = []
                for name, destination in (
                    ("C-STORE to DCMTK storescp", {"ae_title": "STORESCP"}),
                    (
                        "STOW-RS to a second webpacs",
                        {"dicomweb_url": f"{peer.url}/dicomweb", "dicomweb_token": peer.token},
                    ),
                ):
                    times = [send_and_wait(client, study, destination) for _ in range(args.runs)]
                    rows.append((name, args.instances / statistics.median(times)))
                move = [
                    "movescu", "-aec", "WEBPACS", "-aem", "STORESCP", "-S", "-k", "QueryRetrieveLevel=STUDY",
                    "-k", f"StudyInstanceUID={study}", "127.0.0.1", str(bridge.port),
                ]  # fmt: skip
                times = []
                for _ in range(args.runs):
                    start = time.perf_counter()
                    subprocess.run(move, check=True, capture_output=True, timeout=300)
                    times.append(time.perf_counter() - start)
                rows.append(
                    (
                        "C-MOVE by movescu to the same storescp, for comparison",
                        args.instances / statistics.median(times),
                    )
                )
                for name, rate in rows:
                    print(f"| send a {args.instances}-instance study: {name} (inst/s) | {rate:.1f} |")

                stop(bridge.process)  # from here the test plays the bridge: no delivery, no claims racing
                client.post("/api/forwarding-rules", json={"name": "all", "trigger": "stored", "ae_title": "STORESCP"})
                delays = []
                for _ in range(args.matches):
                    spec, parts = sample_study()
                    stow(client, parts)
                    start = time.perf_counter()
                    wait_for(
                        lambda s=spec: client.get("/api/forwarding-jobs", params={"study_uid": s.study_uid}).json(),
                        "a match",
                    )
                    delays.append(time.perf_counter() - start)
                print(f"| rule match delay, STOW-RS answered -> job listed, p50 / p95 (ms) | {percentiles(delays)} |")

                service = client.post("/api/tokens", json={"name": "bench-bridge", "role": "service"}).json()["token"]
                headers = {"Authorization": f"Bearer {service}"}
                cycles = []
                for _ in range(args.cycles):
                    client.post(f"/api/studies/{study}/send", json={"ae_title": "STORESCP"})
                    start = time.perf_counter()
                    [job] = client.post("/api/forwarding-jobs/claim", json={"limit": 1}, headers=headers).json()
                    body = {"lease": job["lease"], "success": True, "instances_sent": 1, "instances_total": 1}
                    client.post(f"/api/forwarding-jobs/{job['id']}/result", json=body, headers=headers)
                    cycles.append(time.perf_counter() - start)
                print(f"| queue: claim + result through the API, p50 / p95 (ms) | {percentiles(cycles)} |")
        finally:
            stop(storescp)
            if bridge.process.poll() is None:
                stop(bridge.process)
            stop_server(peer)
            stop_server(archive)


if __name__ == "__main__":
    main()
