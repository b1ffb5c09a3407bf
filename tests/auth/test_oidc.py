"""OpenID Connect provider tokens, checked against a real provider over HTTP (tests/auth/oidc_provider.py)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pytest
from joserfc.jwk import RSAKey
from oidc_provider import AUDIENCE, DISCOVERY_PATH, JWKS_PATH, OidcProvider

from auth.errors import IdentityProviderUnavailable, InvalidToken
from auth.oidc import OidcSettings, OidcVerifier, parse_role_map
from auth.principals import Role
from dicomweb.settings import Settings, SettingsError

if TYPE_CHECKING:
    from collections.abc import Iterator

ROLE_MAP = {"pacs-admin": "admin", "pacs-radiologist": "radiologist", "pacs-viewer": "viewer"}


@pytest.fixture
def provider() -> Iterator[OidcProvider]:
    with OidcProvider() as running:
        yield running


def settings_for(provider: OidcProvider, **overrides: Any) -> OidcSettings:
    return OidcSettings(issuer=provider.issuer, audience=AUDIENCE, role_map=ROLE_MAP, **overrides)


@pytest.fixture
def verifier(provider: OidcProvider) -> OidcVerifier:
    return OidcVerifier(settings_for(provider))


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned_parts(provider: OidcProvider, header: dict[str, Any]) -> str:
    """header.payload of a token with the provider's usual claims, for forging a signature."""
    return b64(json.dumps(header).encode()) + "." + b64(json.dumps(provider.claims()).encode())


class TestValidTokens:
    def test_rsa_token_gives_the_user_and_mapped_role(self, provider: OidcProvider, verifier: OidcVerifier) -> None:
        identity = verifier.verify(provider.mint(sub="f00d", preferred_username="dr.house"))
        assert (identity.username, identity.role, identity.subject) == ("dr.house", Role.RADIOLOGIST, "f00d")
        assert identity.issuer == provider.issuer
        assert identity.expires_at > datetime.now(UTC)
        assert identity.claims["azp"] == AUDIENCE

    def test_ec_token_verifies(self, provider: OidcProvider, verifier: OidcVerifier) -> None:
        assert verifier.verify(provider.mint(provider.ec_key, "ES256")).role is Role.RADIOLOGIST

    def test_ps256_token_with_an_rsa_key_verifies(self, provider: OidcProvider) -> None:
        # The provider's RSA JWK says alg RS256; a key without that restriction may sign PS256 too.
        key = RSAKey.import_key(provider.rsa_key.as_dict(private=True) | {"alg": "PS256"})
        verifier = OidcVerifier(settings_for(provider))
        provider.rsa_key = key
        assert verifier.verify(provider.mint(key, "PS256")).username == "dr.house"

    def test_dotted_role_claim_reaches_into_keycloak_realm_access(self, provider: OidcProvider) -> None:
        verifier = OidcVerifier(settings_for(provider, role_claim="realm_access.roles"))
        token = provider.mint(roles=None, realm_access={"roles": ["offline_access", "pacs-admin"]})
        assert verifier.verify(token).role is Role.ADMIN

    def test_role_claim_may_be_a_single_string(self, provider: OidcProvider, verifier: OidcVerifier) -> None:
        assert verifier.verify(provider.mint(roles="pacs-viewer")).role is Role.VIEWER

    def test_most_privileged_mapped_role_wins(self, provider: OidcProvider, verifier: OidcVerifier) -> None:
        token = provider.mint(roles=["pacs-viewer", "uma_authorization", "pacs-admin", "pacs-radiologist"])
        assert verifier.verify(token).role is Role.ADMIN

    def test_audience_may_be_a_list(self, provider: OidcProvider, verifier: OidcVerifier) -> None:
        assert verifier.verify(provider.mint(aud=["account", AUDIENCE])).role is Role.RADIOLOGIST

    def test_username_falls_back_to_sub(self, provider: OidcProvider, verifier: OidcVerifier) -> None:
        assert verifier.verify(provider.mint(preferred_username=None, sub="svc-42")).username == "svc-42"

    def test_clock_skew_within_leeway_is_tolerated(self, provider: OidcProvider, verifier: OidcVerifier) -> None:
        now = int(time.time())
        assert verifier.verify(provider.mint(exp=now - 10, nbf=now + 10, iat=now + 10)).username == "dr.house"


class TestRejectedTokens:
    def test_expired_token_is_rejected(self, provider: OidcProvider, verifier: OidcVerifier) -> None:
        with pytest.raises(InvalidToken, match="expired at"):
            verifier.verify(provider.mint(exp=int(time.time()) - 120))

    def test_token_without_exp_is_rejected(self, provider: OidcProvider, verifier: OidcVerifier) -> None:
        with pytest.raises(InvalidToken, match=r"lacks the required claim.*exp"):
            verifier.verify(provider.mint(exp=None))

    def test_token_not_yet_valid_is_rejected(self, provider: OidcProvider, verifier: OidcVerifier) -> None:
        with pytest.raises(InvalidToken, match="not valid before"):
            verifier.verify(provider.mint(nbf=int(time.time()) + 600))

    def test_token_issued_in_the_future_is_rejected(self, provider: OidcProvider, verifier: OidcVerifier) -> None:
        with pytest.raises(InvalidToken, match="in the future"):
            verifier.verify(provider.mint(iat=int(time.time()) + 600, nbf=None))

    def test_wrong_audience_is_rejected(self, provider: OidcProvider, verifier: OidcVerifier) -> None:
        with pytest.raises(InvalidToken, match="audience 'account', not WEBPACS_OIDC_AUDIENCE='webpacs'"):
            verifier.verify(provider.mint(aud="account"))

    def test_wrong_issuer_is_rejected(self, provider: OidcProvider, verifier: OidcVerifier) -> None:
        with pytest.raises(InvalidToken, match=r"issued by 'https://evil.example', not by WEBPACS_OIDC_ISSUER"):
            verifier.verify(provider.mint(iss="https://evil.example"))

    def test_alg_none_is_rejected(self, provider: OidcProvider, verifier: OidcVerifier) -> None:
        token = unsigned_parts(provider, {"alg": "none", "kid": provider.rsa_key.kid}) + "."
        with pytest.raises(InvalidToken, match="alg 'none'"):
            verifier.verify(token)

    def test_hs256_signed_with_the_public_key_is_rejected(self, provider: OidcProvider, verifier: OidcVerifier) -> None:
        # The classic key-confusion forgery: the provider's public key used as an HMAC secret.
        signing_input = unsigned_parts(provider, {"alg": "HS256", "kid": provider.rsa_key.kid})
        secret = provider.rsa_key.as_pem(private=False)
        token = signing_input + "." + b64(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())
        with pytest.raises(InvalidToken, match="alg 'HS256'"):
            verifier.verify(token)

    def test_key_outside_the_jwks_under_a_published_kid_is_rejected(
        self, provider: OidcProvider, verifier: OidcVerifier
    ) -> None:
        impostor = RSAKey.generate_key(2048, parameters={"kid": provider.rsa_key.kid})
        with pytest.raises(InvalidToken, match="signature does not verify with key 'rsa-1'"):
            verifier.verify(provider.mint(impostor))

    def test_key_outside_the_jwks_under_its_own_kid_is_rejected(
        self, provider: OidcProvider, verifier: OidcVerifier
    ) -> None:
        stranger = RSAKey.generate_key(2048, parameters={"kid": "stranger"})
        with pytest.raises(InvalidToken, match="key 'stranger', which the provider does not publish"):
            verifier.verify(provider.mint(stranger))

    def test_encryption_key_is_not_accepted_for_signatures(
        self, provider: OidcProvider, verifier: OidcVerifier
    ) -> None:
        # The provider would not sign with it; an attacker holding it would, under its kid.
        unrestricted = {k: v for k, v in provider.enc_key.as_dict(private=True).items() if k not in ("use", "alg")}
        with pytest.raises(InvalidToken, match="key 'enc-1', which the provider does not publish"):
            verifier.verify(provider.mint(RSAKey.import_key(unrestricted)))

    def test_tampered_payload_is_rejected(self, provider: OidcProvider, verifier: OidcVerifier) -> None:
        header, _, signature = provider.mint().split(".")
        forged = b64(json.dumps(provider.claims(roles=["pacs-admin"])).encode())
        with pytest.raises(InvalidToken, match="signature does not verify"):
            verifier.verify(f"{header}.{forged}.{signature}")

    def test_garbage_is_rejected_without_echoing_it(self, verifier: OidcVerifier) -> None:
        with pytest.raises(InvalidToken, match="not a signed JWT") as caught:
            verifier.verify("wp_not-a-jwt-secret")
        assert "secret" not in str(caught.value)

    def test_roles_mapping_to_nothing_say_what_was_seen_and_what_would_admit(
        self, provider: OidcProvider, verifier: OidcVerifier
    ) -> None:
        with pytest.raises(InvalidToken) as caught:
            verifier.verify(provider.mint(roles=["offline_access", "nurse"]))
        message = str(caught.value)
        assert "claim 'roles' holds ['offline_access', 'nurse']" in message
        assert "WEBPACS_OIDC_ROLE_MAP='pacs-admin=admin,pacs-radiologist=radiologist,pacs-viewer=viewer," in message
        assert "offline_access=viewer'" in message

    def test_missing_role_claim_names_the_claim_to_configure(
        self, provider: OidcProvider, verifier: OidcVerifier
    ) -> None:
        with pytest.raises(InvalidToken, match=r"no claim 'roles'.*WEBPACS_OIDC_ROLE_CLAIM.*realm_access.roles"):
            verifier.verify(provider.mint(roles=None))


class TestKeyFetching:
    def test_unknown_kid_triggers_one_rate_limited_refetch(
        self, provider: OidcProvider, verifier: OidcVerifier
    ) -> None:
        verifier.verify(provider.mint())
        assert provider.requests[JWKS_PATH] == 1
        stranger = RSAKey.generate_key(2048, parameters={"kid": "stranger"})
        for _ in range(3):
            with pytest.raises(InvalidToken, match="does not publish"):
                verifier.verify(provider.mint(stranger))
        assert provider.requests[JWKS_PATH] == 2

    def test_rotated_key_verifies_after_one_refetch(self, provider: OidcProvider, verifier: OidcVerifier) -> None:
        verifier.verify(provider.mint())
        new_key = provider.rotate()
        identity = verifier.verify(provider.mint(new_key))
        assert identity.username == "dr.house"
        assert provider.requests[JWKS_PATH] == 2
        verifier.verify(provider.mint(new_key))  # now cached
        assert provider.requests[JWKS_PATH] == 2

    def test_cached_keys_are_fetched_again_when_stale(self, provider: OidcProvider) -> None:
        verifier = OidcVerifier(settings_for(provider, jwks_cache_seconds=0))
        verifier.verify(provider.mint())
        verifier.verify(provider.mint())
        assert provider.requests[DISCOVERY_PATH] == provider.requests[JWKS_PATH] == 2

    def test_concurrent_first_requests_fetch_once(self, provider: OidcProvider, verifier: OidcVerifier) -> None:
        tokens = [provider.mint(preferred_username=f"user{n}") for n in range(8)]
        names: list[str] = []
        threads = [threading.Thread(target=lambda t=t: names.append(verifier.verify(t).username)) for t in tokens]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(names) == sorted(f"user{n}" for n in range(8))
        assert provider.requests[DISCOVERY_PATH] == provider.requests[JWKS_PATH] == 1

    def test_provider_down_raises_unavailable_with_the_url(self, provider: OidcProvider) -> None:
        verifier = OidcVerifier(settings_for(provider))
        token = provider.mint()
        provider.stop()
        with pytest.raises(IdentityProviderUnavailable, match=f"GET {provider.issuer}/.well-known/openid-config"):
            verifier.verify(token)

    def test_outage_after_keys_were_fetched_keeps_known_keys_working(self, provider: OidcProvider) -> None:
        verifier = OidcVerifier(settings_for(provider, jwks_cache_seconds=0))
        verifier.verify(provider.mint())
        token = provider.mint()
        provider.stop()
        assert verifier.verify(token).role is Role.RADIOLOGIST

    def test_discovery_naming_another_issuer_is_refused(self, provider: OidcProvider, verifier: OidcVerifier) -> None:
        provider.advertised_issuer = provider.issuer + "/"
        with pytest.raises(IdentityProviderUnavailable, match=r"names issuer .* they must be equal"):
            verifier.verify(provider.mint())


class TestIssuerRouting:
    def test_provider_token_is_recognised(self, provider: OidcProvider, verifier: OidcVerifier) -> None:
        assert verifier.looks_like_issuer_token(provider.mint())

    @pytest.mark.parametrize("token", ["wp_abc", "a.b.c", "", "eyJhbGciOiJub25lIn0.e30."])
    def test_other_bearers_are_not(self, verifier: OidcVerifier, token: str) -> None:
        assert not verifier.looks_like_issuer_token(token)

    def test_other_issuers_tokens_are_not(self, provider: OidcProvider, verifier: OidcVerifier) -> None:
        assert not verifier.looks_like_issuer_token(provider.mint(iss="webpacs"))


class TestSettings:
    def test_role_map_is_parsed(self) -> None:
        assert parse_role_map(" pacs-admin = admin, a=b=viewer ,") == {"pacs-admin": "admin", "a=b": "viewer"}

    @pytest.mark.parametrize("text", ["pacs-admin", "=admin", "pacs-admin=", "x=admin,x=viewer"])
    def test_malformed_role_map_is_refused(self, text: str) -> None:
        with pytest.raises(ValueError, match=r"provider-role=our-role|mapped twice"):
            parse_role_map(text)

    def test_oidc_is_off_without_an_issuer(self) -> None:
        assert Settings.from_env({}).oidc_settings() is None

    def test_environment_gives_oidc_settings(self) -> None:
        settings = Settings.from_env(
            {
                "WEBPACS_OIDC_ISSUER": "https://kc.example/realms/h",
                "WEBPACS_OIDC_AUDIENCE": "webpacs",
                "WEBPACS_OIDC_ROLE_CLAIM": "realm_access.roles",
                "WEBPACS_OIDC_ROLE_MAP": "pacs-admin=admin,pacs-reader=viewer",
            }
        ).oidc_settings()
        assert settings is not None
        assert (settings.issuer, settings.audience, settings.role_claim) == (
            "https://kc.example/realms/h",
            "webpacs",
            "realm_access.roles",
        )
        assert dict(settings.role_map) == {"pacs-admin": "admin", "pacs-reader": "viewer"}
        assert settings.discovery_url == "https://kc.example/realms/h/.well-known/openid-configuration"

    @pytest.mark.parametrize(
        ("environ", "message"),
        [
            ({"WEBPACS_OIDC_ROLE_MAP": "a=admin"}, "WEBPACS_OIDC_AUDIENCE is required"),
            ({"WEBPACS_OIDC_AUDIENCE": "w"}, "WEBPACS_OIDC_ROLE_MAP is required"),
            ({"WEBPACS_OIDC_AUDIENCE": "w", "WEBPACS_OIDC_ROLE_MAP": "a"}, "WEBPACS_OIDC_ROLE_MAP='a'"),
            ({"WEBPACS_OIDC_AUDIENCE": "w", "WEBPACS_OIDC_ROLE_MAP": "a=root"}, r"unknown role\(s\) \['root'\]"),
            (
                {
                    "WEBPACS_OIDC_ISSUER": "http://kc.example",
                    "WEBPACS_OIDC_AUDIENCE": "w",
                    "WEBPACS_OIDC_ROLE_MAP": "a=admin",
                },
                "must use https://",
            ),
            ({"WEBPACS_OIDC_ISSUER": "", "WEBPACS_OIDC_AUDIENCE": "w"}, "set without WEBPACS_OIDC_ISSUER"),
        ],
    )
    def test_bad_oidc_environment_stops_the_process(self, environ: dict[str, str], message: str) -> None:
        with pytest.raises(SettingsError, match=message):
            Settings.from_env({"WEBPACS_OIDC_ISSUER": "https://kc.example/realms/h"} | environ)

    def test_symmetric_algorithms_cannot_be_allowed(self) -> None:
        with pytest.raises(ValueError, match=r"\['HS256'\] are not allowed"):
            OidcSettings(issuer="https://kc.example", audience="w", role_map={"a": "admin"}, algorithms=("HS256",))
