"""A test double of an external OpenID Connect provider (a hospital's Keycloak or Entra ID).

It is built here because no real identity provider is reachable from the test machines. It is a real
HTTP server on a free loopback port, serving what a relying party fetches from a provider — the
discovery document (OpenID Connect Discovery 1.0 §4) and the JWK Set (RFC 7517 §5) at Keycloak's
paths — and it mints tokens signed with its own RSA and EC keys (joserfc). Keys can be rotated, the
advertised issuer can be changed and the server stopped, to drive the verifier's failure paths.
Every request is counted per path, so tests can prove when the verifier fetched.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

if TYPE_CHECKING:
    from joserfc.jwk import Key

__all__ = ["AUDIENCE", "OidcProvider"]

AUDIENCE = "webpacs"
REALM_PATH = "/realms/hospital"
DISCOVERY_PATH = REALM_PATH + "/.well-known/openid-configuration"
JWKS_PATH = REALM_PATH + "/protocol/openid-connect/certs"


class OidcProvider:
    """An identity provider on 127.0.0.1 with one RSA and one EC signing key (plus an encryption key)."""

    def __init__(self) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self.issuer = f"http://127.0.0.1:{self._server.server_port}{REALM_PATH}"
        self.advertised_issuer = self.issuer  # what the discovery document claims; tests may change it
        self.rsa_key = RSAKey.generate_key(2048, parameters={"kid": "rsa-1", "use": "sig", "alg": "RS256"})
        self.ec_key = ECKey.generate_key("P-256", parameters={"kid": "ec-1", "use": "sig"})
        # Keycloak also publishes an encryption key; a verifier must not take it for a signing key.
        self.enc_key = RSAKey.generate_key(2048, parameters={"kid": "enc-1", "use": "enc", "alg": "RSA-OAEP"})
        self.requests: Counter[str] = Counter()
        self._lock = threading.Lock()
        # A short poll interval makes stop() quick (shutdown waits for the serving loop's next poll).
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, name="oidc-provider", daemon=True
        )

    def __enter__(self) -> OidcProvider:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop answering: later connections are refused, as when the provider is down."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()

    def jwks(self) -> dict[str, Any]:
        """The public JWK Set as served."""
        with self._lock:
            keys = (self.rsa_key, self.ec_key, self.enc_key)
        return {"keys": [key.as_dict(private=False) for key in keys]}

    def rotate(self) -> RSAKey:
        """Replace the RSA signing key with a new one under a new kid (the old one is withdrawn)."""
        number = int(str(self.rsa_key.kid).rsplit("-", 1)[1]) + 1
        key = RSAKey.generate_key(2048, parameters={"kid": f"rsa-{number}", "use": "sig", "alg": "RS256"})
        with self._lock:
            self.rsa_key = key
        return key

    def claims(self, **overrides: Any) -> dict[str, Any]:
        """Keycloak-shaped access-token claims valid for 5 minutes; an override of None drops the claim."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": AUDIENCE,
            "sub": str(uuid.uuid4()),
            "azp": AUDIENCE,
            "preferred_username": "dr.house",
            "iat": now,
            "nbf": now,
            "exp": now + 300,
            "roles": ["pacs-radiologist"],
            "realm_access": {"roles": ["offline_access", "pacs-radiologist"]},
        }
        claims.update(overrides)
        return {name: value for name, value in claims.items() if value is not None}

    def mint(self, key: Key | None = None, alg: str = "RS256", **overrides: Any) -> str:
        """A token signed by `key` (default: the current RSA key) with `claims(**overrides)`."""
        key = key or self.rsa_key
        return jwt.encode({"alg": alg, "kid": key.kid}, self.claims(**overrides), key, algorithms=[alg])

    def _document(self, path: str) -> dict[str, Any] | None:
        with self._lock:
            self.requests[path] += 1
        if path == DISCOVERY_PATH:
            base = f"http://127.0.0.1:{self._server.server_port}{REALM_PATH}"
            return {
                "issuer": self.advertised_issuer,
                "jwks_uri": base + "/protocol/openid-connect/certs",
                "authorization_endpoint": base + "/protocol/openid-connect/auth",
                "token_endpoint": base + "/protocol/openid-connect/token",
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256", "ES256"],
            }
        if path == JWKS_PATH:
            return self.jwks()
        return None


def _handler_for(provider: OidcProvider) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            document = provider._document(self.path)
            body = json.dumps(document).encode()
            self.send_response(404 if document is None else 200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            """Keep the test output quiet."""

    return Handler
