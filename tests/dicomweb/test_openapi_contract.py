"""The served OpenAPI spec is true of the real server (issue #3).

schemathesis generates requests from `/openapi.json` for every GET operation and the management API and
checks each answer against the spec: no 5xx, only documented status codes and media types, bodies that
match their schemas. Path parameters are now random, now the UIDs of instances the archive holds, so
the 404 and the 200 answers are both reached. Generation is deterministic: CI sends the same requests
on every run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

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
# Valid requests of these may all miss: a token id drawn at random rarely names a token.
MAY_NEVER_SUCCEED: Final = {("DELETE", "/api/tokens/{token_id}")}


@dataclass(frozen=True)
class Stocked:
    """A live server (its URL and admin token) and what its archive holds."""

    url: str
    token: str
    admin_token_id: int
    instances: tuple[tuple[str, str, str], ...]  # (study, series, instance) UIDs


@pytest.fixture(scope="module")
def stocked(live_servers: ServerFactory) -> Iterator[Stocked]:
    """A server holding a two-instance CT study, a three-frame instance and a JPEG one, and one DICOM node."""
    server = live_servers.start("sqlite")
    try:
        _, ct = sample_study(instances=2)
        _, multiframe = sample_study(frames=3)
        parts = [*ct, *multiframe, bundled("SC_rgb_jpeg_dcmtk.dcm")]
        body, content_type = multipart_body(parts)
        with server.client() as http:
            stored = http.post("/dicomweb/studies", content=body, headers={"Content-Type": content_type})
            assert stored.status_code == 200, stored.text
            node = {"ae_title": AE_TITLE, "host": "127.0.0.1", "port": 11112}
            assert http.post("/api/dicom-nodes", json=node).status_code == 201
            tokens = http.get("/api/tokens").json()
        (admin_id,) = (token["id"] for token in tokens if token["name"] == "tests")
        yield Stocked(server.url, server.token, admin_id, tuple(uids_of(part) for part in parts))
    finally:
        live_servers.stop(server)


@pytest.fixture(scope="module")
def api_schema(stocked: Stocked) -> BaseSchema:
    """The spec as the server serves it, set to call that server with the admin token."""
    config = schemathesis.Config.from_dict(
        {"base-url": stocked.url, "headers": {"Authorization": f"Bearer {stocked.token}"}}
    )
    return schemathesis.openapi.from_url(f"{stocked.url}/openapi.json", config=config)


def _under_contract() -> list[ParameterSet]:
    # Reads anywhere, and all of the management API; not STOW-RS (a DICOM body) nor DICOMweb deletes,
    # which would empty the archive the other operations are checked against. Listed from the
    # committed spec, which test_openapi.py holds equal to the served one.
    spec = yaml.safe_load(COMMITTED.read_text(encoding="utf-8"))
    return [
        pytest.param(method.upper(), path, id=operation["operationId"])
        for path, item in spec["paths"].items()
        for method, operation in item.items()
        if method == "get" or path.startswith("/api/")
    ]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda mode: mode.value)
@pytest.mark.parametrize(("method", "path"), _under_contract())
def test_every_answer_keeps_to_the_spec(
    api_schema: BaseSchema, stocked: Stocked, method: str, path: str, mode: GenerationMode
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
    if path:
        named = {"study": study, "series": series, "instance": instance, "ae_title": AE_TITLE, "tag": "7FE00010"}
        path.update({key: value for key, value in named.items() if key in path})
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


class TestTheSpecIsServed:
    def test_without_a_token_and_declares_the_bearer_scheme(self, stocked: Stocked) -> None:
        response = httpx.get(f"{stocked.url}/openapi.json", timeout=30)
        assert response.status_code == 200
        spec = response.json()
        assert spec["components"]["securitySchemes"]["bearerAuth"] == {"type": "http", "scheme": "bearer"} | {
            "description": spec["components"]["securitySchemes"]["bearerAuth"]["description"]
        }
        assert spec["security"] == [{"bearerAuth": []}]
        assert spec["paths"]["/healthz"]["get"]["security"] == []
        assert spec["paths"]["/openapi.json"]["get"]["security"] == []
