"""Tables owned by auth (they share the index's database, never its modules)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import BigInteger, Column, DateTime, Integer, Text
from sqlmodel import Field, SQLModel

__all__ = ["ApiToken", "AuditEvent", "RefreshToken", "ServerSecret", "ShareLink", "User", "aware"]


def aware(moment: datetime) -> datetime:
    """SQLite returns naive datetimes; auth writes them in UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


class User(SQLModel, table=True):
    """A local account: a password (argon2 hash), a role and an optional study filter."""

    __tablename__ = "app_user"

    id: int | None = Field(default=None, primary_key=True)
    username: str = Field(max_length=128, unique=True, index=True)
    password_hash: str | None = Field(default=None, max_length=256)  # None: login only through OIDC
    role: str = Field(max_length=32)
    # JSON object {keyword: [values]}: the studies this user may see (empty: all).
    study_filter: str = Field(default="{}", sa_type=Text)
    created_at: datetime = Field(sa_type=DateTime(timezone=True))
    disabled_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    last_login_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))


class ApiToken(SQLModel, table=True):
    """A bearer token for scripts and the bridge; only its SHA-256 is stored.

    A personal token belongs to a user and carries that user's role and study filter.
    """

    __tablename__ = "api_token"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=200)
    role: str = Field(max_length=32)
    token_hash: str = Field(max_length=64, unique=True, index=True)
    user_id: int | None = Field(default=None, foreign_key="app_user.id", index=True, ondelete="CASCADE")
    created_at: datetime = Field(sa_type=DateTime(timezone=True))
    expires_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    last_used_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    revoked_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))


class RefreshToken(SQLModel, table=True):
    """A login session's refresh token (SHA-256 kept); rotated on every use."""

    __tablename__ = "refresh_token"

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="app_user.id", index=True, ondelete="CASCADE")
    token_hash: str = Field(max_length=64, unique=True, index=True)
    created_at: datetime = Field(sa_type=DateTime(timezone=True))
    expires_at: datetime = Field(sa_type=DateTime(timezone=True))
    revoked_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))


class ShareLink(SQLModel, table=True):
    """Read-only access to one study for whoever holds the link (and knows its second factor)."""

    __tablename__ = "share_link"

    id: int | None = Field(default=None, primary_key=True)
    token_hash: str = Field(max_length=64, unique=True, index=True)
    study_uid: str = Field(max_length=64, index=True)
    created_by: str = Field(max_length=200)
    created_at: datetime = Field(sa_type=DateTime(timezone=True))
    expires_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    revoked_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    # argon2 hashes of the second factors: a PIN, or the patient's birth date (YYYYMMDD).
    pin_hash: str | None = Field(default=None, max_length=256)
    birth_date_hash: str | None = Field(default=None, max_length=256)
    last_used_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    uses: int = 0


class AuditEvent(SQLModel, table=True):
    """One audited action; rows are only ever inserted (the database refuses updates and deletes)."""

    __tablename__ = "audit_event"

    # 64-bit: a busy archive audits every frame request (INTEGER on SQLite, where it is the rowid).
    id: int | None = Field(
        default=None, sa_column=Column(BigInteger().with_variant(Integer(), "sqlite"), primary_key=True)
    )
    at: datetime = Field(sa_type=DateTime(timezone=True), index=True)
    actor_kind: str = Field(max_length=16)  # user, token, oidc, share, ae, anonymous
    actor: str = Field(max_length=200, index=True)
    action: str = Field(max_length=32, index=True)
    outcome: str = Field(max_length=16)  # success, failure, denied
    study_uid: str | None = Field(default=None, max_length=64, index=True)
    source: str = Field(default="", max_length=200)  # client address
    detail: str = Field(default="", sa_type=Text)


class ServerSecret(SQLModel, table=True):
    """Secrets every worker must share (the session-signing key), created once on first start."""

    __tablename__ = "server_secret"

    name: str = Field(primary_key=True, max_length=64)
    value: str = Field(max_length=256)
    created_at: datetime = Field(sa_type=DateTime(timezone=True))
