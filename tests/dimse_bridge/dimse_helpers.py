"""Helpers of the bridge tests: start processes, wait on readiness, make test data."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]  # generated at import


class LiveServer(Protocol):
    """What the root conftest's `live_server` fixture yields."""

    url: str
    token: str
    data_dir: Path


DCMTK_TOOLS = ("echoscu", "storescu", "findscu", "movescu", "getscu", "storescp")
READY_TIMEOUT = 30.0


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def require_dcmtk() -> None:
    """Fail (never skip) when a DCMTK tool is missing: the interop proof needs them."""
    missing = [tool for tool in DCMTK_TOOLS if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"DCMTK tools missing: {', '.join(missing)}; install the Debian package 'dcmtk'")


def echo_ok(port: int, ae_title: str = "WEBPACS", calling: str = "PROBE") -> bool:
    """One C-ECHO; True when it succeeds."""
    ae = AE(calling)
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.network_timeout = 5
    assoc = ae.associate("127.0.0.1", port, ae_title=ae_title)
    if not assoc.is_established:
        return False
    status = assoc.send_c_echo()
    assoc.release()
    return bool(status) and status.Status == 0


def wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    """Wait until something accepts TCP connections on `port` (readiness, not a fixed sleep)."""
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"process exited early: {log.read_text()[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on {port}: {log.read_text()[-3000:]}")


@dataclass(frozen=True)
class RunningBridge:
    """A `webpacs-bridge` process."""

    port: int
    ae_title: str
    log: Path
    process: subprocess.Popen[bytes]


def start_bridge(server: LiveServer, directory: Path, *extra: str) -> RunningBridge:
    """Start `webpacs-bridge` for `server` on a free port and wait until it answers C-ECHO."""
    port = free_port()
    log = directory / f"bridge-{port}.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "dimse_bridge", "--server", server.url, "--token", server.token,
         "--port", str(port), "--registry-ttl", "0", *extra],
        stdout=log.open("ab"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    wait_for_port(port, process, log)
    return RunningBridge(port, "WEBPACS", log, process)


def stop(process: subprocess.Popen[bytes]) -> None:
    """Terminate a process this test started, and reap it."""
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def bundled(name: str) -> Path:
    """A file bundled with pydicom."""
    path = get_testdata_file(name)
    if path is None:
        raise AssertionError(f"pydicom's bundled file {name} is missing")
    return Path(str(path))


def copy_as_new_instance(source: Path, target: Path, *, study: str | None = None, series: str | None = None,
                         **attributes: object) -> pydicom.Dataset:  # fmt: skip
    """Write `source` to `target` with new (or given) UIDs and attributes; pixel data untouched."""
    dataset = pydicom.dcmread(source)
    dataset.StudyInstanceUID = study or generate_uid()
    dataset.SeriesInstanceUID = series or generate_uid()
    dataset.SOPInstanceUID = generate_uid()
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    for keyword, value in attributes.items():
        setattr(dataset, keyword, value)
    dataset.save_as(target, enforce_file_format=True)
    return dataset


def run(*command: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run a command, capturing its output as text."""
    return subprocess.run(list(command), capture_output=True, text=True, timeout=timeout, check=False)
