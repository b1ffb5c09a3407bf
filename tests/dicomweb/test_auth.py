"""Every request needs a bearer token except the readiness probe and the API description (issue #3);
roles limit what a token may do."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
from dicomdata import multipart_body, sample_study, uids_of

from dicomweb.security import PUBLIC_PATHS

if TYPE_CHECKING:
    from live_pacs import Pacs

REPO = Path(__file__).resolve().parents[2]
# The routes the server declares public (dicomweb/security.py), and the ones it may: any other route
# turning public fails a test here.
PUBLIC = re.compile("|".join(PUBLIC_PATHS))
EXPECTED_PUBLIC = re.compile(
    r"^/(healthz|openapi\.json|schema(/.*)?|api/auth/(login|refresh)|api/share-links/(challenge|redeem)"
    r"|ui/.*|viewer(/.*)?|share/.*)?$"
)
_ROUTES_SCRIPT = """
import json
from dicomweb.app import create_app
from dicomweb.settings import Settings
app = create_app(Settings.from_env(bridge=False))
print(json.dumps([[route.path, sorted(route.methods)] for route in app.routes]))
"""


@pytest.fixture(scope="module")
def routes(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, str]]:
    """(path, method) of every route the app mounts, read from `app.routes` in a separate process."""
    environment = {**os.environ, "WEBPACS_DATA_DIR": str(tmp_path_factory.mktemp("routes"))}
    completed = subprocess.run(
        [sys.executable, "-c", _ROUTES_SCRIPT], capture_output=True, text=True, check=True, cwd=REPO, env=environment
    )
    listed = json.loads(completed.stdout.strip().splitlines()[-1])
    pairs = [(path, method) for path, methods in listed for method in methods if method != "OPTIONS"]
    assert len(pairs) > 20
    return pairs


def _concrete(path: str) -> str:
    """A request path for a route template: UIDs for str parameters, 1 for int ones."""
    return re.sub(r"\{(\w+):(\w+)\}", lambda match: "1" if match.group(2) == "int" else "1.2.3", path)


@pytest.fixture(scope="module")
def anonymous(pacs: Pacs) -> httpx.Client:
    return httpx.Client(base_url=pacs.url, timeout=30)


class TestAnonymousRequests:
    def test_every_route_but_the_public_ones_answers_401(
        self, pacs: Pacs, anonymous: httpx.Client, routes: list[tuple[str, str]]
    ) -> None:
        leaks = []
        for path, method in routes:
            if PUBLIC.match(path):
                continue
            response = anonymous.request(
                method, _concrete(path), headers={"Content-Type": "application/json"}, content=b"{}"
            )
            if response.status_code != 401:
                leaks.append(f"{method} {path}: {response.status_code}")
        assert not leaks, "routes reachable without a token:\n" + "\n".join(leaks)

    @pytest.mark.parametrize("path", ["/healthz", "/openapi.json"])
    def test_the_probe_and_the_spec_are_public(self, anonymous: httpx.Client, path: str) -> None:
        response = anonymous.get(path)
        assert response.status_code == 200
        assert response.json()

    def test_only_the_expected_routes_are_public(self, routes: list[tuple[str, str]]) -> None:
        public = {path for path, _ in routes if PUBLIC.match(path)}
        assert {"/healthz", "/openapi.json", "/api/auth/login", "/api/share-links/redeem"} <= public
        assert [path for path in public if not EXPECTED_PUBLIC.match(path)] == []

    def test_a_missing_token_is_explained_with_a_challenge(self, anonymous: httpx.Client) -> None:
        response = anonymous.get("/dicomweb/studies")
        assert response.status_code == 401
        assert response.headers["www-authenticate"].lower().startswith("bearer")
        assert "token" in response.json()["detail"]

    @pytest.mark.parametrize(
        "header", ["Bearer wp_not-a-real-token", "Bearer", "Basic dXNlcjpwYXNz", "wp_token-without-scheme"]
    )
    def test_a_bad_token_answers_401(self, anonymous: httpx.Client, header: str) -> None:
        response = anonymous.get("/dicomweb/studies", headers={"Authorization": header})
        assert response.status_code == 401

    def test_options_reveals_no_data(self, anonymous: httpx.Client) -> None:
        response = anonymous.options("/dicomweb/studies")
        assert response.status_code in (204, 401)
        assert response.content == b""


# What a viewer's role lets it reach; every other guarded route must answer it 403.
VIEWER_MAY = re.compile(r"^(GET /dicomweb/.*|GET /wado|GET /api/me|GET /api/studies/.*|POST /api/auth/logout)$")


class TestRoles:
    def test_every_route_beyond_reading_refuses_a_viewer_with_403(
        self, pacs: Pacs, routes: list[tuple[str, str]]
    ) -> None:
        viewer = pacs.auth(pacs.mint_token("viewer"))
        wrong = []
        for path, method in routes:
            if PUBLIC.match(path) or VIEWER_MAY.match(f"{method} {path}"):
                continue
            response = pacs.http.request(
                method, _concrete(path), headers={**viewer, "Content-Type": "application/json"}, content=b"{}"
            )
            if response.status_code != 403:
                wrong.append(f"{method} {path}: {response.status_code}")
        assert not wrong, "routes a viewer reached past its role:\n" + "\n".join(wrong)

    def test_a_viewer_can_search_and_retrieve(self, pacs: Pacs) -> None:
        _, (data,) = sample_study()
        pacs.store(data)
        viewer = pacs.auth(pacs.mint_token("viewer"))
        study = uids_of(data)[0]
        assert pacs.http.get("/dicomweb/studies", params={"StudyInstanceUID": study}, headers=viewer).status_code == 200
        response = pacs.http.get(
            pacs.instance_path(data),
            headers={**viewer, "Accept": "multipart/related; type=application/dicom; transfer-syntax=*"},
        )
        assert response.status_code == 200
        assert data in response.content

    def test_a_viewer_cannot_store(self, pacs: Pacs) -> None:
        _, (data,) = sample_study()
        body, content_type = multipart_body([data])
        response = pacs.http.post(
            "/dicomweb/studies",
            content=body,
            headers={**pacs.auth(pacs.mint_token("viewer")), "Content-Type": content_type},
        )
        assert response.status_code == 403, response.text
        assert not pacs.has_instance(uids_of(data)[2])

    @pytest.mark.parametrize("role", ["viewer", "uploader"])
    def test_only_admins_delete(self, pacs: Pacs, role: str) -> None:
        _, (data,) = sample_study()
        pacs.store(data)
        response = pacs.http.delete(f"/dicomweb/studies/{uids_of(data)[0]}", headers=pacs.auth(pacs.mint_token(role)))
        assert response.status_code == 403, response.text
        assert pacs.has_instance(uids_of(data)[2])

    def test_an_uploader_can_store(self, pacs: Pacs) -> None:
        _, (data,) = sample_study()
        body, content_type = multipart_body([data])
        response = pacs.http.post(
            "/dicomweb/studies",
            content=body,
            headers={**pacs.auth(pacs.mint_token("uploader")), "Content-Type": content_type},
        )
        assert response.status_code == 200, response.text

    def test_a_viewer_cannot_mint_tokens(self, pacs: Pacs) -> None:
        response = pacs.http.post(
            "/api/tokens", json={"name": "x", "role": "admin"}, headers=pacs.auth(pacs.mint_token("viewer"))
        )
        assert response.status_code == 403

    def test_a_revoked_token_stops_working(self, pacs: Pacs) -> None:
        token = pacs.mint_token("viewer", name=f"to-revoke-{pacs.backend}")
        assert pacs.http.get("/dicomweb/studies", headers=pacs.auth(token)).status_code == 200
        (info,) = [item for item in pacs.http.get("/api/tokens").json() if item["name"] == f"to-revoke-{pacs.backend}"]
        assert pacs.http.delete(f"/api/tokens/{info['id']}").status_code in (200, 204)
        assert pacs.http.get("/dicomweb/studies", headers=pacs.auth(token)).status_code == 401
