"""Forwarding over HTTP (issue #9): rules, the rule engine, the durable queue and its permissions.

Real servers on SQLite and PostgreSQL; the bridge's side of the queue (claim, progress, result) is
played by an HTTP client with the bridge's role, so that every state of a job can be reached on
purpose. Delivery by a real bridge is tests/dimse_bridge/test_outbound.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
from dicomdata import Patient, SeriesSpec, StudySpec, build_instances, part10
from live_pacs import Pacs
from polling import wait_for

if TYPE_CHECKING:
    from collections.abc import Iterator

    from conftest import LiveServer, ServerFactory  # tests/conftest.py

# Short delays so that retries, leases and stable studies happen within a test.
ENV = {
    "WEBPACS_FORWARD_BACKOFF": "1,1",
    "WEBPACS_FORWARD_LEASE_SECONDS": "5",
    "WEBPACS_FORWARD_INTERVAL_SECONDS": "1",
    "WEBPACS_STABLE_STUDY_SECONDS": "1",
}
NODE = "FWDEST"
DONE_STATES = ("done", "failed", "cancelled")


@pytest.fixture(scope="module")
def live(backend: str, live_servers: ServerFactory) -> Iterator[LiveServer]:
    """A server of its own (short forwarding delays), per backend."""
    server = live_servers.start(backend, env=ENV)
    yield server
    live_servers.stop(server)


@pytest.fixture(scope="module")
def server(live: LiveServer, backend: str) -> Iterator[Pacs]:
    """An admin client of that server, which knows the node NODE."""
    pacs = Pacs(live.url, live.token, live.data_dir, backend)
    created = pacs.http.post("/api/dicom-nodes", json={"ae_title": NODE, "host": "127.0.0.1", "port": 104})
    assert created.status_code == 201, created.text
    yield pacs
    pacs.close()


@pytest.fixture
def pacs(server: Pacs) -> Iterator[Pacs]:
    """The server with no rule and no unfinished job left by another test."""
    yield server
    for rule in server.http.get("/api/forwarding-rules").json():
        server.http.delete(f"/api/forwarding-rules/{rule['id']}")
    for job in server.http.get("/api/forwarding-jobs", params={"limit": 1000}).json():
        if job["state"] not in DONE_STATES:
            server.http.post(f"/api/forwarding-jobs/{job['id']}/cancel")


@pytest.fixture
def bridge(pacs: Pacs) -> dict[str, str]:
    """The Authorization header of a service token (the bridge's role)."""
    return pacs.auth(pacs.mint_token("service"))


def study(
    *, modality: str = "CT", instances: int = 1, institution: str = "GENERAL", referring: str = "WELBY^MARCUS"
) -> tuple[str, list[bytes]]:
    """A new study's UID and its instances' Part-10 bytes."""
    patient = Patient(f"FWD^{uuid.uuid4().hex[:6].upper()}", f"F-{uuid.uuid4().hex[:10]}")
    spec = StudySpec(patient, "20240102", f"F{uuid.uuid4().hex[:8]}", (SeriesSpec(modality, instances, size=8),))
    datasets = build_instances(spec)
    for dataset in datasets:
        dataset.InstitutionName = institution
        dataset.ReferringPhysicianName = referring
    return spec.study_uid, [part10(dataset) for dataset in datasets]


def rule(pacs: Pacs, **fields: Any) -> dict[str, Any]:
    """Create a rule (to the registered node unless told otherwise); insists on 201."""
    body = {"name": f"rule-{uuid.uuid4().hex[:8]}", "ae_title": NODE, **fields}
    response = pacs.http.post("/api/forwarding-rules", json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def jobs_of(pacs: Pacs, study_uid: str) -> list[dict[str, Any]]:
    """The study's jobs, newest first."""
    response = pacs.http.get("/api/forwarding-jobs", params={"study_uid": study_uid})
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()
    return found


def send(pacs: Pacs, study_uid: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """Queue a manual send of the study to the registered node; insists on 202."""
    response = pacs.http.post(f"/api/studies/{study_uid}/send", json={"ae_title": NODE}, headers=headers)
    assert response.status_code == 202, response.text
    job: dict[str, Any] = response.json()
    return job


def claim(pacs: Pacs, bridge: dict[str, str]) -> list[dict[str, Any]]:
    """Claim due jobs as the bridge."""
    response = pacs.http.post("/api/forwarding-jobs/claim", json={"limit": 16}, headers=bridge)
    assert response.status_code == 200, response.text
    claimed: list[dict[str, Any]] = response.json()
    return claimed


def claim_job(pacs: Pacs, bridge: dict[str, str], job_id: int) -> dict[str, Any]:
    """Claim until the job with `job_id` is among the claimed (it may be due a moment later)."""
    claimed = wait_for(f"job {job_id} to be claimable", lambda: [j for j in claim(pacs, bridge) if j["id"] == job_id])
    found: dict[str, Any] = claimed[0]
    return found


def result(pacs: Pacs, bridge: dict[str, str], job: dict[str, Any], **report: Any) -> Any:
    """Report an attempt's outcome as the bridge; the response."""
    body = {"lease": job["lease"], "instances_sent": 0, "instances_total": 1, **report}
    return pacs.http.post(f"/api/forwarding-jobs/{job['id']}/result", json=body, headers=bridge)


def engine_caught_up(pacs: Pacs) -> None:
    """Wait until the rule engine matched every change so far (it matches in feed order).

    A marker rule gets a job for a study stored now: then every earlier change was matched too.
    """
    marker = rule(pacs, trigger="stored", conditions={"study_description": ["MARKER*"]})
    patient = Patient("MARKER^M", f"M-{uuid.uuid4().hex[:10]}")
    spec = StudySpec(patient, "20240102", "M1", (SeriesSpec("PT", 1, size=8),), description="MARKER")
    pacs.store(*[part10(ds) for ds in build_instances(spec)])
    wait_for("the marker job", lambda: jobs_of(pacs, spec.study_uid))
    pacs.http.delete(f"/api/forwarding-rules/{marker['id']}")


def webpacs(*args: str, env: dict[str, str]) -> str:
    """Run the `webpacs` CLI; its standard output (fails the test on a non-zero status)."""
    done = subprocess.run([sys.executable, "-m", "dicomweb.cli", *args], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout


class TestRules:
    def test_an_admin_creates_reads_replaces_and_deletes_a_rule_whose_token_stays_hidden(self, pacs: Pacs) -> None:
        created = rule(
            pacs,
            trigger="stored",
            ae_title=None,
            dicomweb_url="http://peer.example:8080/dicomweb/",
            dicomweb_token="secret-peer-token",
            conditions={"modality": ["CT", "MR"], "institution": ["ST*"], "time_window": "20:00-06:00"},
        )
        assert created["dicomweb_url"] == "http://peer.example:8080/dicomweb"
        assert created["has_dicomweb_token"] is True
        assert "secret-peer-token" not in pacs.http.get(f"/api/forwarding-rules/{created['id']}").text
        assert created["conditions"] == {
            "institution": ["ST*"],
            "modality": ["CT", "MR"],
            "time_window": "20:00-06:00",
            "time_zone": "UTC",
        }
        replaced = pacs.http.put(
            f"/api/forwarding-rules/{created['id']}",
            json={"name": created["name"], "trigger": "stable", "ae_title": NODE, "enabled": False},
        )
        assert replaced.status_code == 200, replaced.text
        assert (replaced.json()["trigger"], replaced.json()["ae_title"], replaced.json()["enabled"]) == (
            "stable",
            NODE,
            False,
        )
        assert pacs.http.delete(f"/api/forwarding-rules/{created['id']}").status_code == 204
        assert pacs.http.get(f"/api/forwarding-rules/{created['id']}").status_code == 404

    @pytest.mark.parametrize(
        ("body", "named"),
        [
            ({"conditions": {"colour": ["red"]}}, "'colour'"),
            ({"ae_title": "NOBODY"}, "NOBODY"),
            ({"ae_title": None, "dicomweb_url": "ftp://peer/dicomweb"}, "ftp://peer/dicomweb"),
            ({"dicomweb_url": "http://peer/dicomweb"}, "exactly one destination"),
            ({"conditions": {"time_window": "25:00-06:00"}}, "25:00-06:00"),
            ({"conditions": {"time_window": "20:00-06:00", "time_zone": "Mars/Olympus"}}, "Mars/Olympus"),
            ({"transfer_syntax": "1.2.3.4"}, "1.2.3.4"),
        ],
    )
    def test_a_bad_rule_is_refused_with_a_reason_naming_the_value(
        self, pacs: Pacs, body: dict[str, Any], named: str
    ) -> None:
        response = pacs.http.post(
            "/api/forwarding-rules", json={"name": f"bad-{uuid.uuid4().hex[:8]}", "ae_title": NODE, **body}
        )
        assert response.status_code == 400, response.text
        assert named in response.json()["detail"]

    def test_a_taken_name_is_a_conflict(self, pacs: Pacs) -> None:
        first = rule(pacs)
        response = pacs.http.post("/api/forwarding-rules", json={"name": first["name"], "ae_title": NODE})
        assert response.status_code == 409

    @pytest.mark.parametrize("role", ["viewer", "manager", "service"])
    def test_only_admins_manage_rules(self, pacs: Pacs, role: str) -> None:
        headers = pacs.auth(pacs.mint_token(role))
        response = pacs.http.post("/api/forwarding-rules", json={"name": "x", "ae_title": NODE}, headers=headers)
        assert response.status_code == 403
        assert pacs.http.get("/api/forwarding-rules", headers=headers).status_code == 403


class TestRuleEngine:
    def test_each_matching_stored_instance_joins_one_job_and_others_make_none(self, pacs: Pacs) -> None:
        made = rule(pacs, trigger="stored", conditions={"modality": ["CT"], "institution": ["st. mary*"]})
        ct_study, ct_parts = study(instances=3, institution="ST. MARY'S")
        mr_study, mr_parts = study(modality="MR", institution="ST. MARY'S")
        other_study, other_parts = study(institution="GENERAL")
        pacs.store(*ct_parts, *mr_parts, *other_parts)
        [job] = wait_for("the CT study's job", lambda: [j for j in jobs_of(pacs, ct_study) if j["instances"] == 3])
        assert (job["rule_id"], job["ae_title"], job["state"]) == (made["id"], NODE, "pending")
        engine_caught_up(pacs)
        assert jobs_of(pacs, mr_study) == []
        assert jobs_of(pacs, other_study) == []

    def test_a_stable_study_gets_a_job_for_the_whole_study(self, pacs: Pacs) -> None:
        made = rule(pacs, trigger="stable", conditions={"referring_physician": ["house^*"]})
        mine, parts = study(instances=2, referring="HOUSE^GREGORY")
        pacs.store(*parts)
        jobs = wait_for("the stable study's job", lambda: jobs_of(pacs, mine))
        # One per quiet period: normally one; a store slower than the quiet time makes two.
        assert {(job["instances"], job["requested_by"]) for job in jobs} == {(0, f"rule {made['name']}")}

    def test_a_rule_outside_its_time_window_matches_nothing(self, pacs: Pacs) -> None:
        now = datetime.now(UTC)
        window = f"{(now + timedelta(hours=2)):%H:%M}-{(now + timedelta(hours=3)):%H:%M}"
        rule(pacs, trigger="stored", conditions={"time_window": window})
        outside, parts = study()
        pacs.store(*parts)
        engine_caught_up(pacs)
        assert jobs_of(pacs, outside) == []


class TestQueue:
    def test_a_failed_attempt_is_retried_after_the_back_off_and_fails_after_the_last(
        self, pacs: Pacs, bridge: dict[str, str]
    ) -> None:
        study_uid, parts = study()
        pacs.store(*parts)
        job = send(pacs, study_uid)
        for attempt in (1, 2, 3):
            claimed = claim_job(pacs, bridge, job["id"])
            assert (claimed["state"], claimed["attempts"]) == ("running", attempt)
            answer = result(pacs, bridge, claimed, success=False, error=f"association refused ({attempt})")
            assert answer.status_code == 200, answer.text
        final = answer.json()
        assert (final["state"], final["attempts"], final["last_error"]) == ("failed", 3, "association refused (3)")
        assert final["finished_at"] is not None

    def test_after_a_failure_the_job_waits_for_its_next_attempt_time(self, pacs: Pacs, bridge: dict[str, str]) -> None:
        study_uid, parts = study()
        pacs.store(*parts)
        job = send(pacs, study_uid)
        claimed = claim_job(pacs, bridge, job["id"])
        failed = result(pacs, bridge, claimed, success=False, error="timeout").json()
        assert failed["state"] == "pending"
        delay = datetime.fromisoformat(failed["next_attempt_at"]) - datetime.fromisoformat(failed["updated_at"])
        assert delay == timedelta(seconds=1)

    def test_success_is_done_with_its_progress(self, pacs: Pacs, bridge: dict[str, str]) -> None:
        study_uid, parts = study(instances=2)
        pacs.store(*parts)
        job = send(pacs, study_uid)
        claimed = claim_job(pacs, bridge, job["id"])
        progress = pacs.http.post(
            f"/api/forwarding-jobs/{job['id']}/progress",
            json={"lease": claimed["lease"], "instances_sent": 1, "instances_total": 2},
            headers=bridge,
        )
        assert (progress.json()["instances_sent"], progress.json()["instances_total"]) == (1, 2)
        done = result(pacs, bridge, claimed, success=True, instances_sent=2, instances_total=2).json()
        assert (done["state"], done["instances_sent"], done["attempts"]) == ("done", 2, 1)

    def test_a_claimed_job_is_not_claimed_twice_until_its_lease_runs_out(
        self, pacs: Pacs, bridge: dict[str, str]
    ) -> None:
        study_uid, parts = study()
        pacs.store(*parts)
        job = send(pacs, study_uid)
        first = claim_job(pacs, bridge, job["id"])
        assert [j for j in claim(pacs, bridge) if j["id"] == job["id"]] == []
        # The first claimant went silent: after its lease (5 s here) another takes the job.
        second = claim_job(pacs, bridge, job["id"])
        assert second["lease"] != first["lease"]
        assert second["attempts"] == 2
        assert "lease ran out" in second["last_error"]
        stale = result(pacs, bridge, first, success=True)
        assert stale.status_code == 409
        assert "no longer leased" in stale.json()["detail"]
        assert result(pacs, bridge, second, success=True).json()["state"] == "done"

    def test_a_cancelled_job_is_never_claimed_and_its_bridge_is_told_to_stop(
        self, pacs: Pacs, bridge: dict[str, str]
    ) -> None:
        study_uid, parts = study()
        pacs.store(*parts)
        job = send(pacs, study_uid)
        claimed = claim_job(pacs, bridge, job["id"])
        cancelled = pacs.http.post(f"/api/forwarding-jobs/{job['id']}/cancel")
        assert cancelled.json()["state"] == "cancelled"
        progress = pacs.http.post(
            f"/api/forwarding-jobs/{job['id']}/progress", json={"lease": claimed["lease"]}, headers=bridge
        )
        assert progress.status_code == 409
        assert [j for j in claim(pacs, bridge) if j["id"] == job["id"]] == []

    def test_retry_makes_a_failed_job_due_now_with_fresh_attempts(self, pacs: Pacs, bridge: dict[str, str]) -> None:
        study_uid, parts = study()
        pacs.store(*parts)
        job = send(pacs, study_uid)
        pacs.http.post(f"/api/forwarding-jobs/{job['id']}/cancel")
        retried = pacs.http.post(f"/api/forwarding-jobs/{job['id']}/retry")
        assert (retried.json()["state"], retried.json()["attempts"]) == ("pending", 0)
        assert claim_job(pacs, bridge, job["id"])["attempts"] == 1
        assert pacs.http.post(f"/api/forwarding-jobs/{job['id']}/retry").status_code == 409  # running

    def test_a_send_is_audited_with_its_study_and_outcome(self, pacs: Pacs, bridge: dict[str, str]) -> None:
        study_uid, parts = study()
        pacs.store(*parts)
        job = send(pacs, study_uid)
        result(pacs, bridge, claim_job(pacs, bridge, job["id"]), success=True)

        def sends() -> list[str]:
            events = pacs.http.get("/api/audit", params={"study_uid": study_uid, "action": "send"}).json()
            return sorted(event["outcome"] for event in events) if len(events) == 2 else []

        assert wait_for("two send events", sends) == ["success", "success"]


class TestPermissions:
    def test_a_viewer_may_not_send(self, pacs: Pacs) -> None:
        study_uid, parts = study()
        pacs.store(*parts)
        viewer = pacs.auth(pacs.mint_token("viewer"))
        response = pacs.http.post(f"/api/studies/{study_uid}/send", json={"ae_title": NODE}, headers=viewer)
        assert response.status_code == 403

    def test_a_filtered_manager_sends_their_study_but_a_foreign_one_is_not_found(self, pacs: Pacs) -> None:
        mine, my_parts = study(referring="HOUSE^GREGORY")
        foreign, foreign_parts = study(referring="WELBY^MARCUS")
        pacs.store(*my_parts, *foreign_parts)
        manager = pacs.auth(pacs.log_in_new_user("manager", {"ReferringPhysicianName": ["HOUSE^*"]}))
        assert send(pacs, mine, headers=manager)["requested_by"].startswith("user manager-")
        response = pacs.http.post(f"/api/studies/{foreign}/send", json={"ae_title": NODE}, headers=manager)
        assert response.status_code == 404
        assert jobs_of(pacs, foreign) == []

    def test_an_unknown_study_or_destination_is_refused(self, pacs: Pacs) -> None:
        assert pacs.http.post("/api/studies/1.2.3.999/send", json={"ae_title": NODE}).status_code == 404
        study_uid, parts = study()
        pacs.store(*parts)
        response = pacs.http.post(f"/api/studies/{study_uid}/send", json={"ae_title": "NOBODY"})
        assert response.status_code == 400
        assert "NOBODY" in response.json()["detail"]

    def test_managers_list_and_retry_jobs_but_only_admins_cancel(self, pacs: Pacs) -> None:
        study_uid, parts = study()
        pacs.store(*parts)
        job = send(pacs, study_uid)
        manager = pacs.auth(pacs.mint_token("manager"))
        assert [j["id"] for j in pacs.http.get("/api/forwarding-jobs", headers=manager).json()][:1] == [job["id"]]
        assert pacs.http.post(f"/api/forwarding-jobs/{job['id']}/retry", headers=manager).status_code == 200
        assert pacs.http.post(f"/api/forwarding-jobs/{job['id']}/cancel", headers=manager).status_code == 403

    def test_a_filtered_manager_may_not_list_the_whole_queue(self, pacs: Pacs) -> None:
        manager = pacs.auth(pacs.log_in_new_user("manager", {"ReferringPhysicianName": ["HOUSE^*"]}))
        assert pacs.http.get("/api/forwarding-jobs", headers=manager).status_code == 403

    @pytest.mark.parametrize("role", ["viewer", "manager"])
    def test_only_the_bridge_role_claims_jobs(self, pacs: Pacs, role: str) -> None:
        headers = pacs.auth(pacs.mint_token(role))
        response = pacs.http.post("/api/forwarding-jobs/claim", json={"limit": 1}, headers=headers)
        assert response.status_code == 403


class TestCommandLine:
    def test_rules_and_jobs_are_managed_from_the_shell_on_the_same_database(
        self, pacs: Pacs, live: LiveServer, live_servers: ServerFactory
    ) -> None:
        env = {**os.environ, "WEBPACS_DATA_DIR": str(live.data_dir)}
        if (database_url := live_servers.database_url(live)) is not None:
            env["WEBPACS_DATABASE_URL"] = database_url
        printed = webpacs(
            "forward", "add-rule", "from-shell", "--trigger", "stored", "--ae-title", NODE,
            "--conditions", '{"modality": ["CT"]}', env=env,
        )  # fmt: skip
        rule_id = int(printed.split()[-1])
        assert pacs.http.get(f"/api/forwarding-rules/{rule_id}").json()["conditions"] == {"modality": ["CT"]}
        study_uid, parts = study()
        pacs.store(*parts)
        [job] = wait_for("the rule's job", lambda: jobs_of(pacs, study_uid))
        assert webpacs("forward", "cancel", str(job["id"]), env=env) == ""
        listed = webpacs("forward", "jobs", "--state", "cancelled", env=env)
        assert f"{job['id']}\tcancelled\t0\t{study_uid}\t{NODE}" in listed
