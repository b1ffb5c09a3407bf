"""The committed OpenAPI spec (openapi/webpacs.yaml) is what the app generates and serves (issue #3)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import yaml

if TYPE_CHECKING:
    from live_pacs import Pacs

REPO = Path(__file__).resolve().parents[2]
COMMITTED = REPO / "openapi" / "webpacs.yaml"
REGENERATE = "openapi/webpacs.yaml is out of date with the app: run `make openapi` and commit the result"


@pytest.fixture(scope="module")
def committed() -> str:
    assert COMMITTED.is_file(), f"{COMMITTED} is missing: run `make openapi` and commit it"
    return COMMITTED.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def committed_spec(committed: str) -> dict[str, Any]:
    spec: dict[str, Any] = yaml.safe_load(committed)
    return spec


class TestCommittedSpec:
    def test_webpacs_openapi_writes_exactly_the_committed_file(self, committed: str) -> None:
        completed = subprocess.run(
            [sys.executable, "-m", "dicomweb.cli", "openapi", "-o", "-"],
            capture_output=True,
            text=True,
            check=False,
            cwd=REPO,
        )
        assert completed.returncode == 0, completed.stderr
        assert completed.stdout == committed, REGENERATE

    def test_the_served_spec_is_the_committed_one(self, pacs: Pacs, committed_spec: dict[str, Any]) -> None:
        response = httpx.get(f"{pacs.url}/openapi.json", timeout=30)  # public: no token
        assert response.status_code == 200
        assert response.json() == committed_spec, REGENERATE

    @pytest.mark.parametrize(
        ("path", "method"),
        [
            ("/dicomweb/studies", "post"),
            ("/dicomweb/studies/{study}", "post"),
            ("/dicomweb/studies", "get"),
            ("/dicomweb/series", "get"),
            ("/dicomweb/instances", "get"),
            ("/dicomweb/studies/{study}/series/{series}/instances", "get"),
            ("/dicomweb/studies/{study}", "get"),
            ("/dicomweb/studies/{study}/series/{series}/instances/{instance}", "get"),
            ("/dicomweb/studies/{study}/metadata", "get"),
            ("/dicomweb/studies/{study}/series/{series}/instances/{instance}/frames/{frames}", "get"),
            ("/dicomweb/studies/{study}/series/{series}/instances/{instance}/bulk/{tag}", "get"),
            ("/dicomweb/studies/{study}", "delete"),
            ("/wado", "get"),
        ],
    )
    def test_every_dicomweb_transaction_is_described(
        self, committed_spec: dict[str, Any], path: str, method: str
    ) -> None:
        assert method in committed_spec["paths"].get(path, {}), f"{method.upper()} {path} is not in the spec"
