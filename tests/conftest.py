"""Fixtures shared by every test: a real server process on a fresh embedded archive."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
from postgres_databases import create_postgres_database, drop_postgres_database

if TYPE_CHECKING:
    from collections.abc import Iterator

    from s3_server import S3Server  # tests/s3_server.py

_READY_TIMEOUT = 60.0


@dataclass(frozen=True)
class LiveServer:
    """A running `webpacs serve` process."""

    url: str
    token: str
    data_dir: Path
    process: subprocess.Popen[bytes]

    def client(self) -> httpx.Client:
        """An HTTP client for the server, authenticated as admin."""
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=60)


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def webpacs(*args: str, env: dict[str, str] | None = None) -> str:
    """Run the `webpacs` CLI and return its standard output (raises on failure)."""
    completed = subprocess.run(
        [sys.executable, "-m", "dicomweb.cli", *args], capture_output=True, text=True, check=False, env=env
    )
    if completed.returncode != 0:
        raise AssertionError(f"webpacs {' '.join(args)} failed: {completed.stderr}")
    return completed.stdout


def start_server(
    data_dir: Path,
    *,
    database_url: str | None = None,
    extra: tuple[str, ...] = (),
    token: str | None = None,
    env: dict[str, str] | None = None,
) -> LiveServer:
    """Start `webpacs serve --no-bridge` on a free port and wait until /healthz answers 200.

    An admin token is minted unless `token` (one already valid for this archive) is given; `env`
    adds WEBPACS_* variables (an S3 blob store, say).
    """
    environment = {**os.environ, "WEBPACS_DATA_DIR": str(data_dir), **(env or {})}
    if database_url:
        environment["WEBPACS_DATABASE_URL"] = database_url
    if token is None:
        token = webpacs("token", "create", "--name", "tests", "--role", "admin", env=environment).strip()
    port = free_port()
    log = (data_dir / "server.log").open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "dicomweb.cli", "serve", "--no-bridge", "--port", str(port), *extra],
        env=environment,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + _READY_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the server exited: {(data_dir / 'server.log').read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return LiveServer(url, token, data_dir, process)
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    process.kill()
    raise AssertionError(f"the server did not become ready: {(data_dir / 'server.log').read_text()[-3000:]}")


def stop_server(server: LiveServer) -> None:
    """Stop the server process."""
    server.process.terminate()
    try:
        server.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One server on a fresh embedded archive (SQLite + folder), shared by a test session."""
    server = start_server(tmp_path_factory.mktemp("webpacs"))
    yield server
    stop_server(server)


# --- Servers on either index backend (the DICOMweb suite runs every test on both) -------------------

BACKENDS = ("sqlite", "postgresql")


class ServerFactory:
    """Starts `webpacs serve` processes on fresh archives of either backend; cleans up at the end."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        self._tmp = tmp_path_factory
        self._database_urls: dict[Path, str | None] = {}
        self._options: dict[Path, tuple[tuple[str, ...], dict[str, str]]] = {}
        self._running: list[LiveServer] = []

    def start(self, backend: str, *, extra: tuple[str, ...] = (), env: dict[str, str] | None = None) -> LiveServer:
        """A server on a new empty archive: SQLite in its data dir, or a new PostgreSQL database.

        `extra` flags and `env` variables (e.g. `--workers 2`, an S3 blob store) also apply to restarts.
        """
        if backend not in BACKENDS:
            raise ValueError(f"backend {backend!r}: use one of {BACKENDS}")
        data_dir = self._tmp.mktemp(f"webpacs-{backend}")
        database_url = create_postgres_database() if backend == "postgresql" else None
        self._database_urls[data_dir] = database_url
        self._options[data_dir] = (extra, env or {})
        return self._started(start_server(data_dir, database_url=database_url, extra=extra, env=env))

    def restart(self, server: LiveServer) -> LiveServer:
        """A new server process on the same data dir and database (after a stop or a kill)."""
        if server.process.poll() is None:
            stop_server(server)
        database_url = self._database_urls[server.data_dir]
        extra, env = self._options[server.data_dir]
        return self._started(
            start_server(server.data_dir, database_url=database_url, token=server.token, extra=extra, env=env)
        )

    def start_on(
        self, database_url: str, *, token: str, extra: tuple[str, ...] = (), env: dict[str, str] | None = None
    ) -> LiveServer:
        """A server on an existing PostgreSQL database made by create_postgres_database (dropped at the end)."""
        data_dir = self._tmp.mktemp("webpacs-existing")
        self._database_urls[data_dir] = database_url
        self._options[data_dir] = (extra, env or {})
        return self._started(start_server(data_dir, database_url=database_url, token=token, extra=extra, env=env))

    def database_url(self, server: LiveServer) -> str | None:
        """The PostgreSQL URL of a server started here (None: SQLite in its data dir)."""
        return self._database_urls[server.data_dir]

    def stop(self, server: LiveServer) -> None:
        """Stop a server started here (its archive stays until the end of the session)."""
        stop_server(server)

    def _started(self, server: LiveServer) -> LiveServer:
        self._running.append(server)
        return server

    def close(self) -> None:
        """Stop every server still running and drop the PostgreSQL databases."""
        for server in self._running:
            if server.process.poll() is None:
                stop_server(server)
        for url in self._database_urls.values():
            if url is not None:
                drop_postgres_database(url)


@pytest.fixture(scope="session")
def live_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerFactory]:
    """Start servers on fresh archives of either backend (see ServerFactory)."""
    factory = ServerFactory(tmp_path_factory)
    yield factory
    factory.close()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """In CI (CI=true) a skipped test fails the run: nothing may be skipped silently."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter is not None else []
    if os.environ.get("CI", "").lower() == "true" and skipped and exitstatus == 0:
        names = ", ".join(report.nodeid for report in skipped[:10])
        sys.stderr.write(f"\nCI: {len(skipped)} test(s) were skipped, which CI does not allow: {names}\n")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """One S3-compatible server (moto_server over HTTP) for the session; tests each make their own bucket."""
    from s3_server import start_s3_server

    server = start_s3_server(tmp_path_factory.mktemp("moto") / "moto.log")
    yield server
    server.stop()
