"""Tokens of an external identity provider, end to end: the real server verifies them over HTTP
against the test provider's discovery document and keys, and applies a local user's study filter."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import pytest
from dicomdata import multipart_body, sample_study, uids_of
from oidc_provider import AUDIENCE, OidcProvider

if TYPE_CHECKING:
    from collections.abc import Iterator

    import httpx
    from conftest import LiveServer, ServerFactory  # tests/conftest.py


@pytest.fixture(scope="module")
def provider() -> Iterator[OidcProvider]:
    with OidcProvider() as running:
        yield running


@pytest.fixture(scope="module")
def server(provider: OidcProvider, live_servers: ServerFactory) -> Iterator[LiveServer]:
    with pytest.MonkeyPatch.context() as environment:
        environment.setenv("WEBPACS_OIDC_ISSUER", provider.issuer)
        environment.setenv("WEBPACS_OIDC_AUDIENCE", AUDIENCE)
        environment.setenv("WEBPACS_OIDC_ROLE_MAP", "pacs-radiologist=radiologist,pacs-admin=admin")
        running = live_servers.start("sqlite")
    yield running
    live_servers.stop(running)


def _get(server: LiveServer, path: str, token: str) -> httpx.Response:
    with server.client() as client:
        return client.get(path, headers={"Authorization": f"Bearer {token}"})


class TestIdentityProviderTokens:
    def test_a_provider_token_acts_with_its_mapped_role(self, server: LiveServer, provider: OidcProvider) -> None:
        me = _get(server, "/api/me", provider.mint(preferred_username="dr.house"))
        assert me.status_code == 200, me.text
        assert (me.json()["name"], me.json()["role"], me.json()["kind"]) == ("dr.house", "radiologist", "oidc")

    @pytest.mark.parametrize(
        "claims",
        [{"aud": "another-app"}, {"exp": 1_000_000_000}, {"roles": ["cleaner"], "realm_access": None}],
        ids=["wrong audience", "expired", "unmapped role"],
    )
    def test_bad_provider_tokens_answer_401(
        self, server: LiveServer, provider: OidcProvider, claims: dict[str, object]
    ) -> None:
        assert _get(server, "/dicomweb/studies", provider.mint(**claims)).status_code == 401

    def test_an_unsigned_token_answers_401(self, server: LiveServer, provider: OidcProvider) -> None:
        _, payload, _ = provider.mint().split(".")
        assert _get(server, "/dicomweb/studies", f"eyJhbGciOiJub25lIn0.{payload}.").status_code == 401

    def test_a_local_user_of_the_same_name_lends_its_study_filter(
        self, server: LiveServer, provider: OidcProvider
    ) -> None:
        _, (data,) = sample_study()
        username = f"dr.{uuid.uuid4().hex[:8]}"
        body, content_type = multipart_body([data])
        with server.client() as admin:
            assert admin.post("/dicomweb/studies", content=body, headers={"Content-Type": content_type}).is_success
            created = admin.post(
                "/api/users",
                json={"username": username, "role": "viewer", "study_filter": {"ReferringPhysicianName": ["NOBODY"]}},
            )
            assert created.status_code == 201, created.text
        token = provider.mint(preferred_username=username)
        assert _get(server, f"/dicomweb/studies/{uids_of(data)[0]}/metadata", token).status_code == 404
        assert _get(server, "/api/me", token).json()["study_filter"] == {"ReferringPhysicianName": ["NOBODY"]}
