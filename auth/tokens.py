"""API tokens: minted once, shown once, stored as SHA-256, checked on every request.

Tokens are 256-bit random strings, so a fast hash is enough (no password stretching needed: there is
nothing to brute-force), and the per-request check stays far below a millisecond.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import select, update

from auth.errors import InvalidToken
from auth.models import ApiToken, aware
from auth.principals import Principal, Role
from auth.users import parse_role

if TYPE_CHECKING:
    from sqlalchemy import Engine

__all__ = ["TOKEN_PREFIX", "TokenService"]

TOKEN_PREFIX = "wp_"  # noqa: S105 - a recognisable prefix, not a secret
_table = ApiToken.__table__  # type: ignore[attr-defined]


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenService:
    """Mint, verify, list and revoke API tokens.

    Verified tokens are cached for `cache_seconds`, so a revocation takes effect within that time.
    """

    def __init__(self, engine: Engine, *, cache_seconds: float = 10.0) -> None:
        """Use the tables in `engine`'s database."""
        self._engine = engine
        self._cache_seconds = cache_seconds
        self._cache: dict[str, tuple[float, Principal]] = {}
        self._lock = threading.Lock()

    def create(self, name: str, role: str, *, valid_days: int | None = None, user_id: int | None = None) -> str:
        """Mint a token and return it; only its digest is kept.

        A personal token (`user_id` given) acts with its user's current role and study filter.

        Raises:
            UnknownRole: `role` is not a defined role.
        """
        checked_role = parse_role(role)
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        now = datetime.now(UTC)
        with self._engine.begin() as connection:
            connection.execute(
                _table.insert().values(
                    name=name,
                    role=checked_role.value,
                    user_id=user_id,
                    token_hash=_digest(token),
                    created_at=now,
                    expires_at=None if valid_days is None else now + timedelta(days=valid_days),
                )
            )
        return token

    def verify(self, token: str) -> Principal:
        """The principal a bearer token stands for.

        Raises:
            InvalidToken: unknown, revoked or expired.
        """
        cached = self.cached(token)
        if cached is not None:
            return cached
        digest = _digest(token)
        now = time.monotonic()
        with self._engine.connect() as connection:
            row = connection.execute(select(_table).where(_table.c.token_hash == digest)).first()
        if row is None or row.revoked_at is not None:
            raise InvalidToken("the bearer token is unknown or revoked; ask an admin for a new one")
        if row.expires_at is not None and aware(row.expires_at) <= datetime.now(UTC):
            raise InvalidToken("the bearer token has expired; ask an admin for a new one")
        principal = Principal(name=row.name, role=Role(row.role), token_id=row.id, user_id=row.user_id)
        self._touch(row.id)
        with self._lock:
            self._cache[digest] = (now + self._cache_seconds, principal)
        return principal

    def cached(self, token: str) -> Principal | None:
        """The principal of a token `verify` accepted less than `cache_seconds` ago; None otherwise.

        Memory only (no database), so it may run on an event loop.
        """
        with self._lock:
            cached = self._cache.get(_digest(token))
        if cached is None or cached[0] <= time.monotonic():
            return None
        return cached[1]

    def list(self, user_id: int | None = None) -> list[dict[str, object]]:
        """Every token's public facts (never the token or its digest), or those of one user."""
        columns = [
            _table.c[name]
            for name in ("id", "name", "role", "user_id", "created_at", "expires_at", "last_used_at", "revoked_at")
        ]
        query = select(*columns).order_by(_table.c.id)
        if user_id is not None:
            query = query.where(_table.c.user_id == user_id)
        with self._engine.connect() as connection:
            rows = connection.execute(query)
            return [
                {key: aware(value) if isinstance(value, datetime) else value for key, value in row._mapping.items()}
                for row in rows
            ]

    def revoke(self, token_id: int, user_id: int | None = None) -> bool:
        """Revoke a token by id (only among `user_id`'s when given); False when there is no such token."""
        query = update(_table).where(_table.c.id == token_id)
        if user_id is not None:
            query = query.where(_table.c.user_id == user_id)
        with self._engine.begin() as connection:
            result = connection.execute(query.values(revoked_at=datetime.now(UTC)))
        with self._lock:
            self._cache = {k: v for k, v in self._cache.items() if v[1].token_id != token_id}
        return bool(result.rowcount)

    def _touch(self, token_id: int) -> None:
        # Written on cache misses only, so at most once per cache period per token per worker.
        with self._engine.begin() as connection:
            connection.execute(update(_table).where(_table.c.id == token_id).values(last_used_at=datetime.now(UTC)))
