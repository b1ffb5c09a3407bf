"""`webpacs migrate-storage`: an embedded archive moved to PostgreSQL + S3 keeps every byte and every answer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import pytest
from dicomdata import multipart_body, sample_study, split_multipart, uids_of
from postgres_databases import create_postgres_database

if TYPE_CHECKING:
    import httpx
    from conftest import LiveServer, ServerFactory  # tests/conftest.py
    from s3_server import S3Server

AS_STORED = 'multipart/related; type="application/dicom"; transfer-syntax=*'
QUERIES = [
    ("/dicomweb/studies", {"includefield": "all"}),
    ("/dicomweb/series", {"includefield": "all"}),
    ("/dicomweb/instances", {"includefield": "all"}),
    ("/dicomweb/studies", {"PatientName": "MIGRATE*", "includefield": "all"}),
    ("/dicomweb/studies", {"ModalitiesInStudy": "MR"}),
]


def answers(server: LiveServer, instances: list[bytes]) -> dict[str, Any]:
    """Every query answer, every instance's stored bytes and metadata, the change feed and status."""
    with server.client() as http:

        def get(path: str, **kwargs: Any) -> httpx.Response:
            response = http.get(path, **kwargs)
            assert response.status_code == 200, f"{path}: {response.status_code} {response.text}"
            return response

        result: dict[str, Any] = {}
        for path, params in QUERIES:
            result[f"{path}?{params}"] = json.loads(get(path, params=params).text.replace(server.url, "BASE"))
        for data in instances:
            study, series, sop = uids_of(data)
            path = f"/dicomweb/studies/{study}/series/{series}/instances/{sop}"
            response = get(path, headers={"Accept": AS_STORED})
            result[path] = [
                part.content for part in split_multipart(response.content, response.headers["content-type"])
            ]
            result[path + "/metadata"] = json.loads(get(path + "/metadata").text.replace(server.url, "BASE"))
        result["changes"] = get("/api/changes", params={"limit": 1000}).json()["changes"]
        result["status"] = {k: v for k, v in get("/api/status").json().items() if k != "version"}
    return result


def stow(http: httpx.Client, parts: list[bytes]) -> httpx.Response:
    body, content_type = multipart_body(parts)
    return http.post("/dicomweb/studies", content=body, headers={"Content-Type": content_type})


def migrate_storage(server: LiveServer, database_url: str, blob_url: str, s3: S3Server) -> str:
    environment = {**os.environ, "WEBPACS_DATA_DIR": str(server.data_dir), **s3.environment()}
    completed = subprocess.run(
        [
            sys.executable, "-m", "dicomweb.cli", "migrate-storage",
            "--to-database-url", database_url, "--to-blob-url", blob_url,
        ],
        capture_output=True, text=True, env=environment, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    return completed.stdout


class TestMigrateStorage:
    def test_an_embedded_archive_moved_to_postgresql_and_s3_answers_every_query_with_the_same_bytes(
        self, live_servers: ServerFactory, s3_server: S3Server
    ) -> None:
        embedded = live_servers.start("sqlite")
        instances: list[bytes] = []
        for modality, count, frames in (("CT", 4, 1), ("MR", 2, 3)):
            _, study = sample_study(modality=modality, instances=count, frames=frames)
            instances += study
        with embedded.client() as http:
            for data in instances:
                from dicomdata import multipart_body

                body, content_type = multipart_body([data])
                assert (
                    http.post("/dicomweb/studies", content=body, headers={"Content-Type": content_type}).status_code
                    == 200
                )
            gone = instances.pop(0)
            study, series, sop = uids_of(gone)
            assert http.delete(f"/dicomweb/studies/{study}/series/{series}/instances/{sop}").status_code == 200
        before = answers(embedded, instances)
        live_servers.stop(embedded)

        database_url = create_postgres_database()
        bucket = s3_server.new_bucket()
        first = migrate_storage(embedded, database_url, f"s3://{bucket}/moved", s3_server)
        assert first.startswith(f"copied {len(instances)} blob(s)")
        # Interrupted after the blobs? Take one away and run again: only what is missing is copied.
        some_key = s3_server.client().list_objects_v2(Bucket=bucket)["Contents"][0]["Key"]
        s3_server.client().delete_object(Bucket=bucket, Key=some_key)
        again = migrate_storage(embedded, database_url, f"s3://{bucket}/moved", s3_server)
        assert again.startswith("copied 1 blob(s)") and f"{len(instances) - 1} already there" in again

        environment = {**s3_server.environment(), "WEBPACS_BLOB_URL": f"s3://{bucket}/moved"}
        moved = live_servers.start_on(database_url, token=embedded.token, env=environment)  # the same token works
        after = answers(moved, instances)
        assert after == before
        # New stores on the target get new ids and feed positions after the copied ones.
        _, extra = sample_study(instances=1)
        with moved.client() as http:
            from dicomdata import multipart_body

            body, content_type = multipart_body(extra)
            assert (
                http.post("/dicomweb/studies", content=body, headers={"Content-Type": content_type}).status_code == 200
            )
            feed = http.get("/api/changes", params={"since": before["changes"][-1]["seq"]}).json()["changes"]
        assert [change["sop_instance_uid"] for change in feed] == [uids_of(extra[0])[2]]

    def test_the_same_archive_as_target_is_refused(self, live_servers: ServerFactory) -> None:
        embedded = live_servers.start("sqlite")
        live_servers.stop(embedded)
        completed = subprocess.run(
            [
                sys.executable, "-m", "dicomweb.cli", "migrate-storage", "--data-dir", str(embedded.data_dir),
                "--to-database-url", f"sqlite:///{(embedded.data_dir / 'index.sqlite3').resolve()}",
                "--to-blob-url", str((embedded.data_dir / "blobs").resolve()),
            ],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert completed.returncode == 2
        assert "name this very archive" in completed.stderr


pytestmark = pytest.mark.postgres
