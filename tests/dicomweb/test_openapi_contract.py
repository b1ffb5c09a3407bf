"""The served OpenAPI spec is true of the real server, on SQLite and PostgreSQL (issue #3).

schemathesis generates requests from `/openapi.json` for every GET operation and the management API and
checks each answer against the spec: no 5xx, only documented status codes and media types, bodies that
match their schemas. Path parameters are now random, now the UIDs of instances the archive holds, so
the 404 and the 200 answers are both reached. Generation is deterministic: CI sends the same requests
on every run. Then a Python client generated from the committed spec (openapi-python-client, into a
temporary folder) drives the server as a script would.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import httpx
import pytest
import schemathesis
import yaml
from dicomdata import bundled, multipart_body, sample_study, uids_of
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

if TYPE_CHECKING:
    from collections.abc import Iterator
    from types import ModuleType

    from _pytest.mark import ParameterSet
    from conftest import ServerFactory  # tests/conftest.py
    from schemathesis import Case
    from schemathesis.schemas import BaseSchema

COMMITTED: Final = Path(__file__).resolve().parents[2] / "openapi" / "webpacs.yaml"
CHECKS: Final = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
# Requests per operation and generation mode: enough to reach every documented answer, few enough
# for the module to stay within a few minutes on two cores.
MAX_EXAMPLES: Final = 25
FRAME_LISTS: Final = ("1", "3", "2,1", "1,1")
AE_TITLE: Final = "CONTRACT_SCU"
NODE: Final = {"ae_title": AE_TITLE, "host": "127.0.0.1", "port": 11112}
CONTRACT_USER: Final = {"username": "contract-user", "password": "contract password", "role": "viewer"}
# Valid requests of these may all miss: an id drawn at random rarely names a token or a link, a random
# refresh or share-link token is never a live one, and personal tokens belong to users, not to the
# admin API token the test runs with.
MAY_NEVER_SUCCEED: Final = {
    ("DELETE", "/api/tokens/{token_id}"),
    ("DELETE", "/api/share-links/{link_id}"),
    ("POST", "/api/auth/refresh"),
    ("POST", "/api/share-links/challenge"),
    ("POST", "/api/share-links/redeem"),
    ("GET", "/api/me/tokens"),
    ("POST", "/api/me/tokens"),
    ("DELETE", "/api/me/tokens/{token_id}"),
    # A bridge's lease is handed out by a claim, never generated.
    ("POST", "/api/forwarding-jobs/{job_id}/progress"),
    ("POST", "/api/forwarding-jobs/{job_id}/result"),
    # Study management: a generated patient or target study is never one the archive holds (and
    # moving the stocked series would take them from the other operations), and this server keeps
    # no recycle bin (WEBPACS_RECYCLE_DAYS=0): tests/dicomweb/test_study_management.py covers them.
    ("POST", "/api/patients/merge"),
    ("POST", "/api/studies/{study}/series/{series}/move"),
    ("POST", "/api/recycle-bin/{study}/restore"),
    ("DELETE", "/api/recycle-bin/{study}"),
}


@dataclass(frozen=True)
class Stocked:
    """A live server (its URL and admin token) and what its archive holds."""

    url: str
    token: str
    admin_token_id: int
    instances: tuple[tuple[str, str, str], ...]  # (study, series, instance) UIDs


@pytest.fixture(scope="module")
def stocked(backend: str, live_servers: ServerFactory) -> Iterator[Stocked]:
    """A server holding a two-instance CT study, a three-frame instance and a JPEG one, and one DICOM node."""
    server = live_servers.start(backend)
    try:
        _, ct = sample_study(instances=2)
        _, multiframe = sample_study(frames=3)
        parts = [*ct, *multiframe, bundled("SC_rgb_jpeg_dcmtk.dcm")]
        body, content_type = multipart_body(parts)
        with server.client() as http:
            stored = http.post("/dicomweb/studies", content=body, headers={"Content-Type": content_type})
            assert stored.status_code == 200, stored.text
            assert http.post("/api/dicom-nodes", json=NODE).status_code == 201
            assert http.post("/api/users", json=CONTRACT_USER).status_code == 201
            tokens = http.get("/api/tokens").json()
        (admin_id,) = (token["id"] for token in tokens if token["name"] == "tests")
        yield Stocked(server.url, server.token, admin_id, tuple(uids_of(part) for part in parts))
    finally:
        live_servers.stop(server)


@pytest.fixture(scope="module")
def api_schema(stocked: Stocked) -> BaseSchema:
    """The spec as the server serves it, set to call that server with the admin token."""
    config = schemathesis.Config.from_dict({"base-url": stocked.url, "headers": _auth(stocked)})
    return schemathesis.openapi.from_url(f"{stocked.url}/openapi.json", config=config)


def _under_contract() -> list[ParameterSet]:
    # Reads anywhere, and all of the management API; not STOW-RS (a DICOM body) nor DICOMweb deletes,
    # which would empty the archive the other operations are checked against. Listed from the
    # committed spec, which test_openapi.py holds equal to the served one. Invalid requests are
    # generated where the spec constrains something: a body, a query, a typed path parameter.
    spec = yaml.safe_load(COMMITTED.read_text(encoding="utf-8"))
    cases = []
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method != "get" and not path.startswith("/api/"):
                continue
            modes = [GenerationMode.POSITIVE]
            parameters = operation.get("parameters", [])
            if "requestBody" in operation or any(_constrained(parameter) for parameter in parameters):
                modes.append(GenerationMode.NEGATIVE)
            for mode in modes:
                identifier = f"{operation['operationId']}-{mode.value}"
                cases.append(pytest.param(method.upper(), path, mode, id=identifier))
    return cases


def _constrained(parameter: dict[str, Any]) -> bool:
    return bool(parameter["in"] != "path" or parameter["schema"] != {"type": "string"})


class TestTheServerKeepsToItsSpec:
    @pytest.mark.parametrize(("method", "path", "mode"), _under_contract())
    def test_answers_generated_requests_as_documented(
        self, api_schema: BaseSchema, stocked: Stocked, method: str, path: str, mode: GenerationMode
    ) -> None:
        operation = api_schema[path][method]
        statuses: list[int] = []

        @settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(mode), data=st.data())
        def exchange(case: Case, data: st.DataObject) -> None:
            _aim_at_stored_data(case, data, stocked)
            statuses.append(case.call_and_validate(checks=CHECKS).status_code)

        exchange()
        if mode is GenerationMode.POSITIVE and (method, path) not in MAY_NEVER_SUCCEED:
            assert any(200 <= status < 300 for status in statuses), f"no request succeeded: {sorted(set(statuses))}"


def _aim_at_stored_data(case: Case, data: st.DataObject, stocked: Stocked) -> None:
    """Half of the time, name what the archive holds instead of the random values generated."""
    path = case.path_parameters
    if path and path.get("token_id") == stocked.admin_token_id:
        path["token_id"] = stocked.admin_token_id + 1_000_000  # never revoke the token the test runs with
    if not data.draw(st.booleans(), label="aim at stored data"):
        return
    study, series, instance = data.draw(st.sampled_from(stocked.instances), label="stored instance")
    if case.operation.path == "/api/auth/login":
        case.body = {key: CONTRACT_USER[key] for key in ("username", "password")}
    if case.operation.path == "/api/share-links" and case.method == "POST":
        case.body = {"validity": "1d", "study_uid": study}
    if case.operation.path == "/api/studies/{study}/attachments" and case.method == "POST":
        case.body = {"title": "Contract report", "text": "Generated by the contract test."}
    if case.operation.path == "/api/studies/{study}" and case.method == "PATCH":
        case.body = {"StudyDescription": "Contract edit"}  # generated bodies carry unknown keys, refused
    if case.operation.path.startswith(("/api/forwarding-", "/api/studies/{study}/send")):
        _aim_at_forwarding(case, stocked, study)
    if path:
        named = {
            "study": study,
            "series": series,
            "instance": instance,
            "ae_title": AE_TITLE,
            "tag": "7FE00010",
            "username": CONTRACT_USER["username"],
        }
        path.update({key: value for key, value in named.items() if key in path})
        if "ae_title" in path:  # an earlier PUT may have renamed it, a DELETE removed it
            httpx.post(f"{stocked.url}/api/dicom-nodes", json=NODE, headers=_auth(stocked), timeout=30)
        if "username" in path:  # an earlier DELETE may have removed it
            httpx.post(f"{stocked.url}/api/users", json=CONTRACT_USER, headers=_auth(stocked), timeout=30)
        if "frames" in path:
            path["frames"] = data.draw(st.sampled_from(FRAME_LISTS), label="frame list")
    if case.operation.path == "/wado":
        case.query = {
            **(case.query or {}),
            "requestType": "WADO",
            "studyUID": study,
            "seriesUID": series,
            "objectUID": instance,
        }


def _aim_at_forwarding(case: Case, stocked: Stocked, study: str) -> None:
    """A valid destination (the registered node) in the body, a rule or job that exists in the path."""
    with httpx.Client(base_url=stocked.url, headers=_auth(stocked), timeout=30) as http:
        http.post("/api/dicom-nodes", json=NODE)  # an earlier PUT may have renamed it, a DELETE removed it
        rule = {"name": f"contract-{uuid.uuid4().hex[:8]}", "ae_title": AE_TITLE}
        if case.method in ("POST", "PUT") and case.operation.path in (
            "/api/forwarding-rules",
            "/api/forwarding-rules/{rule_id}",
        ):
            case.body = rule
        if case.operation.path == "/api/studies/{study}/send":
            case.body = {"ae_title": AE_TITLE}
        if "rule_id" in (case.path_parameters or {}):
            case.path_parameters["rule_id"] = http.post("/api/forwarding-rules", json=rule).json()["id"]
        if "job_id" in (case.path_parameters or {}):
            case.path_parameters["job_id"] = http.post(
                f"/api/studies/{study}/send", json={"ae_title": AE_TITLE}
            ).json()["id"]


def _auth(stocked: Stocked) -> dict[str, str]:
    return {"Authorization": f"Bearer {stocked.token}"}


class TestTheSpecIsServed:
    def test_without_a_token_and_declares_the_bearer_scheme(self, stocked: Stocked) -> None:
        response = httpx.get(f"{stocked.url}/openapi.json", timeout=30)
        assert response.status_code == 200
        spec = response.json()
        scheme = spec["components"]["securitySchemes"]["bearerAuth"]
        assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
        assert spec["security"] == [{"bearerAuth": []}]
        assert spec["paths"]["/healthz"]["get"]["security"] == []
        assert spec["paths"]["/openapi.json"]["get"]["security"] == []


class TestWhatFuzzingFound:
    """Requests that once answered 500 (most on PostgreSQL, which stores no NUL): each is the client's error."""

    @pytest.mark.parametrize(
        ("method", "url", "body"),
        [
            ("GET", "/dicomweb/studies?PatientName=A%00B", None),
            ("GET", "/dicomweb/studies?offset=99999999999999999999999", None),
            ("GET", "/dicomweb/studies/1.2%00.3", None),
            ("GET", "/dicomweb/studies/1.2%00.3/metadata", None),
            ("GET", "/wado?requestType=WADO&studyUID=1%00&seriesUID=2&objectUID=3", None),
            ("POST", "/api/tokens", {"name": "A\x00B", "role": "viewer"}),
            ("POST", "/api/tokens", {"name": "x" * 201, "role": "viewer"}),
            ("POST", "/api/tokens", {"name": "forever", "role": "viewer", "valid_days": 78300042}),
            ("DELETE", "/api/tokens/1032078681043360327034470400", None),
            ("POST", "/api/dicom-nodes", {"ae_title": "NUL", "host": "h", "port": 104, "description": "A\x00B"}),
        ],
        ids=lambda value: value if isinstance(value, str) else None,
    )
    def test_is_answered_400(self, stocked: Stocked, method: str, url: str, body: dict[str, Any] | None) -> None:
        response = httpx.request(method, stocked.url + url, json=body, headers=_auth(stocked), timeout=30)
        assert response.status_code == 400, response.text
        assert response.headers["content-type"] == "application/problem+json"


# The generator knows no DICOM media types: binary answers reach the caller as raw bytes (a File).
CLIENT_CONFIG: Final = {
    "post_hooks": [],  # no formatter over the generated code
    "content_type_overrides": {
        media_type: "application/octet-stream"
        for media_type in (
            "application/dicom",
            'multipart/related; type="application/dicom"',
            'multipart/related; type="application/dicom+xml"',
            'multipart/related; type="application/octet-stream"',
            "application/jsonl",
            "image/jpeg",  # rendered images and thumbnails
            'multipart/related; type="image/jpeg"',
        )
    },
}


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    """The package openapi-python-client generates from the committed spec, imported from a temporary folder."""
    where = tmp_path_factory.mktemp("generated")
    config = where / "config.json"
    config.write_text(json.dumps(CLIENT_CONFIG))
    command = [sys.executable, "-m", "openapi_python_client", "generate", "--path", str(COMMITTED)]
    command += ["--meta", "none", "--config", str(config), "--output-path", str(where / "webpacs_client")]
    completed = subprocess.run([*command, "--fail-on-warning"], capture_output=True, text=True, check=False)
    assert completed.returncode == 0, f"the generator balked at the spec: {completed.stdout}{completed.stderr}"
    sys.path.insert(0, str(where))
    try:
        yield importlib.import_module("webpacs_client")
    finally:
        sys.path.remove(str(where))
        for name in [name for name in sys.modules if name.partition(".")[0] == "webpacs_client"]:
            del sys.modules[name]


def _operation(name: str) -> Any:
    """A generated operation module, e.g. 'admin.create_token'."""
    return importlib.import_module(f"webpacs_client.api.{name}")


class TestAGeneratedClient:
    def test_mints_a_viewer_token_that_finds_a_stored_study(self, generated: ModuleType, stocked: Stocked) -> None:
        models = importlib.import_module("webpacs_client.models")
        admin = generated.AuthenticatedClient(base_url=stocked.url, token=stocked.token)
        minted = _operation("admin.create_token").sync(
            client=admin, body=models.TokenRequest(name="generated client", role=models.Role.VIEWER)
        )
        assert isinstance(minted, models.MintedToken), minted
        viewer = generated.AuthenticatedClient(base_url=stocked.url, token=minted.token)
        study, _, _ = stocked.instances[0]
        found = _operation("qido_rs.search_for_studies").sync(client=viewer, study_instance_uid=study)
        assert [item["0020000D"].value for item in found] == [[study]]

    def test_reads_the_status(self, generated: ModuleType, stocked: Stocked) -> None:
        admin = generated.AuthenticatedClient(base_url=stocked.url, token=stocked.token)
        status = _operation("admin.get_status").sync(client=admin)
        assert isinstance(status, importlib.import_module("webpacs_client.models").Status), status
        assert status.instances >= len(stocked.instances)

    def test_registers_a_dicom_node_and_lists_it(self, generated: ModuleType, stocked: Stocked) -> None:
        models = importlib.import_module("webpacs_client.models")
        admin = generated.AuthenticatedClient(base_url=stocked.url, token=stocked.token)
        node = models.DicomNodeIn(ae_title="GENERATED_SCU", host="127.0.0.1", port=11113, allow_move=False)
        created = _operation("admin.create_dicom_node").sync(client=admin, body=node)
        assert isinstance(created, models.DicomNodeOut), created
        assert created.created_at.tzinfo is not None
        listed = _operation("admin.list_dicom_nodes").sync(client=admin)
        assert [node.allow_move for node in listed if node.ae_title == "GENERATED_SCU"] == [False]

    def test_gets_a_refusal_as_a_problem(self, generated: ModuleType, stocked: Stocked) -> None:
        models = importlib.import_module("webpacs_client.models")
        admin = generated.AuthenticatedClient(base_url=stocked.url, token=stocked.token)
        body = models.TokenRequest(name="generated viewer", role=models.Role.VIEWER)
        viewer_token = _operation("admin.create_token").sync(client=admin, body=body).token
        viewer = generated.AuthenticatedClient(base_url=stocked.url, token=viewer_token)
        response = _operation("admin.list_dicom_nodes").sync_detailed(client=viewer)
        assert response.status_code == 403
        assert isinstance(response.parsed, models.Problem)
        assert response.parsed.status == 403

    def test_retrieves_an_instance_as_multipart_bytes(self, generated: ModuleType, stocked: Stocked) -> None:
        admin = generated.AuthenticatedClient(base_url=stocked.url, token=stocked.token)
        study, series, instance = stocked.instances[0]
        response = _operation("wado_rs.retrieve_instance").sync_detailed(
            client=admin, study=study, series=series, instance=instance
        )
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("multipart/related")
        assert instance.encode() in response.parsed.payload.read()
