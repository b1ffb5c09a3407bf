"""Access control over HTTP (issue #5): users and sessions, study filters on every route, share links,
the audit trail — against the real server on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import json
import uuid
from typing import TYPE_CHECKING, Any

import pytest
from dicomdata import Patient, SeriesSpec, StudySpec, build_instances, header_of, part10, uids_of

if TYPE_CHECKING:
    import httpx
    from live_pacs import Pacs

PASSWORD = "a long enough password"
ACCEPT_AS_STORED = {"Accept": "multipart/related; type=application/dicom; transfer-syntax=*"}


def _study(*, referring: str = "WELBY^MARCUS", institution: str = "GENERAL", patient: Patient | None = None) -> bytes:
    """One instance of a new study with the given referring physician and institution."""
    patient = patient or Patient(f"ACCESS^{uuid.uuid4().hex[:6].upper()}", f"P-{uuid.uuid4().hex[:10]}")
    spec = StudySpec(patient, "20240102", f"X{uuid.uuid4().hex[:8]}", (SeriesSpec("MR", 1, size=8),))
    (dataset,) = build_instances(spec)
    dataset.ReferringPhysicianName = referring
    dataset.InstitutionName = institution
    return part10(dataset)


def _paths(data: bytes) -> dict[str, str]:
    study, series, sop = uids_of(data)
    instance = f"/dicomweb/studies/{study}/series/{series}/instances/{sop}"
    return {
        "study": f"/dicomweb/studies/{study}",
        "study metadata": f"/dicomweb/studies/{study}/metadata",
        "series": f"/dicomweb/studies/{study}/series/{series}",
        "series QIDO": f"/dicomweb/studies/{study}/series",
        "instance": instance,
        "instance metadata": f"{instance}/metadata",
        "frame": f"{instance}/frames/1",
        "WADO-URI": f"/wado?requestType=WADO&studyUID={study}&seriesUID={series}&objectUID={sop}",
    }


@pytest.fixture(scope="module")
def two_studies(pacs: Pacs) -> tuple[bytes, bytes]:
    """A study referred by HOUSE (at St. Mary's) and one referred by WELBY."""
    mine, foreign = _study(referring="HOUSE^GREGORY", institution="ST. MARY'S"), _study()
    pacs.store(mine, foreign)
    return mine, foreign


class TestLogin:
    def test_a_user_logs_in_and_sees_who_they_are(self, pacs: Pacs) -> None:
        token = pacs.log_in_new_user("radiologist")
        me = pacs.http.get("/api/me", headers=pacs.auth(token)).json()
        assert me["role"] == "radiologist"
        assert me["kind"] == "user"
        assert set(me["permissions"]) == {"read", "store", "share"}

    def test_a_wrong_password_answers_401_and_is_audited(self, pacs: Pacs) -> None:
        username = f"victim-{uuid.uuid4().hex[:8]}"
        pacs.http.post("/api/users", json={"username": username, "password": PASSWORD, "role": "viewer"})
        response = pacs.http.post("/api/auth/login", json={"username": username, "password": "wrong password!"})
        assert response.status_code == 401
        events = pacs.http.get("/api/audit", params={"user": username, "action": "login"}).json()
        assert [event["outcome"] for event in events] == ["failure"]

    def test_repeated_failures_are_rate_limited(self, pacs: Pacs) -> None:
        username = f"target-{uuid.uuid4().hex[:8]}"
        pacs.http.post("/api/users", json={"username": username, "password": PASSWORD, "role": "viewer"})
        statuses = [
            pacs.http.post("/api/auth/login", json={"username": username, "password": f"guess {n:04d}"}).status_code
            for n in range(6)
        ]
        assert statuses == [401] * 5 + [429]
        refused = pacs.http.post("/api/auth/login", json={"username": username, "password": PASSWORD})
        assert refused.status_code == 429  # even the right password, until the window passes
        assert int(refused.headers["retry-after"]) > 0

    def test_a_refresh_token_renews_the_session_once(self, pacs: Pacs) -> None:
        username = f"refresher-{uuid.uuid4().hex[:8]}"
        pacs.http.post("/api/users", json={"username": username, "password": PASSWORD, "role": "viewer"})
        first = pacs.http.post("/api/auth/login", json={"username": username, "password": PASSWORD}).json()
        renewed = pacs.http.post("/api/auth/refresh", json={"refresh_token": first["refresh_token"]})
        assert renewed.status_code == 201
        assert pacs.http.get("/api/me", headers=pacs.auth(renewed.json()["access_token"])).status_code == 200
        again = pacs.http.post("/api/auth/refresh", json={"refresh_token": first["refresh_token"]})
        assert again.status_code == 401

    def test_a_viewer_cannot_manage_users(self, pacs: Pacs) -> None:
        viewer = pacs.log_in_new_user("viewer")
        response = pacs.http.get("/api/users", headers=pacs.auth(viewer))
        assert response.status_code == 403


class TestStudyFilters:
    def test_qido_shows_only_the_studies_of_the_filter(self, pacs: Pacs, two_studies: tuple[bytes, bytes]) -> None:
        mine, foreign = two_studies
        token = pacs.log_in_new_user("referring", {"ReferringPhysicianName": ["HOUSE^*"]})
        for path in ("/dicomweb/studies", "/dicomweb/series", "/dicomweb/instances"):
            found = pacs.http.get(path, headers=pacs.auth(token), params={"limit": "5000"}).json()
            studies = {item["0020000D"]["Value"][0] for item in found}
            assert uids_of(mine)[0] in studies, path
            assert uids_of(foreign)[0] not in studies, path

    def test_a_foreign_study_is_404_on_every_retrieve_route(self, pacs: Pacs, two_studies: tuple[bytes, bytes]) -> None:
        mine, foreign = two_studies
        token = pacs.log_in_new_user("referring", {"ReferringPhysicianName": ["HOUSE^*"]})
        headers = {**pacs.auth(token), **ACCEPT_AS_STORED}
        for name, path in _paths(foreign).items():
            assert pacs.http.get(path, headers=headers).status_code == 404, name
        for name, path in _paths(mine).items():
            accept = {} if "metadata" in name or "QIDO" in name or name in {"frame", "WADO-URI"} else ACCEPT_AS_STORED
            assert pacs.http.get(path, headers={**pacs.auth(token), **accept}).status_code == 200, name

    def test_a_guessed_uid_looks_like_a_missing_study(self, pacs: Pacs, two_studies: tuple[bytes, bytes]) -> None:
        _, foreign = two_studies
        token = pacs.log_in_new_user("referring", {"ReferringPhysicianName": ["HOUSE^*"]})
        hidden = pacs.http.get(_paths(foreign)["study metadata"], headers=pacs.auth(token))
        missing = pacs.http.get("/dicomweb/studies/1.2.3.4.5.6.7/metadata", headers=pacs.auth(token))
        assert (hidden.status_code, missing.status_code) == (404, 404)
        assert hidden.json()["detail"].replace(uids_of(foreign)[0], "UID") == missing.json()["detail"].replace(
            "1.2.3.4.5.6.7", "UID"
        )

    def test_a_filtered_manager_cannot_delete_a_foreign_study(
        self, pacs: Pacs, two_studies: tuple[bytes, bytes]
    ) -> None:
        _, foreign = two_studies
        token = pacs.log_in_new_user("manager", {"InstitutionName": ["ST. MARY*"]})
        assert pacs.http.delete(_paths(foreign)["study"], headers=pacs.auth(token)).status_code == 404
        assert pacs.has_instance(uids_of(foreign)[2])

    def test_a_personal_token_carries_the_filter(self, pacs: Pacs, two_studies: tuple[bytes, bytes]) -> None:
        mine, foreign = two_studies
        session = pacs.log_in_new_user("referring", {"ReferringPhysicianName": ["HOUSE^*"]})
        minted = pacs.http.post("/api/me/tokens", json={"name": "script"}, headers=pacs.auth(session))
        assert minted.status_code == 201, minted.text
        token = minted.json()["token"]
        assert pacs.http.get(_paths(mine)["study metadata"], headers=pacs.auth(token)).status_code == 200
        assert pacs.http.get(_paths(foreign)["study metadata"], headers=pacs.auth(token)).status_code == 404


def _share(pacs: Pacs, data: bytes, **fields: Any) -> dict[str, Any]:
    response = pacs.http.post("/api/share-links", json={"validity": "1d", **fields})
    assert response.status_code == 201, response.text
    return dict(response.json())


def _redeem(pacs: Pacs, url: str, **factors: str) -> httpx.Response:
    return pacs.http.post("/api/share-links/redeem", json={"token": url.rsplit("/", 1)[1], **factors}, headers={})


class TestShareLinks:
    def test_a_link_by_accession_opens_that_study_only(self, pacs: Pacs) -> None:
        patient = Patient(f"SHARED^{uuid.uuid4().hex[:6].upper()}", f"P-{uuid.uuid4().hex[:10]}")
        shared, other_of_same_patient = _study(patient=patient), _study(patient=patient)
        pacs.store(shared, other_of_same_patient)
        accession = str(header_of(shared).AccessionNumber)
        link = _share(pacs, shared, accession_number=accession, pin="2468")
        assert "/share/wps_" in link["url"]
        assert link["has_pin"] is True

        assert _redeem(pacs, link["url"]).status_code == 401  # the PIN is missing
        assert _redeem(pacs, link["url"], pin="1357").status_code == 401
        opened = _redeem(pacs, link["url"], pin="2468")
        assert opened.status_code == 200, opened.text
        session = pacs.auth(opened.json()["access_token"])
        assert opened.json()["study_uid"] == uids_of(shared)[0]

        listed = pacs.http.get("/dicomweb/studies", params={"PatientID": patient.id}, headers=session).json()
        assert [item["0020000D"]["Value"][0] for item in listed] == [uids_of(shared)[0]]
        assert pacs.http.get(_paths(shared)["study metadata"], headers=session).status_code == 200
        assert pacs.http.get(_paths(other_of_same_patient)["study metadata"], headers=session).status_code == 404
        assert pacs.http.delete(_paths(shared)["study"], headers=session).status_code == 403
        assert pacs.http.get("/api/share-links", headers=session).status_code == 403

    def test_a_revoked_link_is_refused_with_its_sessions(self, pacs: Pacs) -> None:
        data = _study()
        pacs.store(data)
        link = _share(pacs, data, study_uid=uids_of(data)[0])
        session = pacs.auth(_redeem(pacs, link["url"]).json()["access_token"])
        assert pacs.http.get(_paths(data)["study metadata"], headers=session).status_code == 200
        revoked = pacs.http.delete(f"/api/share-links/{link['id']}")
        assert revoked.status_code == 200
        assert revoked.json()["revoked_at"] is not None
        assert _redeem(pacs, link["url"]).status_code == 401
        assert pacs.http.get(_paths(data)["study metadata"], headers=session).status_code == 401

    def test_a_birth_date_link_asks_for_the_birth_date(self, pacs: Pacs) -> None:
        data = _study()
        pacs.store(data)
        link = _share(pacs, data, study_uid=uids_of(data)[0], require_birth_date=True)
        challenge = pacs.http.post("/api/share-links/challenge", json={"token": link["url"].rsplit("/", 1)[1]})
        assert challenge.json() == {"has_pin": False, "requires_birth_date": True}
        birth_date = str(header_of(data).PatientBirthDate)
        assert _redeem(pacs, link["url"], birth_date="19000101").status_code == 401
        assert _redeem(pacs, link["url"], birth_date=birth_date).status_code == 200

    def test_a_tampered_token_is_refused(self, pacs: Pacs) -> None:
        data = _study()
        pacs.store(data)
        link = _share(pacs, data, study_uid=uids_of(data)[0])
        assert _redeem(pacs, link["url"][:-3] + "xyz").status_code == 401
        session = _redeem(pacs, link["url"]).json()["access_token"]
        header, payload, signature = session.split(".")
        claims = json.loads(_b64decode(payload))
        claims["study"] = "1.2.3"
        forged = f"{header}.{_b64encode(json.dumps(claims).encode())}.{signature}"
        assert pacs.http.get("/dicomweb/studies", headers=pacs.auth(forged)).status_code == 401

    def test_links_are_listed_per_study_and_uses_are_audited(self, pacs: Pacs) -> None:
        data = _study()
        pacs.store(data)
        study = uids_of(data)[0]
        link = _share(pacs, data, study_uid=study)
        _redeem(pacs, link["url"])
        listed = pacs.http.get("/api/share-links", params={"study_uid": study}).json()
        assert [(item["id"], item["uses"], item["url"]) for item in listed] == [(link["id"], 1, None)]
        events = pacs.http.get("/api/audit", params={"study_uid": study}).json()
        assert {"share", "share-use"} <= {event["action"] for event in events}
        exported = pacs.http.get("/api/audit/export", params={"study_uid": study})
        assert exported.status_code == 200
        assert link["url"].rsplit("/", 1)[1] not in exported.text  # tokens never reach the log


class TestAuditTrail:
    def test_views_and_refusals_are_recorded_with_who_and_where(
        self, pacs: Pacs, two_studies: tuple[bytes, bytes]
    ) -> None:
        _, foreign = two_studies
        token = pacs.log_in_new_user("referring", {"ReferringPhysicianName": ["HOUSE^*"]})
        me = pacs.http.get("/api/me", headers=pacs.auth(token)).json()["name"]
        pacs.http.get(_paths(foreign)["study metadata"], headers=pacs.auth(token))
        events = pacs.http.get("/api/audit", params={"user": me, "study_uid": uids_of(foreign)[0]}).json()
        assert [(e["action"], e["outcome"], e["source"]) for e in events] == [("view", "denied", "127.0.0.1")]

    def test_the_server_log_holds_no_password_or_token(self, pacs: Pacs) -> None:
        data = _study()
        pacs.store(data)
        link = _share(pacs, data, study_uid=uids_of(data)[0])
        token = link["url"].rsplit("/", 1)[1]
        session = _redeem(pacs, link["url"]).json()["access_token"]
        pacs.http.get(f"/share/{token}", headers={})
        pacs.http.get(_paths(data)["study metadata"], headers=pacs.auth(session))
        pacs.log_in_new_user("viewer")
        log = (pacs.data_dir / "server.log").read_text()
        assert "GET /share/…" in log
        for secret in (PASSWORD, token, session, pacs.token):
            assert secret not in log

    def test_only_admins_read_the_audit_log(self, pacs: Pacs) -> None:
        token = pacs.log_in_new_user("manager")
        assert pacs.http.get("/api/audit", headers=pacs.auth(token)).status_code == 403


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
