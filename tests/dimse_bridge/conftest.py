"""Bridge fixtures: a real `webpacs-bridge` process against the real server, and DCMTK."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import pytest
from dimse_helpers import READY_TIMEOUT, LiveServer, RunningBridge, echo_ok, require_dcmtk, start_bridge, stop

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture(scope="session")
def bridge(live_server: LiveServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBridge]:
    """A bridge accepting any calling AE, shared by the session."""
    running = start_bridge(live_server, tmp_path_factory.mktemp("bridge"), "--accept-unregistered")
    deadline = time.monotonic() + READY_TIMEOUT
    while not echo_ok(running.port) and time.monotonic() < deadline:
        time.sleep(0.05)
    yield running
    stop(running.process)


@pytest.fixture(scope="session")
def dcmtk() -> None:
    """DCMTK's command-line tools must be installed."""
    require_dcmtk()
