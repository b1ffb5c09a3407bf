"""What access control costs: QIDO and frame latency for an admin and for a filtered user, big index.

    .venv/bin/python bench/qido_scale.py sqlite:///.bench-data/index.sqlite3    # fill once (minutes)
    .venv/bin/python bench/access_control.py sqlite:///.bench-data/index.sqlite3

Starts `webpacs serve --no-bridge` on that index, stores one real CT study (so that frames exist),
creates a user restricted to ModalitiesInStudy CT or MR, and times the same requests with an admin
token and with that user's session: the difference is what the policy adds. Also times the
per-request check itself (`Index.study_visible`, what every WADO request of a filtered user runs).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

_REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(_REPO)]  # the packages first: tests/storage must not shadow storage
sys.path.append(str(_REPO / "tests"))
from conftest import start_server, stop_server  # noqa: E402 - after the sys.path set-up above
from dicomdata import multipart_body, sample_study, uids_of  # noqa: E402
from qido_http import percentile  # noqa: E402

from auth.access import AccessControl  # noqa: E402
from storage.index import Index  # noqa: E402
from storage.index.database import open_engine  # noqa: E402

if TYPE_CHECKING:
    from collections.abc import Callable

_FILTER = {"ModalitiesInStudy": ["CT", "MR"]}
_PASSWORD = "benchmark password"


def timed_pair(
    first: Callable[[], httpx.Response], second: Callable[[], httpx.Response], repeat: int
) -> tuple[tuple[float, float], tuple[float, float]]:
    """(p50 ms, p95 ms) of each of two requests, alternated so that machine noise hits both alike."""
    for _ in range(3):
        first().raise_for_status()
        second().raise_for_status()
    samples: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeat):
        for request, times in zip((first, second), samples, strict=True):
            started = time.perf_counter()
            request().raise_for_status()
            times.append((time.perf_counter() - started) * 1000)
    return (
        (percentile(samples[0], 0.5), percentile(samples[0], 0.95)),
        (percentile(samples[1], 0.5), percentile(samples[1], 0.95)),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url", help="an index filled by bench/qido_scale.py")
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        server = start_server(Path(scratch), database_url=args.url)
        try:
            admin = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.token}"}, timeout=60)
            _, parts = sample_study(modality="CT", instances=1, size=512)
            body, content_type = multipart_body(parts)
            admin.post("/dicomweb/studies", content=body, headers={"Content-Type": content_type}).raise_for_status()
            study, series, sop = uids_of(parts[0])
            username = f"bench-{int(time.time())}"
            admin.post(
                "/api/users",
                json={"username": username, "password": _PASSWORD, "role": "viewer", "study_filter": _FILTER},
            ).raise_for_status()
            login = admin.post("/api/auth/login", json={"username": username, "password": _PASSWORD})
            session_token = str(login.raise_for_status().json()["access_token"])
            user_headers = {"Authorization": f"Bearer {session_token}"}
            filtered = httpx.Client(base_url=server.url, headers=user_headers, timeout=60)

            frame = f"/dicomweb/studies/{study}/series/{series}/instances/{sop}/frames/1"
            requests = {
                "QIDO studies, StudyDate range, limit 100": (
                    "/dicomweb/studies",
                    {"StudyDate": "20100101-20201231", "limit": "100"},
                ),
                "QIDO studies of one PatientID": ("/dicomweb/studies", {"PatientID": "P00004242"}),
                "QIDO series of the stored study": (f"/dicomweb/studies/{study}/series", {}),
                "WADO-RS frame 1 (512x512 CT)": (frame, {}),
                "WADO-RS study metadata": (f"/dicomweb/studies/{study}/metadata", {}),
            }
            print(f"| request ({args.repeat} each) | admin p50 / p95 ms | filtered user p50 / p95 ms |")
            print("|---|---|---|")
            for name, (path, params) in requests.items():
                as_admin, as_user = timed_pair(
                    lambda p=path, q=params: admin.get(p, params=q),
                    lambda p=path, q=params: filtered.get(p, params=q),
                    args.repeat,
                )
                print(f"| {name} | {as_admin[0]:.2f} / {as_admin[1]:.2f} | {as_user[0]:.2f} / {as_user[1]:.2f} |")
        finally:
            stop_server(server)

    engine = open_engine(args.url)
    index = Index(engine)
    access = AccessControl.open(engine)
    policy = tuple((keyword, tuple(values)) for keyword, values in _FILTER.items())
    print()
    for name, call in (
        ("the access check alone (Index.study_visible)", lambda: index.study_visible(study, policy)),
        ("verifying a user's session JWT (AccessControl.authenticate)", lambda: access.authenticate(session_token)),
        ("verifying an API token, cached (AccessControl.authenticate)", lambda: access.authenticate(server.token)),
    ):
        p50, p95 = in_process(call)
        print(f"{name}, 1000 calls: p50 {p50:.3f} ms, p95 {p95:.3f} ms")
    engine.dispose()
    return 0


def in_process(call: Callable[[], object]) -> tuple[float, float]:
    """(p50 ms, p95 ms) of 1000 calls after one warm-up (which fills the caches a server keeps warm)."""
    call()
    samples = []
    for _ in range(1000):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples), percentile(samples, 0.95)


if __name__ == "__main__":
    sys.exit(main())
