"""`webpacs serve` on an S3 blob store refuses to start on a missing bucket, not at the first upload."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

    from s3_server import S3Server


class TestStartUpChecks:
    def test_serve_on_a_missing_bucket_stops_at_once_naming_the_bucket(
        self, s3_server: S3Server, tmp_path: Path
    ) -> None:
        environment = {
            **os.environ,
            **s3_server.environment(),
            "WEBPACS_DATA_DIR": str(tmp_path),
            "WEBPACS_BLOB_URL": "s3://no-such-bucket/blobs",
        }
        completed = subprocess.run(
            [sys.executable, "-m", "dicomweb.cli", "serve", "--no-bridge", "--port", "1"],
            capture_output=True, text=True, env=environment, timeout=120, check=False,
        )  # fmt: skip
        assert completed.returncode == 2
        assert "the bucket 'no-such-bucket' does not exist" in completed.stderr
        assert "WEBPACS_BLOB_URL=s3://no-such-bucket/blobs" in completed.stderr
