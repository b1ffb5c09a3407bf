"""Forwarding delivered by the bridge (issue #9): real server, real bridge, DCMTK storescp, a second webpacs.

The bridge claims jobs over the API, retrieves by WADO-RS and sends by C-STORE or STOW-RS; the
server never dials out. Each test starts its own bridge (so that no other bridge claims its jobs)
and waits on job states and received files, never on fixed sleeps.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from io import BytesIO
from typing import TYPE_CHECKING, Any

import pydicom
import pytest
from dicomdata import multipart_body, sample_study, split_multipart, uids_of
from dimse_helpers import (
    RunningBridge,
    bundled,
    copy_as_new_instance,
    free_port,
    start_bridge,
    stop,
    wait_for_port,
)
from polling import wait_for
from pydicom.uid import JPEGLSLossless, generate_uid

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    import httpx
    from conftest import LiveServer, ServerFactory  # tests/conftest.py

# Retries every 2 s (ten times), leases of 3 s, the rule engine every second, studies stable after 1 s.
ENV = {
    "WEBPACS_FORWARD_BACKOFF": ",".join(["2"] * 10),
    "WEBPACS_FORWARD_LEASE_SECONDS": "3",
    "WEBPACS_FORWARD_INTERVAL_SECONDS": "1",
    "WEBPACS_STABLE_STUDY_SECONDS": "1",
}
TIMEOUT = 60.0


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)], ids=str)
def archive(request: pytest.FixtureRequest, live_servers: ServerFactory) -> Iterator[LiveServer]:
    """The server whose jobs the bridge delivers, on each index backend."""
    server = live_servers.start(request.param, env=ENV)
    yield server
    live_servers.stop(server)


@pytest.fixture
def api(archive: LiveServer, dcmtk: None) -> Iterator[httpx.Client]:
    """An admin client; afterwards no rule and no unfinished job is left for the next test."""
    with archive.client() as client:
        yield client
        for rule in client.get("/api/forwarding-rules").json():
            client.delete(f"/api/forwarding-rules/{rule['id']}")
        for job in client.get("/api/forwarding-jobs", params={"limit": 1000}).json():
            if job["state"] not in ("done", "failed", "cancelled"):
                client.post(f"/api/forwarding-jobs/{job['id']}/cancel")


def forwarder(server: LiveServer, directory: Path, *extra: str) -> RunningBridge:
    """A bridge claiming jobs five times a second."""
    return start_bridge(server, directory, "--accept-unregistered", "--forward-poll", "0.2", *extra)


@pytest.fixture
def bridge(archive: LiveServer, api: httpx.Client, tmp_path: Path) -> Iterator[RunningBridge]:
    """A bridge of this test only."""
    running = forwarder(archive, tmp_path)
    yield running
    stop(running.process)


def start_storescp(port: int, received: Path, log: Path) -> subprocess.Popen[bytes]:
    """DCMTK storescp (AE STORESCP) writing what it receives into `received`."""
    received.mkdir(exist_ok=True)
    process = subprocess.Popen(
        ["storescp", "-aet", "STORESCP", "+xa", "-od", str(received), str(port)],
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )
    wait_for_port(port, process, log)
    return process


@pytest.fixture
def storescp(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A running storescp: its port and the folder it writes to."""
    port, received = free_port(), tmp_path / "received"
    process = start_storescp(port, received, tmp_path / "storescp.log")
    yield port, received
    stop(process)


def register(api: httpx.Client, ae_title: str, port: int) -> None:
    """(Re-)register a node on this host."""
    api.delete(f"/api/dicom-nodes/{ae_title}")
    response = api.post("/api/dicom-nodes", json={"ae_title": ae_title, "host": "127.0.0.1", "port": port})
    assert response.status_code == 201, response.text


def jobs_of(api: httpx.Client, study_uid: str) -> list[dict[str, Any]]:
    """The study's jobs, newest first."""
    found: list[dict[str, Any]] = api.get("/api/forwarding-jobs", params={"study_uid": study_uid}).json()
    return found


def all_done(api: httpx.Client, study_uid: str) -> list[dict[str, Any]]:
    """The study's jobs once there are some and every one is done, else []."""
    jobs = jobs_of(api, study_uid)
    return jobs if all(job["state"] == "done" for job in jobs) else []


def finished_job(api: httpx.Client, study_uid: str) -> dict[str, Any]:
    """The study's single job once it is done (fails the test if it failed)."""

    def finished() -> dict[str, Any] | None:
        jobs = jobs_of(api, study_uid)
        if len(jobs) == 1 and jobs[0]["state"] in ("done", "failed", "cancelled"):
            return jobs[0]
        return None

    job: dict[str, Any] = wait_for(f"the job of study {study_uid}", finished)
    assert job["state"] == "done", job
    return job


def received_uids(folder: Path) -> set[str]:
    """SOP Instance UIDs of the files storescp wrote."""
    return {str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID) for path in folder.iterdir()}


def make_study(directory: Path, count: int, *, source_ae: str) -> list[Path]:
    """`count` instances of one new CT study (pydicom's CT_small.dcm, new UIDs) written by `source_ae`."""
    study, series = generate_uid(), generate_uid()
    paths = []
    for n in range(count):
        path = directory / f"{study[-12:]}-{n}.dcm"
        dataset = copy_as_new_instance(bundled("CT_small.dcm"), path, study=study, series=series, InstanceNumber=n + 1)
        dataset.file_meta.SourceApplicationEntityTitle = source_ae
        dataset.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def stow(server: LiveServer, parts: list[bytes]) -> str:
    """STOW-RS the parts to `server`; the study UID."""
    body, content_type = multipart_body(parts)
    with server.client() as client:
        response = client.post("/dicomweb/studies", content=body, headers={"Content-Type": content_type})
    assert response.status_code == 200, response.text
    return uids_of(parts[0])[0]


class TestToDicomNode:
    def test_a_rule_on_the_source_ae_forwards_that_modality_s_instances_to_storescp(
        self, archive: LiveServer, api: httpx.Client, bridge: RunningBridge, storescp: tuple[int, Path], tmp_path: Path
    ) -> None:
        port, received = storescp
        register(api, "STORESCP", port)
        rule = {"name": "from-modality", "trigger": "stored", "ae_title": "STORESCP"}
        created = api.post("/api/forwarding-rules", json={**rule, "conditions": {"calling_ae": ["MODALITY*"]}})
        assert created.status_code == 201, created.text
        # Files as a modality wrote them: Source AE Title (0002,0016) in the meta information.
        other, wanted = make_study(tmp_path, 1, source_ae="OTHER"), make_study(tmp_path, 3, source_ae="MODALITY1")
        stow(archive, [path.read_bytes() for path in other])
        study = stow(archive, [path.read_bytes() for path in wanted])
        wait_for("every instance at storescp", lambda: len(list(received.iterdir())) == len(wanted))
        assert received_uids(received) == {str(pydicom.dcmread(p).SOPInstanceUID) for p in wanted}

        # Instances join the rule's pending job; one that arrives once the job is claimed starts
        # another, so the study may have gone in one job or more, each in one attempt.
        jobs = wait_for("the study's jobs to be done", lambda: all_done(api, study))
        assert sum(job["instances_sent"] for job in jobs) == len(wanted)
        assert {job["attempts"] for job in jobs} == {1}
        # Stored before the matching study, so already matched: no job for the other source's study.
        assert jobs_of(api, str(pydicom.dcmread(other[0]).StudyInstanceUID)) == []

    def test_a_rule_on_the_calling_ae_forwards_what_a_modality_sent_by_c_store(
        self, api: httpx.Client, bridge: RunningBridge, storescp: tuple[int, Path], tmp_path: Path
    ) -> None:
        port, received = storescp
        register(api, "STORESCP", port)
        rule = {
            "name": "from-ct",
            "trigger": "stored",
            "ae_title": "STORESCP",
            "conditions": {"calling_ae": ["CT_ROOM_2"]},
        }
        assert api.post("/api/forwarding-rules", json=rule).status_code == 201
        # The files' own meta names another writer: the bridge records who called it instead.
        sent = make_study(tmp_path, 2, source_ae="WORKSTATION")
        subprocess.run(
            ["storescu", "-aet", "CT_ROOM_2", "-aec", bridge.ae_title, "127.0.0.1", str(bridge.port), *map(str, sent)],
            check=True,
            capture_output=True,
            timeout=TIMEOUT,
        )
        wait_for("both instances at storescp", lambda: len(list(received.iterdir())) == len(sent))
        assert received_uids(received) == {str(pydicom.dcmread(p).SOPInstanceUID) for p in sent}

    def test_a_job_to_a_node_that_is_down_is_retried_and_delivered_once_it_is_back(
        self, archive: LiveServer, api: httpx.Client, bridge: RunningBridge, tmp_path: Path
    ) -> None:
        port = free_port()
        register(api, "LATESCP", port)
        _, parts = sample_study(instances=2)
        study = stow(archive, parts)
        sent = api.post(f"/api/studies/{study}/send", json={"ae_title": "LATESCP"})
        assert sent.status_code == 202, sent.text
        failed = wait_for(
            "a failed attempt", lambda: [j for j in jobs_of(api, study) if j["attempts"] >= 1 and j["last_error"]]
        )[0]
        assert failed["state"] in ("pending", "running")
        assert "LATESCP" in failed["last_error"]
        received = tmp_path / "received"
        process = start_storescp(port, received, tmp_path / "storescp.log")
        try:
            job = finished_job(api, study)
        finally:
            stop(process)
        assert job["attempts"] >= 2
        assert received_uids(received) == {uids_of(part)[2] for part in parts}


class TestToDicomweb:
    def test_a_stable_study_goes_transcoded_to_a_second_webpacs_by_stow(
        self, api: httpx.Client, bridge: RunningBridge, archive: LiveServer, live_servers: ServerFactory
    ) -> None:
        peer = live_servers.start("sqlite")
        try:
            created = api.post(
                "/api/forwarding-rules",
                json={
                    "name": "to-peer",
                    "trigger": "stable",
                    "dicomweb_url": f"{peer.url}/dicomweb",
                    "dicomweb_token": peer.token,
                    "transfer_syntax": str(JPEGLSLossless),
                },
            )
            assert created.status_code == 201, created.text
            _, parts = sample_study(instances=2)
            study = stow(archive, parts)
            # One job per quiet period: a slow store may give the study two (each sends what is there).
            wait_for(
                "the study's jobs to be done",
                lambda: sum(job["instances_sent"] for job in all_done(api, study)) >= len(parts),
            )
            with peer.client() as client:
                for part in parts:
                    _, series, sop = uids_of(part)
                    response = client.get(
                        f"/dicomweb/studies/{study}/series/{series}/instances/{sop}",
                        headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'},
                    )
                    assert response.status_code == 200, response.text
                    [stored] = split_multipart(response.content, response.headers["content-type"])
                    arrived = pydicom.dcmread(BytesIO(stored.content))
                    assert arrived.file_meta.TransferSyntaxUID == JPEGLSLossless  # transcoded, stored as sent
                    original = pydicom.dcmread(BytesIO(part))
                    assert (arrived.pixel_array == original.pixel_array).all()  # lossless
        finally:
            live_servers.stop(peer)

    def test_a_refused_token_fails_the_attempt_with_the_peer_s_answer(
        self, api: httpx.Client, bridge: RunningBridge, archive: LiveServer, live_servers: ServerFactory
    ) -> None:
        peer = live_servers.start("sqlite")
        try:
            _, parts = sample_study()
            study = stow(archive, parts)
            body = {"dicomweb_url": f"{peer.url}/dicomweb", "dicomweb_token": "wp_not-a-token"}
            assert api.post(f"/api/studies/{study}/send", json=body).status_code == 202
            refused = wait_for(
                "the peer's refusal as the last error",
                lambda: [j for j in jobs_of(api, study) if "HTTP 401" in j["last_error"]],
            )
            assert refused[0]["state"] in ("pending", "running")  # retried after the back-off
            assert (refused[0]["instances_sent"], refused[0]["instances_total"]) == (0, 1)
        finally:
            live_servers.stop(peer)


class TestLease:
    def test_a_job_held_by_a_killed_bridge_is_delivered_by_another_after_its_lease(
        self, archive: LiveServer, api: httpx.Client, storescp: tuple[int, Path], tmp_path: Path
    ) -> None:
        # A peer that accepts the TCP connection and never answers: the first bridge hangs there.
        with socket.socket() as black_hole:
            black_hole.bind(("127.0.0.1", 0))
            black_hole.listen(8)
            register(api, "SLOWSCP", black_hole.getsockname()[1])
            _, parts = sample_study(instances=2)
            study = stow(archive, parts)
            assert api.post(f"/api/studies/{study}/send", json={"ae_title": "SLOWSCP"}).status_code == 202
            first = forwarder(archive, tmp_path, "--acse-timeout", "120")
            try:
                wait_for(
                    "the first bridge's claim", lambda: [j for j in jobs_of(api, study) if j["state"] == "running"]
                )
            finally:
                os.kill(first.process.pid, signal.SIGKILL)
                first.process.wait()
        port, received = storescp
        register(api, "SLOWSCP", port)  # the node moved; the job keeps its AE title
        second = forwarder(archive, tmp_path)
        try:
            job = finished_job(api, study)
        finally:
            stop(second.process)
        assert job["attempts"] == 2
        assert "lease ran out" in job["last_error"]
        assert received_uids(received) == {uids_of(part)[2] for part in parts}
