"""Time to first image in OHIF (headless Debian chromium): a 1,000-instance series vs a 1-instance study.

    .venv/bin/python bench/viewer.py                 # 1,000 x 256x256 CT slices, 5 runs each
    .venv/bin/python bench/viewer.py --size 512 --runs 3

Starts `webpacs serve --no-bridge` on a fresh archive, stores both studies by STOW-RS, then opens
each in a fresh browser profile (empty cache) at /viewer/viewer?StudyInstanceUIDs=... and records,
in the page, the time from navigation start to the first animation frame whose viewport canvas
shows the image (its pixels read back, many grey levels). OHIF's own start-up is in both figures;
the difference is what the series' size costs: its metadata and the choice of the first frame.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

_REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(_REPO)]  # the packages first: tests/storage must not shadow storage
sys.path += [str(_REPO / "tests"), str(_REPO / "tests" / "ui")]
from conftest import start_server, stop_server  # noqa: E402 - after the sys.path set-up above
from dicomdata import Patient, SeriesSpec, StudySpec, iter_instances, part10  # noqa: E402
from playwright.sync_api import sync_playwright  # noqa: E402
from ui_helpers import CANVAS_STATS, new_context, store  # noqa: E402

if TYPE_CHECKING:
    import httpx

# Set in the page before OHIF starts: poll every animation frame until the canvas shows an image.
FIRST_IMAGE = """
window.__firstImage = null;
(function watch() {
  const stats = window.__canvasStats && window.__canvasStats();
  if (stats && stats.distinct > 10) { window.__firstImage = performance.now(); return; }
  requestAnimationFrame(watch);
})();
"""


def study(name: str, instances: int, size: int) -> StudySpec:
    return StudySpec(Patient(name, name), "20240101", name[:16], (SeriesSpec("CT", instances, size=size),))


def seed(server_client: httpx.Client, spec: StudySpec) -> float:
    started = time.perf_counter()
    batch: list[bytes] = []
    for dataset in iter_instances(spec):
        batch.append(part10(dataset))
        if len(batch) == 50:
            store(server_client, batch)
            batch = []
    if batch:
        store(server_client, batch)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", type=int, default=1000, help="instances in the big series")
    parser.add_argument("--size", type=int, default=256, help="rows = columns of each slice")
    parser.add_argument("--runs", type=int, default=5, help="fresh-profile openings of each study")
    args = parser.parse_args()
    big = study("BENCH^BIG", args.instances, args.size)
    small = study("BENCH^SMALL", 1, args.size)
    with tempfile.TemporaryDirectory(prefix="webpacs-viewer-bench-") as folder:
        server = start_server(Path(folder))
        try:
            with server.client() as client:
                seconds = seed(client, big)
                seed(client, small)
            print(f"stored {args.instances} x {args.size}x{args.size} in {seconds:.1f} s", file=sys.stderr)
            results = measure(
                server.url, server.token, {"1 instance": small, f"{args.instances} instances": big}, args.runs
            )
        finally:
            stop_server(server)
    print(f"| study ({args.size}x{args.size} CT) | runs | first image, median ms | min | max |")
    print("|---|---|---|---|---|")
    for label, samples in results.items():
        print(
            f"| {label} | {len(samples)} | {statistics.median(samples):.0f} | {min(samples):.0f} | {max(samples):.0f} |"
        )
    small_median, big_median = (statistics.median(samples) for samples in results.values())
    print(f"\n{args.instances}-instance series minus 1-instance study: {big_median - small_median:+.0f} ms (median)")
    return 0


def measure(url: str, token: str, studies: dict[str, StudySpec], runs: int) -> dict[str, list[float]]:
    """Milliseconds from navigation start to the first image, per study, `runs` fresh profiles each."""
    results: dict[str, list[float]] = {label: [] for label in studies}
    session = f"window.localStorage.setItem('webpacs.session', JSON.stringify({{access_token: '{token}'}}));"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium", args=["--headless=new", "--no-sandbox", "--enable-unsafe-swiftshader"]
        )
        for run in range(runs + 1):  # the first round warms the server and the disk cache; not counted
            for label, spec in studies.items():
                context = new_context(browser)
                context.add_init_script(session)
                context.add_init_script(CANVAS_STATS + FIRST_IMAGE)
                page = context.new_page()
                page.goto(f"{url}/viewer/viewer?StudyInstanceUIDs={spec.study_uid}")
                elapsed = page.wait_for_function("() => window.__firstImage", timeout=120_000).json_value()
                if run:
                    results[label].append(float(elapsed))
                context.close()
        browser.close()
    return results


if __name__ == "__main__":
    sys.exit(main())
