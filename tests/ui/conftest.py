"""Browser-test fixtures: a real server with the viewer installed, seeded studies, Debian's chromium.

Playwright drives /usr/bin/chromium (installed by `make system-packages`); its own browser download
is never used. WebGL in headless chromium needs SwiftShader (`--enable-unsafe-swiftshader`).
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Final, NamedTuple

import pytest
from dicomdata import Patient, SeriesSpec, StudySpec, build_instances, part10
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright
from ui_helpers import VIEWER_DIST, new_context, store

# The bridge and DCMTK helpers of the bridge's own tests (tests/dimse_bridge is not a package).
sys.path.append(str(Path(__file__).resolve().parents[1] / "dimse_bridge"))
from dimse_helpers import RunningBridge, free_port, require_dcmtk, start_bridge, stop, wait_for_port

if TYPE_CHECKING:
    from collections.abc import Iterator

    from conftest import LiveServer, ServerFactory  # tests/conftest.py

CHROMIUM: Final = Path("/usr/bin/chromium")
CHROMIUM_ARGS: Final = ["--headless=new", "--no-sandbox", "--enable-unsafe-swiftshader"]

# Assertions wait for the page up to this long: the 2 cores are shared with the server under test.
expect.set_options(timeout=20_000)


class Seeded(NamedTuple):
    """The server and the studies the UI tests find by name (30 more fill a second page)."""

    server: LiveServer
    studies: dict[str, StudySpec]


def study_of(name: str, patient_id: str, date: str, *, modality: str = "CT", instances: int = 2) -> StudySpec:
    """A small study of one series."""
    return StudySpec(
        Patient(name, patient_id, "19610203"),
        date,
        f"ACC{uuid.uuid4().hex[:8].upper()}",
        (SeriesSpec(modality, instances, size=64),),
        description=f"{modality} {name.split('^')[0].title()} study",
    )


@pytest.fixture(scope="session")
def ui_server(live_servers: ServerFactory) -> Iterator[LiveServer]:
    """A server on a fresh archive, for the browser tests (the viewer must be installed)."""
    assert (VIEWER_DIST / "index.html").is_file(), f"the OHIF viewer is not installed in {VIEWER_DIST}: run make viewer"
    server = live_servers.start("sqlite")
    yield server
    live_servers.stop(server)


@pytest.fixture(scope="session")
def seeded(ui_server: LiveServer) -> Seeded:
    """Studies for search, viewing and sharing, and 30 more so the list has a second page."""
    from datetime import date

    today = date.today().strftime("%Y%m%d")
    studies = {
        "lovelace": study_of("LOVELACE^ADA", "UI-ADA", today, modality="MR", instances=3),
        "turing": study_of("TURING^ALAN", "UI-ALAN", "20200101"),
        "hopper": study_of("HOPPER^GRACE", "UI-GRACE", "20190615"),
    }
    crowd = [study_of(f"CROWD^{number:03d}", f"UI-CROWD-{number:03d}", "20100101", instances=1) for number in range(30)]
    with ui_server.client() as client:
        for spec in [*studies.values(), *crowd]:
            store(client, [part10(ds) for ds in build_instances(spec)])
    return Seeded(ui_server, studies)


# A forwarding queue that moves within a test: the rule engine every second, short leases.
OPERATIONS_ENV: Final = {
    "WEBPACS_RECYCLE_DAYS": "7",
    "WEBPACS_FORWARD_BACKOFF": "60,60",  # a failed job waits, showing its error, while a test looks at it
    "WEBPACS_FORWARD_LEASE_SECONDS": "5",
    "WEBPACS_FORWARD_INTERVAL_SECONDS": "1",
    "WEBPACS_RETENTION_INTERVAL_SECONDS": "0",  # the retention page's dry run only: nothing deleted by schedule
}
STORESCP_AE: Final = "STORESCP"


class Operations(NamedTuple):
    """A server with a recycle bin, its bridge delivering jobs, and a DCMTK storescp registered as a node."""

    server: LiveServer
    studies: dict[str, StudySpec]
    bridge: RunningBridge
    received: Path  # where storescp writes what the bridge sends it


@pytest.fixture(scope="session")
def operations(live_servers: ServerFactory, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operations]:
    """The server of the study-action and operations pages (send, reports, edits, recycle bin, rules)."""
    require_dcmtk()
    server = live_servers.start("sqlite", env=OPERATIONS_ENV)
    work = tmp_path_factory.mktemp("operations")
    received = work / "received"
    received.mkdir()
    port = free_port()
    log = work / "storescp.log"
    storescp = subprocess.Popen(
        ["storescp", "-aet", STORESCP_AE, "-od", str(received), str(port)],
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )
    wait_for_port(port, storescp, log)
    bridge = start_bridge(server, work, "--accept-unregistered", "--forward-poll", "0.2")
    studies = {
        "curie": study_of("CURIE^MARIE", "OPS-MARIE", "20210304"),
        "noether": study_of("NOETHER^EMMY", "OPS-EMMY", "20180101", modality="MR"),
        "franklin": study_of("FRANKLIN^ROSALIND", "OPS-ROSALIND", "19990101", instances=1),
        "meitner": study_of("MEITNER^LISE", "OPS-LISE", "20200202", instances=1),
        "pauling": study_of("PAULING^LINUS", "OPS-LINUS", "20150505", modality="MR", instances=1),
        "pauling-tmp": study_of("PAULING^L", "OPS-LINUS-TMP", "20160606", modality="MR", instances=1),
    }
    with server.client() as client:
        for spec in studies.values():
            store(client, [part10(ds) for ds in build_instances(spec)])
        node = {"ae_title": STORESCP_AE, "host": "127.0.0.1", "port": port, "description": "DCMTK storescp"}
        assert client.post("/api/dicom-nodes", json=node).status_code == 201
    yield Operations(server, studies, bridge, received)
    stop(bridge.process)
    stop(storescp)
    live_servers.stop(server)


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """Debian's headless chromium, driven by Playwright."""
    assert CHROMIUM.is_file(), "chromium is not installed: run make system-packages (apt-get install chromium)"
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    """A fresh browser profile for one test."""
    fresh = new_context(browser)
    yield fresh
    fresh.close()


@pytest.fixture
def page(context: BrowserContext) -> Page:
    """A page in a fresh profile."""
    return context.new_page()
