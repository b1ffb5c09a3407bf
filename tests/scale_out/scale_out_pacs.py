"""A live scale-out server for tests: its workers, its bucket, its database, and a few helpers."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
from dicomdata import multipart_body

if TYPE_CHECKING:
    import httpx
    from conftest import LiveServer, ServerFactory  # tests/conftest.py
    from s3_server import S3Server

WORKERS = 2
STABLE_SECONDS = 2
_TIMEOUT = 60.0


class ScaleOut:
    """`webpacs serve --workers N` on PostgreSQL + S3, an admin client, and where its data is."""

    def __init__(self, server: LiveServer, factory: ServerFactory, bucket: str, s3: S3Server) -> None:
        self.server = server
        self.factory = factory
        self.bucket = bucket
        self.s3 = s3
        self.http = server.client()
        self._log_start = 0  # where the current run's lines begin in server.log

    @property
    def log(self) -> Path:
        return self.server.data_dir / "server.log"

    def close(self) -> None:
        self.http.close()
        self.factory.stop(self.server)

    def restart(self) -> None:
        """Stop (if running) and start `webpacs serve` again on the same database and bucket."""
        self.http.close()
        self._log_start = self.log.stat().st_size
        self.server = self.factory.restart(self.server)
        self.http = self.server.client()
        self.wait_for_workers()

    def worker_pids(self) -> list[int]:
        """The worker processes: children of `webpacs serve` (uvicorn's supervisor is serve itself)
        started by multiprocessing's spawn (its resource tracker is left out)."""
        return [pid for pid in children(self.server.process.pid) if b"spawn_main" in _command_line(pid)]

    def worker_serving(self, client_port: int) -> int:
        """The worker process holding the server end of the connection from `client_port` (/proc/net/tcp)."""
        server_port = int(self.server.url.rsplit(":", 1)[1])
        ends = (f"0100007F:{server_port:04X}", f"0100007F:{client_port:04X}")  # 127.0.0.1, little-endian hex
        inodes = {
            fields[9]
            for line in Path("/proc/net/tcp").read_text().splitlines()[1:]
            if (fields := line.split())[1:3] == list(ends)
        }
        for pid in self.worker_pids():
            for fd in (Path("/proc") / str(pid) / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in {f"socket:[{inode}]" for inode in inodes}:
                        return pid
        raise AssertionError(f"no worker holds the connection from port {client_port}")

    def wait_for_workers(self) -> None:
        """Until every worker has said "Application startup complete." (uvicorn) in this run's log."""
        deadline = time.monotonic() + _TIMEOUT
        while time.monotonic() < deadline:
            with self.log.open("rb") as log:
                log.seek(self._log_start)
                if log.read().count(b"Application startup complete.") >= WORKERS:
                    return
            time.sleep(0.1)
        raise AssertionError(f"{WORKERS} workers did not start: {self.log.read_text()[-3000:]}")

    def stow(self, parts: list[bytes], client: httpx.Client | None = None) -> httpx.Response:
        body, content_type = multipart_body(parts)
        return (client or self.http).post("/dicomweb/studies", content=body, headers={"Content-Type": content_type})

    def blob_keys(self) -> set[str]:
        """Every object under the server's prefix in the bucket, without the prefix."""
        pages = self.s3.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix="blobs/")
        return {item["Key"].removeprefix("blobs/") for page in pages for item in page.get("Contents", ())}

    def sql(self, query: str, *parameters: Any) -> list[tuple[Any, ...]]:
        """Rows of a query on the server's PostgreSQL database."""
        url = self.factory.database_url(self.server)
        assert url is not None
        with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as connection:
            return connection.execute(query, parameters).fetchall()  # type: ignore[arg-type]


def children(pid: int) -> list[int]:
    """Process ids whose parent is `pid` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _command_line(pid: int) -> bytes:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes()
    except OSError:
        return b""
