"""Login, refresh, logout, who am I, and a user's personal API tokens (`/api/auth`, `/api/me`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Final

import anyio.to_thread
import msgspec
from litestar import Request, delete, get, post
from litestar.exceptions import NotFoundException, PermissionDeniedException
from litestar.params import KwargDefinition, Parameter

from auth.audit import Action, Outcome
from auth.errors import InvalidCredentials, TooManyAttempts
from auth.principals import Permission, PrincipalKind, Role
from dicomweb.audit_trail import audit, client_address
from dicomweb.context import app_context
from dicomweb.openapi import PublicOperation, problems
from dicomweb.security import principal_of

if TYPE_CHECKING:
    from litestar.connection import ASGIConnection
    from litestar.handlers.base import BaseRouteHandler

__all__ = ["SESSION_HANDLERS"]

_MAX_ID: Final = 2**31 - 1
_NO_NUL: Final = "^[^\x00]*$"
_Text = Annotated[
    str,
    msgspec.Meta(min_length=1, max_length=1024, pattern=_NO_NUL),
    KwargDefinition(min_length=1, max_length=1024, pattern=_NO_NUL),
]


@dataclass(frozen=True)
class LoginRequest:
    """A local user's credentials."""

    username: _Text
    password: _Text


@dataclass(frozen=True)
class RefreshRequest:
    """A refresh token from an earlier login or refresh."""

    refresh_token: _Text


@dataclass(frozen=True)
class SessionTokens:
    """A session: a short-lived bearer access token, and the refresh token that renews it."""

    access_token: str
    refresh_token: str | None
    expires_in: int
    token_type: str = "Bearer"  # noqa: S105 - RFC 6750's token type, not a secret


@dataclass(frozen=True)
class Me:
    """Who the bearer is and what it may do."""

    name: str
    role: Role
    kind: PrincipalKind
    permissions: list[str]
    study_filter: dict[str, list[str]]
    study_uid: str | None


@dataclass(frozen=True)
class PersonalTokenRequest:
    """A personal API token to mint: a name and an optional validity in days."""

    name: Annotated[
        str,
        msgspec.Meta(min_length=1, max_length=200, pattern=_NO_NUL),
        KwargDefinition(min_length=1, max_length=200, pattern=_NO_NUL),
    ]
    valid_days: Annotated[int, msgspec.Meta(ge=1, le=36500), KwargDefinition(ge=1, le=36500)] | None = None


@dataclass(frozen=True)
class PersonalToken:
    """The new token, shown once; it acts with its user's role and study filter."""

    token: str
    name: str


@dataclass(frozen=True)
class PersonalTokenInfo:
    """A personal token's public facts (never the token)."""

    id: int
    name: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None


_public: Final[dict[str, Any]] = {"tags": ["auth"], "operation_class": PublicOperation, "exclude_from_auth": True}


@post("/api/auth/login", operation_id="Login", summary="Log in", responses=problems(400, 401, 429), **_public)
async def login(request: Request[Any, Any, Any], data: LoginRequest) -> SessionTokens:
    """Trade a user name and password for a session (public; failures are rate-limited and audited)."""
    access = app_context(request).access
    address = client_address(request.scope)
    failed = ("user", data.username)
    try:
        principal = await anyio.to_thread.run_sync(
            lambda: access.attempt(
                f"user:{data.username}", address, lambda: access.users.authenticate(data.username, data.password)
            )
        )
    except TooManyAttempts:
        audit(request, Action.LOGIN, Outcome.DENIED, actor=failed, detail="rate limited")
        raise
    except InvalidCredentials:
        audit(request, Action.LOGIN, Outcome.FAILURE, actor=failed)
        raise
    assert principal.user_id is not None  # noqa: S101 - a local user always has an id
    session = await anyio.to_thread.run_sync(access.sessions.login, principal.user_id)
    audit(request, Action.LOGIN, Outcome.SUCCESS, actor=("user", principal.name))
    return SessionTokens(session.access_token, session.refresh_token, session.expires_in)


@post("/api/auth/refresh", operation_id="Refresh", summary="Renew a session", responses=problems(400, 401), **_public)
async def refresh(request: Request[Any, Any, Any], data: RefreshRequest) -> SessionTokens:
    """Trade a refresh token for a new pair; the old refresh token stops working (public)."""
    access = app_context(request).access
    user_id, session = await anyio.to_thread.run_sync(access.sessions.refresh, data.refresh_token)
    await anyio.to_thread.run_sync(access.users.principal, user_id)  # a disabled user cannot renew
    return SessionTokens(session.access_token, session.refresh_token, session.expires_in)


@post("/api/auth/logout", tags=["auth"], operation_id="Logout", summary="End a session", responses=problems(400, 401))
async def logout(request: Request[Any, Any, Any], data: RefreshRequest) -> None:
    """Revoke the session's refresh token."""
    await anyio.to_thread.run_sync(app_context(request).access.sessions.logout, data.refresh_token)
    audit(request, Action.LOGOUT, Outcome.SUCCESS)


@get("/api/me", tags=["auth"], operation_id="GetMe", summary="Who am I", responses=problems(401))
async def me(request: Request[Any, Any, Any]) -> Me:
    """The bearer's name, role, permissions and restrictions (the UI shows what it may do)."""
    principal = principal_of(request)
    return Me(
        name=principal.name,
        role=principal.role,
        kind=principal.kind,
        permissions=sorted(p.value for p in Permission if principal.may(p)),
        study_filter={keyword: list(values) for keyword, values in principal.study_filter},
        study_uid=principal.study_uid,
    )


async def _users_only(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """A guard: personal tokens belong to users (not to machine tokens or share-link sessions)."""
    principal = principal_of(connection)
    if principal.user_id is None or principal.kind is PrincipalKind.SHARE:
        raise PermissionDeniedException("personal tokens belong to users: log in as a user first")


def _owner(request: Request[Any, Any, Any]) -> int:
    user_id = principal_of(request).user_id
    assert user_id is not None  # noqa: S101 - the _users_only guard let only users through
    return user_id


_personal: Final[dict[str, Any]] = {"tags": ["auth"], "guards": [_users_only]}


@post(
    "/api/me/tokens",
    **_personal,
    operation_id="CreatePersonalToken",
    summary="Create a personal API token",
    responses=problems(400, 401, 403),
)
async def create_personal_token(request: Request[Any, Any, Any], data: PersonalTokenRequest) -> PersonalToken:
    """Mint a token for scripts that acts as you (your role and study filter, as they are when used)."""
    user_id = _owner(request)
    principal = principal_of(request)
    tokens = app_context(request).access.tokens
    token = await anyio.to_thread.run_sync(
        lambda: tokens.create(data.name, principal.role.value, valid_days=data.valid_days, user_id=user_id)
    )
    return PersonalToken(token=token, name=data.name)


@get(
    "/api/me/tokens",
    **_personal,
    operation_id="ListPersonalTokens",
    summary="List your personal API tokens",
    responses=problems(401, 403),
)
async def list_personal_tokens(request: Request[Any, Any, Any]) -> list[PersonalTokenInfo]:
    """Your tokens' public facts, with when each was last used."""
    user_id = _owner(request)
    rows = await anyio.to_thread.run_sync(app_context(request).access.tokens.list, user_id)
    fields = PersonalTokenInfo.__dataclass_fields__
    return [PersonalTokenInfo(**{k: v for k, v in row.items() if k in fields}) for row in rows]  # type: ignore[arg-type]


@delete(
    "/api/me/tokens/{token_id:int}",
    **_personal,
    operation_id="RevokePersonalToken",
    summary="Revoke a personal API token",
    responses=problems(400, 401, 403, 404),
)
async def revoke_personal_token(
    request: Request[Any, Any, Any], token_id: Annotated[int, Parameter(ge=1, le=_MAX_ID)]
) -> None:
    """Revoke one of your tokens; it stops working within seconds."""
    user_id = _owner(request)
    if not await anyio.to_thread.run_sync(app_context(request).access.tokens.revoke, token_id, user_id):
        raise NotFoundException(f"you have no token with id {token_id}")


SESSION_HANDLERS: Final = [
    login,
    refresh,
    logout,
    me,
    create_personal_token,
    list_personal_tokens,
    revoke_personal_token,
]
