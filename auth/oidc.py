"""Bearer tokens from an external OpenID Connect provider (a hospital's Keycloak or Entra ID).

The provider is found by OpenID Connect Discovery 1.0 (`{issuer}/.well-known/openid-configuration`),
its signing keys by the `jwks_uri` that document names (RFC 7517). A token is accepted when it is a
JWS signed by one of those keys with an asymmetric algorithm we allow (RFC 7515, RFC 7518 §3), and its
claims (RFC 7519 §4.1) name our issuer and audience and are within their validity; its role claim is
then mapped to one of our roles. Unknown key ids trigger one rate-limited re-fetch of the key set, so
a provider's key rotation needs no restart.

The two HTTP GETs use the standard library on purpose: auth must not import httpx (DESIGN §3).
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Final, TypeGuard
from urllib.parse import urlsplit

from joserfc import jws, jwt
from joserfc.errors import (
    BadSignatureError,
    ClaimError,
    ExpiredTokenError,
    JoseError,
    MissingClaimError,
)
from joserfc.jwk import ECKey, Key, OKPKey, RSAKey, import_key

from auth.errors import IdentityProviderUnavailable, InvalidToken
from auth.principals import Role

__all__ = [
    "DEFAULT_ALGORITHMS",
    "ROLE_PRECEDENCE",
    "OidcIdentity",
    "OidcSettings",
    "OidcVerifier",
    "parse_role_map",
]

logger = logging.getLogger(__name__)

DEFAULT_ALGORITHMS: Final = ("RS256", "RS384", "RS512", "ES256", "ES384", "PS256")
# Only public-key algorithms: "none" carries no signature, and an HS* token would be checked with
# the provider's *public* key as the HMAC secret, which anyone can forge (RFC 8725 §2.1, §3.1).
_ASYMMETRIC_ALGORITHMS: Final = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)

ROLE_PRECEDENCE: Final = (
    Role.ADMIN,
    Role.MANAGER,
    Role.RADIOLOGIST,
    Role.UPLOADER,
    Role.REFERRING,
    Role.VIEWER,
    Role.SERVICE,
)
"""Most privileged first: an account whose provider roles map to several of ours gets the first."""

_LOOPBACK_HOSTS: Final = frozenset({"localhost", "127.0.0.1", "::1"})
_MAX_DOCUMENT_BYTES: Final = 1024 * 1024  # a discovery document or JWKS is a few KB
_DISCOVERY_PATH: Final = "/.well-known/openid-configuration"


def parse_role_map(text: str) -> dict[str, str]:
    """Parse "provider-role=our-role,another=viewer" into a mapping (our role names are checked later).

    A provider role may itself contain "=" (the last one separates); empty items are ignored.

    Raises:
        ValueError: an item has no "=", an empty side, or a provider role is mapped twice.
    """
    mapping: dict[str, str] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        provider_role, equals, our_role = (part.strip() for part in item.rpartition("="))
        if not equals or not provider_role or not our_role:
            raise ValueError(f"{item.strip()!r} is not provider-role=our-role")
        if mapping.get(provider_role, our_role) != our_role:
            raise ValueError(f"provider role {provider_role!r} is mapped twice")
        mapping[provider_role] = our_role
    return mapping


def _check_provider_url(what: str, url: str) -> None:
    """Keys fetched over plain HTTP could be swapped by anyone on the path; allow it on loopback only."""
    parts = urlsplit(url)
    if not parts.hostname or parts.scheme not in {"https", "http"}:
        raise ValueError(f"{what} {url!r} is not an absolute https:// URL")
    if parts.scheme == "http" and parts.hostname not in _LOOPBACK_HOSTS:
        raise ValueError(f"{what} {url!r} must use https:// (plain http is allowed on localhost only)")


@dataclass(frozen=True)
class OidcSettings:
    """How tokens of one OpenID Connect provider are checked and mapped to our roles.

    Attributes:
        issuer: the provider's issuer URL, exactly as it appears in its tokens' `iss`.
        audience: the value our tokens must carry in `aud` (the client id or an audience mapper's).
        username_claim: the claim that names the user; `sub` when the token lacks it.
        role_claim: the claim holding the user's roles; a dotted path reaches into objects
            ("realm_access.roles" on Keycloak). It may hold a list or a single string.
        role_map: provider role or group name -> our role name (admin, manager, radiologist, ...).
        algorithms: the signature algorithms accepted; public-key ones only.
        leeway_seconds: tolerated clock skew for exp, nbf and iat.
        jwks_cache_seconds: how long a fetched key set is used before it is fetched again.
        key_refresh_interval_seconds: at most one re-fetch per this period for an unknown key id.
        http_timeout_seconds: timeout of each request to the provider.
    """

    issuer: str
    audience: str
    username_claim: str = "preferred_username"
    role_claim: str = "roles"
    role_map: Mapping[str, str] = field(default_factory=dict)
    algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS
    leeway_seconds: int = 30
    jwks_cache_seconds: float = 3600.0
    key_refresh_interval_seconds: float = 30.0
    http_timeout_seconds: float = 5.0

    def __post_init__(self) -> None:
        """Check the values and freeze the role map.

        Raises:
            ValueError: naming the bad setting and what is allowed.
        """
        _check_provider_url("WEBPACS_OIDC_ISSUER", self.issuer)
        if not self.audience:
            raise ValueError("WEBPACS_OIDC_AUDIENCE is required: the client id the provider puts in `aud`")
        if not self.username_claim or not self.role_claim:
            raise ValueError("WEBPACS_OIDC_USERNAME_CLAIM and WEBPACS_OIDC_ROLE_CLAIM must not be empty")
        if not self.role_map:
            raise ValueError(
                "WEBPACS_OIDC_ROLE_MAP is required: without it no provider account maps to a role "
                "(e.g. WEBPACS_OIDC_ROLE_MAP='pacs-admin=admin,pacs-radiologist=radiologist')"
            )
        ours = [role.value for role in Role]
        unknown = sorted({role for role in self.role_map.values() if role not in ours})
        if unknown:
            raise ValueError(f"WEBPACS_OIDC_ROLE_MAP names unknown role(s) {unknown}; use: {', '.join(ours)}")
        weak = sorted(set(self.algorithms) - _ASYMMETRIC_ALGORITHMS)
        if weak or not self.algorithms:
            raise ValueError(
                f"OIDC algorithms {weak or '(none)'} are not allowed; use public-key ones: "
                f"{', '.join(sorted(_ASYMMETRIC_ALGORITHMS))}"
            )
        if self.leeway_seconds < 0 or self.jwks_cache_seconds < 0 or self.key_refresh_interval_seconds < 0:
            raise ValueError("OIDC leeway and cache periods must be 0 or more")
        if self.http_timeout_seconds <= 0:
            raise ValueError("the OIDC HTTP timeout must be more than 0 seconds")
        object.__setattr__(self, "role_map", MappingProxyType(dict(self.role_map)))

    @property
    def discovery_url(self) -> str:
        """Where the provider's metadata lives (OpenID Connect Discovery 1.0 §4: no double slash)."""
        return self.issuer.rstrip("/") + _DISCOVERY_PATH


@dataclass(frozen=True)
class OidcIdentity:
    """Who a verified provider token stands for.

    Attributes:
        username: from the username claim, else `sub`.
        role: the most privileged of our roles the token's provider roles map to.
        subject: the provider's stable id for the account (`sub`).
        issuer: the provider (`iss`).
        expires_at: when the token stops being valid (`exp`, UTC).
        claims: every claim of the token, read-only.
    """

    username: str
    role: Role
    subject: str
    issuer: str
    expires_at: datetime
    claims: Mapping[str, Any]


@dataclass(frozen=True)
class _KeyCache:
    """One fetched key set and when it is due again (time.monotonic seconds)."""

    keys: Mapping[str, Key]  # by kid
    refresh_at: float


class OidcVerifier:
    """Verify bearer tokens of one OpenID Connect provider; safe to share between threads.

    Nothing is fetched until the first token is verified, so a provider outage does not stop the
    server from starting; it makes provider tokens fail with IdentityProviderUnavailable instead.
    """

    def __init__(self, settings: OidcSettings) -> None:
        """Check tokens as `settings` say."""
        self._settings = settings
        # Held while fetching, so concurrent requests wait for one fetch instead of each starting one.
        self._lock = threading.Lock()
        self._cache: _KeyCache | None = None
        self._next_forced_refresh = -math.inf

    @property
    def settings(self) -> OidcSettings:
        """The settings this verifier checks with."""
        return self._settings

    def looks_like_issuer_token(self, token: str) -> bool:
        """Whether `token` claims to come from our provider (unverified; for routing only)."""
        try:
            claims = json.loads(jws.extract_compact(token.encode()).payload)
        except (JoseError, ValueError, TypeError):
            return False
        return isinstance(claims, dict) and claims.get("iss") == self._settings.issuer

    def verify(self, token: str) -> OidcIdentity:
        """Check a provider token's signature and claims, and map it to one of our roles.

        Raises:
            InvalidToken: the token is malformed, badly signed, for someone else, out of its validity,
                or its roles map to none of ours; the message says which.
            IdentityProviderUnavailable: the provider's discovery document or keys could not be fetched.
        """
        settings = self._settings
        try:
            header = jws.extract_compact(token.encode()).headers()
        except (JoseError, ValueError, TypeError) as exc:
            raise InvalidToken("the bearer token is not a signed JWT (three base64url parts)") from exc
        algorithm = header.get("alg")
        if algorithm not in settings.algorithms:
            raise InvalidToken(
                f"the OIDC token is signed with alg {algorithm!r}; accepted: {', '.join(settings.algorithms)}"
            )
        key = self._signing_key(header.get("kid"))
        try:
            claims = jwt.decode(token, key, algorithms=[algorithm]).claims
        except BadSignatureError as exc:
            raise InvalidToken(f"the OIDC token's signature does not verify with key {key.kid!r}") from exc
        except JoseError as exc:
            raise InvalidToken(f"the OIDC token cannot be checked with key {key.kid!r}: {exc}") from exc
        self._check_claims(claims)
        return OidcIdentity(
            username=self._username(claims),
            role=self._role(claims),
            subject=claims["sub"],
            issuer=claims["iss"],
            expires_at=datetime.fromtimestamp(claims["exp"], UTC),
            claims=MappingProxyType(claims),
        )

    def _check_claims(self, claims: dict[str, Any]) -> None:
        settings = self._settings
        registry = jwt.JWTClaimsRegistry(
            leeway=settings.leeway_seconds,
            iss={"essential": True, "value": settings.issuer},
            aud={"essential": True, "value": settings.audience},
            exp={"essential": True},
            sub={"essential": True},
        )
        try:
            registry.validate(claims)
        except ExpiredTokenError as exc:
            raise InvalidToken(
                f"the OIDC token expired at {_utc(claims['exp'])}; get a new one from the identity provider"
            ) from exc
        except MissingClaimError as exc:
            raise InvalidToken(f"the OIDC token lacks the required claim(s) {exc.claim}") from exc
        except ClaimError as exc:
            raise InvalidToken(_claim_problem(exc, claims, settings)) from exc

    def _username(self, claims: Mapping[str, Any]) -> str:
        for name in (self._settings.username_claim, "sub"):
            value = _claim(claims, name)
            if isinstance(value, str) and value:
                return value
        raise InvalidToken(f"the OIDC token has neither a {self._settings.username_claim!r} nor a 'sub' string")

    def _role(self, claims: Mapping[str, Any]) -> Role:
        settings = self._settings
        value = _claim(claims, settings.role_claim)
        if value is None:
            raise InvalidToken(
                f"the OIDC token has no claim {settings.role_claim!r} (it has: {', '.join(sorted(claims))}); "
                "set WEBPACS_OIDC_ROLE_CLAIM to the claim carrying the user's roles "
                "(Keycloak realm roles: realm_access.roles)"
            )
        seen = _names(value)
        mapped = {Role(settings.role_map[name]) for name in seen if name in settings.role_map}
        if not mapped:
            current = ",".join(f"{k}={v}" for k, v in settings.role_map.items())
            example = f"{current},{seen[0]}=viewer" if seen else current
            raise InvalidToken(
                f"the OIDC token's claim {settings.role_claim!r} holds {value!r}, none of which "
                f"WEBPACS_OIDC_ROLE_MAP={current!r} maps to a webpacs role; to admit this account map one "
                f"of them, e.g. WEBPACS_OIDC_ROLE_MAP={example!r}"
            )
        return min(mapped, key=ROLE_PRECEDENCE.index)

    def _signing_key(self, kid: object) -> Key:
        """The provider key with id `kid`, fetching the key set when stale or when `kid` is new to it."""
        with self._lock:
            now = time.monotonic()
            cache = self._cache
            if cache is None or now >= cache.refresh_at:
                cache = self._refresh(now)
            key = _pick(cache.keys, kid)
            # A new kid usually means the provider rotated its keys (OpenID Connect Core §10.1.1);
            # fetch once more, rate-limited so that made-up kids cannot make us hammer the provider.
            if key is None and now >= self._next_forced_refresh:
                self._next_forced_refresh = now + self._settings.key_refresh_interval_seconds
                cache = self._refresh(now, keep_stale=False)
                key = _pick(cache.keys, kid)
            published = len(cache.keys)
        if key is None:
            if kid is None:
                raise InvalidToken(f"the OIDC token's header has no kid, and the provider publishes {published} keys")
            raise InvalidToken(f"the OIDC token is signed with key {kid!r}, which the provider does not publish")
        return key

    def _refresh(self, now: float, *, keep_stale: bool = True) -> _KeyCache:
        """Fetch the key set (caller holds the lock).

        When the fetch fails and `keep_stale` allows it, the previous keys stay in use and the fetch is
        retried after the refresh interval: a short provider outage must not lock every user out.

        Raises:
            IdentityProviderUnavailable: the fetch failed and there are no keys to fall back on.
        """
        try:
            keys = self._fetch_keys()
        except IdentityProviderUnavailable as exc:
            if not keep_stale or self._cache is None:
                raise
            logger.warning("OIDC keys not refreshed, still using the previous ones: %s", exc)
            self._cache = _KeyCache(self._cache.keys, now + self._settings.key_refresh_interval_seconds)
        else:
            self._cache = _KeyCache(MappingProxyType(keys), now + self._settings.jwks_cache_seconds)
        return self._cache

    def _fetch_keys(self) -> dict[str, Key]:
        settings = self._settings
        discovery = _get_json(settings.discovery_url, settings.http_timeout_seconds)
        # OpenID Connect Discovery 1.0 §4.3: the issuer in the document must equal the one configured.
        if discovery.get("issuer") != settings.issuer:
            raise IdentityProviderUnavailable(
                f"{settings.discovery_url} names issuer {discovery.get('issuer')!r}, but WEBPACS_OIDC_ISSUER is "
                f"{settings.issuer!r}; they must be equal, character for character"
            )
        jwks_uri = discovery.get("jwks_uri")
        if not isinstance(jwks_uri, str):
            raise IdentityProviderUnavailable(f"{settings.discovery_url} names no jwks_uri")
        try:
            _check_provider_url("its jwks_uri", jwks_uri)
        except ValueError as exc:
            raise IdentityProviderUnavailable(f"{settings.discovery_url}: {exc}") from exc
        keys = _signing_keys(jwks_uri, _get_json(jwks_uri, settings.http_timeout_seconds))
        if not keys:
            raise IdentityProviderUnavailable(f"{jwks_uri} publishes no signing key this server can use")
        return keys


def _signing_keys(url: str, document: Mapping[str, Any]) -> dict[str, Key]:
    """The signature keys of a JWKS by kid; encryption keys and key types we cannot use are left out."""
    entries = document.get("keys")
    if not isinstance(entries, list):
        raise IdentityProviderUnavailable(f"{url} is not a JWK Set (RFC 7517 §5: no 'keys' list)")
    keys: dict[str, Key] = {}
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue
        try:
            key = import_key(entry)
        except (JoseError, ValueError, TypeError) as exc:
            logger.warning("OIDC key %r from %s skipped: %s", entry.get("kid"), url, exc)
            continue
        if isinstance(key, (RSAKey, ECKey, OKPKey)):
            key.ensure_kid()  # a key without kid is known by its RFC 7638 thumbprint
            keys[str(key.kid)] = key
    return keys


def _pick(keys: Mapping[str, Key], kid: object) -> Key | None:
    if kid is None and len(keys) == 1:
        return next(iter(keys.values()))
    return keys.get(kid) if isinstance(kid, str) else None


def _get_json(url: str, timeout: float) -> dict[str, Any]:
    """GET a JSON object from the provider.

    Raises:
        IdentityProviderUnavailable: naming the URL and the cause.
    """
    request = urllib.request.Request(url, headers={"Accept": "application/json"})  # noqa: S310 - scheme checked
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - scheme checked
            body = response.read(_MAX_DOCUMENT_BYTES + 1)
    except (OSError, ValueError) as exc:  # URLError, HTTPError and timeouts are OSErrors
        raise IdentityProviderUnavailable(f"GET {url} failed: {exc}") from exc
    if len(body) > _MAX_DOCUMENT_BYTES:
        raise IdentityProviderUnavailable(f"GET {url} returned more than {_MAX_DOCUMENT_BYTES} bytes")
    try:
        document = json.loads(body)
    except ValueError as exc:
        raise IdentityProviderUnavailable(f"GET {url} did not return JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise IdentityProviderUnavailable(f"GET {url} returned JSON that is not an object")
    return document


def _claim(claims: Mapping[str, Any], path: str) -> Any:
    """A claim by name, or by a dotted path into nested objects when no claim has the full name."""
    if path in claims:
        return claims[path]
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _names(value: object) -> list[str]:
    """The role names in a claim: a list of names, or one name on its own (providers do both)."""
    if isinstance(value, str):
        return [value]
    return [name for name in value if isinstance(name, str)] if isinstance(value, list) else []


def _claim_problem(error: ClaimError, claims: Mapping[str, Any], settings: OidcSettings) -> str:
    """Say what is wrong with the claim `error` names (RFC 7519 §4.1)."""
    value = claims.get(error.claim)
    if error.claim == "iss":
        return f"the OIDC token was issued by {value!r}, not by WEBPACS_OIDC_ISSUER={settings.issuer!r}"
    if error.claim == "aud":
        return (
            f"the OIDC token is for audience {value!r}, not WEBPACS_OIDC_AUDIENCE={settings.audience!r}; "
            "have the provider add this audience (Keycloak: an audience mapper on the client)"
        )
    if error.claim == "nbf" and _is_time(value):
        return f"the OIDC token is not valid before {_utc(value)}; check the clocks of this host and the provider"
    if error.claim == "iat" and _is_time(value):
        return f"the OIDC token says it was issued at {_utc(value)}, in the future; check the clocks"
    return f"the OIDC token's claim {error.claim!r} is invalid: {error.description}"


def _is_time(value: object) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _utc(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")
