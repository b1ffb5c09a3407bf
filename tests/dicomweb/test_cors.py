"""CORS (issue #5): a viewer on another origin works when, and only when, its origin is allowed."""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx
import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator

    from conftest import LiveServer, ServerFactory  # tests/conftest.py
    from live_pacs import Pacs

VIEWER_ORIGIN = "https://viewer.example.org"


@pytest.fixture(scope="module")
def cors_server(live_servers: ServerFactory) -> Iterator[LiveServer]:
    with pytest.MonkeyPatch.context() as environment:
        environment.setenv("WEBPACS_CORS_ORIGINS", f"{VIEWER_ORIGIN}, https://ehr.example.org")
        running = live_servers.start("sqlite")
    yield running
    live_servers.stop(running)


def _preflight(url: str, origin: str) -> httpx.Response:
    return httpx.options(
        f"{url}/dicomweb/studies",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        },
    )


class TestCors:
    def test_an_allowed_origin_may_call_with_a_bearer_token(self, cors_server: LiveServer) -> None:
        preflight = _preflight(cors_server.url, VIEWER_ORIGIN)
        assert preflight.status_code in (200, 204)
        assert preflight.headers["access-control-allow-origin"] == VIEWER_ORIGIN
        assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
        with cors_server.client() as client:
            answer = client.get("/dicomweb/studies", headers={"Origin": VIEWER_ORIGIN})
        assert answer.headers["access-control-allow-origin"] == VIEWER_ORIGIN
        assert "access-control-allow-credentials" not in answer.headers

    def test_another_origin_gets_no_grant(self, cors_server: LiveServer) -> None:
        preflight = _preflight(cors_server.url, "https://evil.example.com")
        assert "access-control-allow-origin" not in preflight.headers

    def test_by_default_no_origin_is_allowed(self, pacs: Pacs) -> None:
        preflight = _preflight(pacs.url, VIEWER_ORIGIN)
        assert "access-control-allow-origin" not in preflight.headers
