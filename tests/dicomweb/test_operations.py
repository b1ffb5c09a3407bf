"""Operations on real servers and the real CLI: backup -> wipe -> restore, verify, retention (API, CLI, schedule)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
from dicomdata import Patient, SeriesSpec, StudySpec, build_instances, new_uid, part10
from live_pacs import AS_STORED, Pacs
from postgres_databases import drop_postgres_database

if TYPE_CHECKING:
    from pathlib import Path

    from conftest import LiveServer, ServerFactory  # tests/conftest.py

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
_DEADLINE = 60.0


def pacs_of(server: LiveServer, backend: str) -> Pacs:
    return Pacs(server.url, server.token, server.data_dir, backend)


def study_of(modality: str, study_date: str, instances: int = 2) -> tuple[str, list[bytes]]:
    spec = StudySpec(
        Patient(f"OPS^{new_uid()[-5:]}", f"O-{new_uid()[-8:]}"), study_date, "OPS1", (SeriesSpec(modality, instances),)
    )
    return spec.study_uid, [part10(ds) for ds in build_instances(spec)]


def storage_flags(server: LiveServer, database_url: str | None) -> list[str]:
    return ["--data-dir", str(server.data_dir), *(["--database-url", database_url] if database_url else [])]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """`webpacs ARGS`, whatever its exit status."""
    return subprocess.run(
        [sys.executable, "-m", "dicomweb.cli", *args], capture_output=True, text=True, check=False, env=os.environ
    )


def webpacs(*args: str) -> str:
    """`webpacs ARGS`' standard output; it must succeed (tests/conftest.py's helper, not importable from here)."""
    result = run_cli(*args)
    assert result.returncode == 0, f"webpacs {' '.join(args)} failed: {result.stderr}"
    return result.stdout


def wipe_postgres_database(url: str) -> None:
    """Drop the database and create it again, empty, under the same name."""
    drop_postgres_database(url)
    with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{url.rsplit("/", 1)[1]}"')


def snapshot_of(pacs: Pacs, studies: list[str]) -> dict[str, Any]:
    """Everything a client sees: QIDO at every level, metadata, and the stored bytes of every instance.

    The server's own URL (in RetrieveURL and BulkDataURI) is replaced: a restarted server has another port.
    """
    answers = {
        "studies": pacs.http.get("/dicomweb/studies").text,
        "series": pacs.http.get("/dicomweb/series").text,
        "instances": pacs.http.get("/dicomweb/instances").text,
        **{study: pacs.http.get(f"/dicomweb/studies/{study}/metadata").text for study in studies},
    }
    seen: dict[str, Any] = {name: json.loads(text.replace(pacs.url, "BASE")) for name, text in answers.items()}
    for study in studies:
        parts = pacs.retrieve(f"/dicomweb/studies/{study}", AS_STORED)
        seen[f"{study}/bytes"] = sorted(part.content for part in parts)
    return seen


@pytest.fixture
def servers(live_servers: ServerFactory) -> ServerFactory:
    return live_servers


class TestBackupRestore:
    @pytest.mark.parametrize("backend", BACKENDS)
    def test_backup_wipe_restore_gives_identical_bytes_and_queries(
        self, backend: str, servers: ServerFactory, tmp_path: Path
    ) -> None:
        server = servers.start(backend)
        pacs = pacs_of(server, backend)
        ct, ct_files = study_of("CT", "20190304", 3)
        mr, mr_files = study_of("MR", "20200506", 2)
        pacs.store(*ct_files)
        pacs.store(*mr_files)
        before = snapshot_of(pacs, [ct, mr])
        assert before[f"{ct}/bytes"] == sorted(ct_files)
        database_url = servers.database_url(server)
        backup = tmp_path / "backup"
        out = webpacs("backup", "--to", str(backup), *storage_flags(server, database_url))  # while it serves
        assert "2 stud(ies), 5 instance(s)" in out
        pacs.close()
        servers.stop(server)

        shutil.rmtree(server.data_dir)  # the wipe: index (SQLite), blobs, everything
        if database_url:
            wipe_postgres_database(database_url)
        out = webpacs("restore", "--from", str(backup), *storage_flags(server, database_url))
        assert "restored 2 stud(ies), 5 instance(s)" in out
        restored = servers.restart(server)  # with the old token: the backup's tokens work
        again = pacs_of(restored, backend)
        assert snapshot_of(again, [ct, mr]) == before
        again.store(*study_of("CT", "20210101", 1)[1])  # and it keeps archiving
        again.close()
        servers.stop(restored)

    def test_restore_refuses_an_installation_in_use(self, servers: ServerFactory, tmp_path: Path) -> None:
        server = servers.start("sqlite")
        pacs_of(server, "sqlite").store(*study_of("CT", "20190304", 1)[1])
        webpacs("backup", "--to", str(tmp_path / "backup"), "--data-dir", str(server.data_dir))
        result = run_cli("restore", "--from", str(tmp_path / "backup"), "--data-dir", str(server.data_dir))
        assert result.returncode == 1
        assert "not empty" in result.stderr
        listed = webpacs("restore", "--from", str(tmp_path / "backup"), "--list")
        assert listed.strip().endswith(".sqlite3")
        servers.stop(server)


class TestVerify:
    def test_a_flipped_byte_and_a_missing_file_fail_the_check_and_are_audited(
        self, servers: ServerFactory, tmp_path: Path
    ) -> None:
        server = servers.start("sqlite")
        pacs = pacs_of(server, "sqlite")
        study, files = study_of("CT", "20190304", 3)
        pacs.store(*files)
        flags = ["--data-dir", str(server.data_dir)]
        assert "0 problem(s) remain" in webpacs("verify", *flags)
        webpacs("backup", "--to", str(tmp_path / "backup"), *flags)
        blobs = sorted(path for path in pacs.blob_files() if study in str(path))
        damaged = bytearray(blobs[0].read_bytes())
        damaged[-1] ^= 0x01
        blobs[0].write_bytes(bytes(damaged))
        blobs[1].unlink()

        result = run_cli("verify", *flags)
        assert result.returncode == 1
        assert result.stdout.count("corrupt: ") == 1
        assert result.stdout.count("missing: ") == 1
        assert "2 problem(s) remain" in result.stdout

        repaired = run_cli("verify", "--repair", "--backup", str(tmp_path / "backup"), *flags)
        assert repaired.returncode == 0, repaired.stdout + repaired.stderr
        assert repaired.stdout.count("repaired from the backup") == 2
        parts = pacs.retrieve(f"/dicomweb/studies/{study}", AS_STORED)
        assert sorted(part.content for part in parts) == sorted(files)
        events = pacs.http.get("/api/audit", params={"action": "administer", "study_uid": study}).json()
        assert any("verify: corrupt" in event["detail"] for event in events)
        pacs.close()
        servers.stop(server)


class TestMirror:
    def test_stored_instances_reach_the_backup_at_ingest(self, servers: ServerFactory, tmp_path: Path) -> None:
        backup = tmp_path / "backup"
        server = servers.start("sqlite", env={"WEBPACS_MIRROR_BLOB_URL": str(backup / "blobs")})
        pacs = pacs_of(server, "sqlite")
        _, files = study_of("CT", "20190304", 2)
        pacs.store(*files)
        mirrored = sorted(path.read_bytes() for path in (backup / "blobs").rglob("*.dcm"))
        assert mirrored == sorted(files)
        out = webpacs("backup", "--to", str(backup), "--data-dir", str(server.data_dir))
        assert "copied 0 blob(s) (0 bytes), 2 already there" in out
        pacs.close()
        servers.stop(server)


def wait_until_gone(pacs: Pacs, study: str) -> None:
    deadline = time.monotonic() + _DEADLINE
    while pacs.search("/studies", {"StudyInstanceUID": study}):
        if time.monotonic() > deadline:
            raise AssertionError(f"study {study} was not deleted by the retention schedule")
        time.sleep(0.2)


class TestRetention:
    @pytest.mark.parametrize("backend", BACKENDS)
    def test_the_http_preview_lists_exactly_what_the_real_run_deletes(
        self, backend: str, servers: ServerFactory
    ) -> None:
        server = servers.start(backend)
        pacs = pacs_of(server, backend)
        old_ct, files = study_of("CT", "19990101")
        pacs.store(*files)
        kept, files = study_of("CT", "19990101")
        pacs.store(*files)
        old_mr, files = study_of("MR", "19980101")
        pacs.store(*files)
        recent, files = study_of("CT", time.strftime("%Y%m%d"))
        pacs.store(*files)
        for policy in (
            {"name": "ct-10y", "max_age_days": 3653, "modality": "CT"},
            {"name": "all-20y", "max_age_days": 7305, "age_basis": "study_date"},
        ):
            assert pacs.http.post("/api/retention-policies", json=policy).status_code == 201
        assert pacs.http.put(f"/api/studies/{kept}/keep").json() == {"study_instance_uid": kept, "keep": True}

        preview = pacs.http.get("/api/retention/preview").json()
        assert preview["dry_run"] is True
        assert len(pacs.search("/studies")) == 4  # a preview deletes nothing
        deleted = webpacs("retention", "run", *storage_flags(server, servers.database_url(server)))
        assert [line.split("\t")[0] for line in deleted.splitlines()] == [
            s["study_instance_uid"] for s in preview["studies"]
        ]
        assert {s["study_instance_uid"] for s in preview["studies"]} == {old_ct, old_mr}
        assert {first_uid(s) for s in pacs.search("/studies")} == {kept, recent}
        later = pacs.http.get("/api/retention/preview", params={"as_of": "2100-01-01"}).json()
        assert {s["study_instance_uid"] for s in later["studies"]} == {recent}
        deletes = pacs.http.get("/api/audit", params={"action": "delete", "study_uid": old_mr}).json()
        assert any("retention policy 'all-20y'" in event["detail"] for event in deletes)
        pacs.close()
        servers.stop(server)

    def test_the_cli_dry_run_prints_what_the_cli_run_deletes(self, servers: ServerFactory) -> None:
        server = servers.start("sqlite")
        pacs = pacs_of(server, "sqlite")
        for modality in ("CT", "MR", "CT"):
            pacs.store(*study_of(modality, "20000101", 1)[1])
        pacs.store(*study_of("CT", time.strftime("%Y%m%d"), 1)[1])
        pacs.http.post("/api/retention-policies", json={"name": "ct-5y", "max_age_days": 1826, "modality": "CT"})
        flags = ["--data-dir", str(server.data_dir)]
        planned = webpacs("retention", "run", "--dry-run", *flags)
        deleted = webpacs("retention", "run", *flags)
        assert planned == deleted
        assert len(planned.splitlines()) == 2
        assert webpacs("retention", "run", "--dry-run", *flags) == ""
        assert "ct-5y\tCT\tolder than 1826 days by study_date" in webpacs("retention", "policies", *flags)
        pacs.close()
        servers.stop(server)

    def test_the_server_applies_the_policies_on_its_schedule(self, servers: ServerFactory) -> None:
        server = servers.start("sqlite", env={"WEBPACS_RETENTION_INTERVAL_SECONDS": "1"})
        pacs = pacs_of(server, "sqlite")
        old, files = study_of("CT", "19990101", 1)
        pacs.store(*files)
        kept, files = study_of("CT", "19990101", 1)
        pacs.store(*files)
        pacs.http.put(f"/api/studies/{kept}/keep")
        pacs.http.post("/api/retention-policies", json={"name": "1y", "max_age_days": 365})
        wait_until_gone(pacs, old)
        assert pacs.search("/studies", {"StudyInstanceUID": kept})
        deadline = time.monotonic() + _DEADLINE
        while not (events := pacs.http.get("/api/audit", params={"actor": "retention", "study_uid": old}).json()):
            assert time.monotonic() < deadline, "the scheduled deletion was not audited"
            time.sleep(0.2)
        assert events[0]["action"] == "delete"
        pacs.close()
        servers.stop(server)

    def test_keep_needs_the_delete_permission_and_an_existing_study(self, servers: ServerFactory) -> None:
        server = servers.start("sqlite")
        pacs = pacs_of(server, "sqlite")
        study, files = study_of("CT", "20200101", 1)
        pacs.store(*files)
        viewer = pacs.mint_token("viewer")
        assert pacs.http.put(f"/api/studies/{study}/keep", headers=pacs.auth(viewer)).status_code == 403
        assert pacs.http.get(f"/api/studies/{study}/keep", headers=pacs.auth(viewer)).json()["keep"] is False
        assert pacs.http.put("/api/studies/1.2.3.4/keep").status_code == 404
        assert pacs.http.delete(f"/api/studies/{study}/keep").json()["keep"] is False
        bad = pacs.http.post("/api/retention-policies", json={"name": "x", "max_age_days": 0})
        assert bad.status_code == 400
        pacs.http.post("/api/retention-policies", json={"name": "dup", "max_age_days": 10})
        duplicate = pacs.http.post("/api/retention-policies", json={"name": "dup", "max_age_days": 10})
        assert duplicate.status_code == 409
        assert "dup" in duplicate.json()["detail"]
        pacs.close()
        servers.stop(server)


def first_uid(study: dict[str, Any]) -> str:
    return str(study["0020000D"]["Value"][0])
