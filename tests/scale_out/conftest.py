"""The scale-out profile under test: `webpacs serve --workers 2` on PostgreSQL and an S3 server.

PostgreSQL (127.0.0.1:5432) must answer and moto_server is started here; nothing is skipped.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from scale_out_pacs import STABLE_SECONDS, WORKERS, ScaleOut

if TYPE_CHECKING:
    from collections.abc import Iterator

    from conftest import ServerFactory  # tests/conftest.py
    from s3_server import S3Server


@pytest.fixture(scope="module")
def scale_out(s3_server: S3Server, live_servers: ServerFactory) -> Iterator[ScaleOut]:
    """A fresh PostgreSQL database and bucket served by two workers (per module: tests use fresh UIDs)."""
    bucket = s3_server.new_bucket()
    environment = {
        **s3_server.environment(),
        "WEBPACS_BLOB_URL": f"s3://{bucket}/blobs",
        "WEBPACS_STABLE_STUDY_SECONDS": str(STABLE_SECONDS),
    }
    server = live_servers.start("postgresql", extra=("--workers", str(WORKERS)), env=environment)
    running = ScaleOut(server, live_servers, bucket, s3_server)
    running.wait_for_workers()
    yield running
    running.close()
