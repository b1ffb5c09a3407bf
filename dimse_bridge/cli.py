"""`webpacs-bridge`: run the DIMSE bridge against a webpacs server (alone, or as `webpacs serve`'s child).

`main(argv)` is the entry point for both the console script and a parent process: the server's
CLI spawns `webpacs-bridge --server URL --token T ...` and stops it with SIGTERM.
"""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import sys
from typing import TYPE_CHECKING

from dimse_bridge.server import Bridge
from dimse_bridge.settings import ENV_PREFIX, BridgeSettings, SettingsError

if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import FrameType

__all__ = ["build_parser", "main", "settings_from_args"]

_DESCRIPTION = """\
DICOM network (DIMSE) bridge for a webpacs archive.

Modalities and workstations talk DIMSE to this process; it talks DICOMweb to the server with a
bearer token, and nothing else:
  C-ECHO            answered here
  C-STORE           -> STOW-RS (bytes as received, no re-encoding; acknowledged only once stored)
  C-FIND            -> QIDO-RS (Patient Root and Study Root; PATIENT, STUDY, SERIES, IMAGE)
  C-MOVE / C-GET    -> QIDO-RS + WADO-RS, then C-STORE sub-operations (C-MOVE destinations
                       come from the AE registry, GET/POST /api/dicom-nodes on the server)
  forwarding        claims due jobs (POST /api/forwarding-jobs/claim), retrieves by WADO-RS and
                    sends by C-STORE to a registered node or by STOW-RS to a DICOMweb server
"""

_EPILOG = f"""\
Every option can also be set with an environment variable {ENV_PREFIX}<NAME>, e.g.
{ENV_PREFIX}SERVER_URL, {ENV_PREFIX}TOKEN, {ENV_PREFIX}AE_TITLE, {ENV_PREFIX}PORT,
{ENV_PREFIX}ACCEPT_UNREGISTERED=true. Options given on the command line win.

Calling AEs: by default only AEs registered on the server (admin: /api/dicom-nodes) may associate,
each with its own store / find / move permissions; --accept-unregistered lets any AE in with all
permissions (registered AEs keep theirs). Associations must call this AE by its title.

The token needs the "admin" role or a service role allowed to store, search, retrieve, read
the AE registry and deliver forwarding jobs. Prefer the environment variable to --token, which
other users can see in ps.
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; every option maps to a `BridgeSettings` field of the same name."""
    parser = argparse.ArgumentParser(
        prog="webpacs-bridge",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    server = parser.add_argument_group("archive")
    server.add_argument(
        "--server",
        dest="server_url",
        metavar="URL",
        help="webpacs server base URL, e.g. http://127.0.0.1:8080 (required)",
    )
    server.add_argument("--token", metavar="TOKEN", help="bearer token for the server (required)")
    server.add_argument(
        "--http-timeout", type=float, metavar="S", help="seconds for one HTTP request to the server (default 120)"
    )
    network = parser.add_argument_group("DICOM network")
    network.add_argument("--ae-title", metavar="AET", help="this AE's title (default WEBPACS)")
    network.add_argument("--port", type=int, help="TCP port to listen on (default 11112)")
    network.add_argument(
        "--bind", dest="bind_host", metavar="HOST", help="address to listen on (default 127.0.0.1; 0.0.0.0 for all)"
    )
    network.add_argument(
        "--accept-unregistered",
        action="store_true",
        default=None,
        help="accept associations from AEs not in the registry",
    )
    network.add_argument(
        "--max-associations", type=int, metavar="N", help="associations served at once; more are rejected (default 16)"
    )
    network.add_argument(
        "--acse-timeout", type=float, metavar="S", help="seconds to wait for association messages (default 30)"
    )
    network.add_argument(
        "--dimse-timeout", type=float, metavar="S", help="seconds to wait for a DIMSE message (default 60)"
    )
    network.add_argument(
        "--network-timeout",
        type=float,
        metavar="S",
        help="seconds of silence before a connection is dropped (default 120)",
    )
    tuning = parser.add_argument_group("tuning")
    tuning.add_argument(
        "--registry-ttl",
        type=float,
        metavar="S",
        help="seconds the AE registry read from the server is reused (default 5)",
    )
    tuning.add_argument(
        "--stow-batch-instances", type=int, metavar="N", help="most instances in one STOW-RS request (default 32)"
    )
    tuning.add_argument(
        "--stow-batch-bytes", type=int, metavar="BYTES", help="most bytes in one STOW-RS request (default 268435456)"
    )
    tuning.add_argument(
        "--stow-concurrency", type=int, metavar="N", help="STOW-RS requests in flight at once (default 4)"
    )
    tuning.add_argument("--qido-page-size", type=int, metavar="N", help="QIDO-RS page size (limit) (default 1000)")
    forwarding = parser.add_argument_group("forwarding")
    forwarding.add_argument(
        "--no-forward",
        dest="forward",
        action="store_false",
        default=None,
        help="do not deliver the server's forwarding jobs (another bridge does)",
    )
    forwarding.add_argument(
        "--forward-poll", type=float, metavar="S", help="seconds between claims when no job is due (default 5)"
    )
    tuning.add_argument("--log-level", choices=("DEBUG", "INFO", "WARNING", "ERROR"), help="log level (default INFO)")
    return parser


def settings_from_args(argv: Sequence[str] | None = None) -> BridgeSettings:
    """Parse the command line and the environment into validated settings.

    Raises:
        SettingsError: a value is missing or invalid (the message names it).
        SystemExit: from argparse, for --help or an unparsable command line.
    """
    arguments = build_parser().parse_args(argv)
    return BridgeSettings.from_sources(vars(arguments))


def _take_signal(signum: int, frame: FrameType | None) -> None:
    """A stop signal: nothing to do here, `main` learns of it from the wake-up socket."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the bridge until SIGTERM or SIGINT; return the process exit status."""
    try:
        settings = settings_from_args(argv)
    except SettingsError as exc:
        sys.stderr.write(f"webpacs-bridge: {exc}\n")
        return 2
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Stop at the first SIGTERM or SIGINT. The handlers do nothing themselves: Python's C-level handler
    # writes each signal to the wake-up socket, which the main thread reads. (`webpacs serve` sends its
    # child SIGTERM and its death sends another, the parent-death signal; a handler that set an Event
    # could be interrupted by the second inside Event.set() and deadlock on the Event's own lock,
    # leaving the bridge and its port behind.)
    wake_in, wake_out = socket.socketpair()
    wake_out.setblocking(False)
    signal.set_wakeup_fd(wake_out.fileno())
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop_signal, _take_signal)
    bridge = Bridge(settings)
    try:
        bridge.start()
    except OSError as exc:
        sys.stderr.write(f"webpacs-bridge: cannot listen on {settings.bind_host}:{settings.port}: {exc}\n")
        return 1
    try:
        wake_in.recv(1)
    finally:
        bridge.stop()
    return 0
