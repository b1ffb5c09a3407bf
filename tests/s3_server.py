"""An S3-compatible server over real HTTP for tests: moto's server mode (`moto_server`) on a free port."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import httpx

from storage.blobs.s3 import S3Options

_READY_TIMEOUT = 60.0
ACCESS_KEY = "webpacs-test"
SECRET_KEY = "webpacs-test-secret"  # moto accepts any key unless told to check them


@dataclass(frozen=True)
class S3Server:
    """A running moto_server."""

    endpoint_url: str
    process: subprocess.Popen[bytes]

    def options(self, **overrides: Any) -> S3Options:
        """S3Options that reach this server."""
        values: dict[str, Any] = {
            "endpoint_url": self.endpoint_url,
            "region": "us-east-1",
            "access_key_id": ACCESS_KEY,
            "secret_access_key": SECRET_KEY,
            "path_style": True,
            "max_attempts": 3,
        }
        values.update(overrides)
        return S3Options(**values)

    def environment(self) -> dict[str, str]:
        """The WEBPACS_S3_* variables that point a server process here."""
        return {
            "WEBPACS_S3_ENDPOINT_URL": self.endpoint_url,
            "WEBPACS_S3_REGION": "us-east-1",
            "WEBPACS_S3_ACCESS_KEY_ID": ACCESS_KEY,
            "WEBPACS_S3_SECRET_ACCESS_KEY": SECRET_KEY,
            "WEBPACS_S3_PATH_STYLE": "true",
        }

    def client(self) -> Any:
        """A plain boto3 client, to look at the bucket from outside the adapter."""
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        )

    def new_bucket(self) -> str:
        """Create an empty bucket with a fresh name and return the name."""
        name = f"webpacs-{uuid.uuid4().hex[:16]}"
        self.client().create_bucket(Bucket=name)
        return name

    def stop(self) -> None:
        """Stop the server."""
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_s3_server(log: Path, *, environment: dict[str, str] | None = None) -> S3Server:
    """Start moto_server on a port the system picks and wait until it answers HTTP."""
    moto_server = Path(sys.executable).with_name("moto_server")
    with log.open("ab") as output:
        process = subprocess.Popen(
            [str(moto_server), "-H", "127.0.0.1", "-p", "0"], stdout=output, stderr=subprocess.STDOUT, env=environment
        )
    deadline = time.monotonic() + _READY_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"moto_server exited: {log.read_text()[-2000:]}")
        # Werkzeug names the port it bound: " * Running on http://127.0.0.1:PORT".
        announced = re.search(r"Running on (http://127\.0\.0\.1:\d+)", log.read_text())
        if announced:
            try:
                httpx.get(f"{announced.group(1)}/moto-api/", timeout=2)
                return S3Server(announced.group(1), process)
            except httpx.HTTPError:
                pass
        time.sleep(0.1)
    process.kill()
    raise AssertionError(f"moto_server did not answer within {_READY_TIMEOUT} s: {log.read_text()[-2000:]}")
