"""The `webpacs-bridge` process: it stops cleanly on the signals `webpacs serve` and an operator send."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from typing import TYPE_CHECKING

from dimse_helpers import free_port, wait_for_port

if TYPE_CHECKING:
    from pathlib import Path


class TestStopSignals:
    def test_stop_signals_in_a_row_end_the_bridge_and_free_its_port(self, tmp_path: Path) -> None:
        # `webpacs serve` sends SIGTERM and its own death sends another (parent-death signal): the
        # bridge must stop once, cleanly, whatever arrives while it is stopping.
        port = free_port()
        log = tmp_path / "bridge.log"
        process = subprocess.Popen(
            [sys.executable, "-m", "dimse_bridge", "--server", f"http://127.0.0.1:{free_port()}",
             "--token", "unused", "--port", str(port), "--no-forward"],
            stdout=log.open("ab"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            wait_for_port(port, process, log)
            for stop_signal in (signal.SIGTERM, signal.SIGTERM, signal.SIGINT):
                process.send_signal(stop_signal)
            assert process.wait(timeout=30) == 0, log.read_text()[-3000:]
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", port))
