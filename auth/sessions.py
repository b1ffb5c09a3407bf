"""Login sessions: short-lived signed access tokens (JWT, HS256) plus rotating refresh tokens.

The signing key lives in the database (`server_secret`), created by whichever worker starts first,
so every stateless worker verifies every other worker's tokens with no shared file or setting.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any, Final

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import OctKey
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from auth.errors import InvalidCredentials, InvalidToken
from auth.models import RefreshToken, ServerSecret, aware

if TYPE_CHECKING:
    from sqlalchemy import Engine

__all__ = ["ACCESS_TOKEN_LIFETIME", "ISSUER", "IssuedSession", "SessionClaims", "SessionService"]

ISSUER: Final = "webpacs"
ACCESS_TOKEN_LIFETIME: Final = timedelta(minutes=15)
REFRESH_TOKEN_LIFETIME: Final = timedelta(days=30)
_ALGORITHM: Final = "HS256"
_KEY_NAME: Final = "session-signing-key"
_refresh_table = RefreshToken.__table__  # type: ignore[attr-defined]
_secret_table = ServerSecret.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class IssuedSession:
    """What a successful login or refresh returns to the client."""

    access_token: str
    refresh_token: str | None
    expires_in: int


@dataclass(frozen=True)
class SessionClaims:
    """The verified content of one of our access tokens.

    Attributes:
        kind: "user" for a login session, "share" for a redeemed share link.
        subject: the user id or the share link id.
        study_uid: for share sessions, the one study they may read.
    """

    kind: str
    subject: int
    study_uid: str | None


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class SessionService:
    """Issue and verify access tokens; issue, rotate and revoke refresh tokens."""

    def __init__(self, engine: Engine) -> None:
        """Use (and on first start create) the signing key in `engine`'s database, at first need."""
        self._engine = engine
        self._claims = jwt.JWTClaimsRegistry(
            iss={"essential": True, "value": ISSUER},
            aud={"essential": True, "value": ISSUER},
            exp={"essential": True},
            sub={"essential": True},
        )

    def issue_access(self, kind: str, subject: int, *, study_uid: str | None = None, lifetime: timedelta) -> str:
        """A signed access token for a user (kind "user") or a share link (kind "share")."""
        now = datetime.now(UTC)
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "aud": ISSUER,
            "sub": str(subject),
            "kind": kind,
            "iat": int(now.timestamp()),
            "exp": int((now + lifetime).timestamp()),
            "jti": secrets.token_urlsafe(12),
        }
        if study_uid is not None:
            claims["study"] = study_uid
        return jwt.encode({"alg": _ALGORITHM, "typ": "JWT"}, claims, self._key)

    def login(self, user_id: int) -> IssuedSession:
        """A new session for a user who just proved who they are."""
        return IssuedSession(
            access_token=self.issue_access("user", user_id, lifetime=ACCESS_TOKEN_LIFETIME),
            refresh_token=self._new_refresh_token(user_id),
            expires_in=int(ACCESS_TOKEN_LIFETIME.total_seconds()),
        )

    def refresh(self, refresh_token: str) -> tuple[int, IssuedSession]:
        """Rotate a refresh token: the old one stops working, a new pair is issued for its user.

        Raises:
            InvalidCredentials: unknown, revoked, expired or already used.
        """
        now = datetime.now(UTC)
        with self._engine.begin() as connection:
            # The conditional UPDATE is the rotation: of two concurrent uses only one wins.
            row = connection.execute(
                update(_refresh_table)
                .where(_refresh_table.c.token_hash == _digest(refresh_token), _refresh_table.c.revoked_at.is_(None))
                .values(revoked_at=now)
                .returning(_refresh_table.c.user_id, _refresh_table.c.expires_at)
            ).first()
        if row is None or aware(row.expires_at) <= now:
            raise InvalidCredentials("the refresh token is unknown, used, revoked or expired; log in again")
        return row.user_id, self.login(row.user_id)

    def logout(self, refresh_token: str) -> None:
        """Revoke a refresh token (the access token expires on its own within minutes)."""
        with self._engine.begin() as connection:
            connection.execute(
                update(_refresh_table)
                .where(_refresh_table.c.token_hash == _digest(refresh_token), _refresh_table.c.revoked_at.is_(None))
                .values(revoked_at=datetime.now(UTC))
            )

    def verify(self, token: str) -> SessionClaims:
        """The claims of one of our access tokens.

        Raises:
            InvalidToken: not ours, tampered, of another algorithm, or expired.
        """
        try:
            decoded = jwt.decode(token, self._key, algorithms=[_ALGORITHM])
            self._claims.validate(decoded.claims)
            claims = decoded.claims
            kind = str(claims["kind"])
            subject = int(claims["sub"])
        except (JoseError, KeyError, ValueError) as exc:
            raise InvalidToken(f"the access token is not valid ({exc}); log in again") from exc
        study = claims.get("study")
        return SessionClaims(kind=kind, subject=subject, study_uid=None if study is None else str(study))

    def _new_refresh_token(self, user_id: int) -> str:
        token = "wpr_" + secrets.token_urlsafe(32)
        now = datetime.now(UTC)
        with self._engine.begin() as connection:
            connection.execute(
                _refresh_table.insert().values(
                    user_id=user_id,
                    token_hash=_digest(token),
                    created_at=now,
                    expires_at=now + REFRESH_TOKEN_LIFETIME,
                )
            )
        return token

    @cached_property
    def _key(self) -> OctKey:
        return OctKey.import_key(self._signing_secret())

    def _signing_secret(self) -> bytes:
        """The shared key: read it, or create it when this is the first worker ever to start."""
        query = select(_secret_table.c.value).where(_secret_table.c.name == _KEY_NAME)
        with self._engine.connect() as connection:
            value = connection.execute(query).scalar()
        if value is None:
            try:
                with self._engine.begin() as connection:
                    connection.execute(
                        _secret_table.insert().values(
                            name=_KEY_NAME, value=secrets.token_hex(32), created_at=datetime.now(UTC)
                        )
                    )
            except IntegrityError:
                pass  # another worker created it at the same moment: use theirs
            with self._engine.connect() as connection:
                value = connection.execute(query).scalar_one()
        return bytes.fromhex(value)
