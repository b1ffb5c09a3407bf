"""Management API: API tokens, server status, the readiness probe and the OpenAPI document."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from importlib.metadata import version
from typing import Annotated, Any, Final

import anyio.to_thread
import msgspec
from litestar import Request, Response, delete, get, post
from litestar.exceptions import NotFoundException
from litestar.openapi import ResponseSpec
from litestar.params import KwargDefinition, Parameter

from auth.principals import Role
from dicomweb.context import app_context
from dicomweb.openapi import PublicOperation, problems
from dicomweb.security import admin_only

__all__ = ["ADMIN_HANDLERS"]

_MAX_ID: Final = 2**31 - 1  # the largest id column value on PostgreSQL (INTEGER)
_NO_NUL: Final = "^[^\x00]*$"


@dataclass(frozen=True)
class TokenRequest:
    """A token to mint: a name to recognise it by, a role, an optional validity in days."""

    # msgspec.Meta checks, KwargDefinition documents: the name fits its column (PostgreSQL text holds
    # no NUL), the expiry a datetime.
    name: Annotated[
        str,
        msgspec.Meta(min_length=1, max_length=200, pattern=_NO_NUL),
        KwargDefinition(min_length=1, max_length=200, pattern=_NO_NUL),
    ]
    role: Role
    valid_days: Annotated[int, msgspec.Meta(ge=1, le=36500), KwargDefinition(ge=1, le=36500)] | None = None


@dataclass(frozen=True)
class MintedToken:
    """The new token, shown once: only its digest is kept."""

    token: str
    name: str
    role: Role


@dataclass(frozen=True)
class TokenInfo:
    """A token's public facts (never the token)."""

    id: int
    name: str
    role: Role
    user_id: int | None  # set for a user's personal token
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True)
class Status:
    """What the archive holds."""

    version: str
    studies: int
    series: int
    instances: int
    bytes: int
    recycle_days: int  # 0: deleted studies go at once; else they wait this long in the recycle bin


@post(
    "/api/tokens",
    guards=[admin_only],
    tags=["admin"],
    operation_id="CreateToken",
    summary="Create an API token",
    responses=problems(400, 401, 403),
)
async def create_token(request: Request[Any, Any, Any], data: TokenRequest) -> MintedToken:
    """Mint an API token (admin only)."""
    tokens = app_context(request).access.tokens
    token = await anyio.to_thread.run_sync(lambda: tokens.create(data.name, data.role, valid_days=data.valid_days))
    return MintedToken(token=token, name=data.name, role=data.role)


@get(
    "/api/tokens",
    guards=[admin_only],
    tags=["admin"],
    operation_id="ListTokens",
    summary="List API tokens",
    responses=problems(401, 403),
)
async def list_tokens(request: Request[Any, Any, Any]) -> list[TokenInfo]:
    """Every API token's public facts (admin only)."""
    rows = await anyio.to_thread.run_sync(app_context(request).access.tokens.list)
    return [TokenInfo(**row) for row in rows]  # type: ignore[arg-type]


@delete(
    "/api/tokens/{token_id:int}",
    guards=[admin_only],
    tags=["admin"],
    operation_id="RevokeToken",
    summary="Revoke an API token",
    responses=problems(400, 401, 403, 404),
)
async def revoke_token(request: Request[Any, Any, Any], token_id: Annotated[int, Parameter(ge=1, le=_MAX_ID)]) -> None:
    """Revoke a token (admin only); it stops working within seconds."""
    if not await anyio.to_thread.run_sync(app_context(request).access.tokens.revoke, token_id):
        raise NotFoundException(f"there is no token with id {token_id}")


@get(
    "/api/status",
    guards=[admin_only],
    tags=["admin"],
    operation_id="GetStatus",
    summary="Archive status",
    responses=problems(401, 403),
)
async def status(request: Request[Any, Any, Any]) -> Status:
    """Counts of what the archive holds, and the server version."""
    counts = await anyio.to_thread.run_sync(app_context(request).archive.index.counts)
    recycle_days = app_context(request).settings.recycle_days
    return Status(version("webpacs"), counts.studies, counts.series, counts.instances, counts.bytes, recycle_days)


@get(
    "/healthz",
    tags=["health"],
    operation_id="Health",
    summary="Readiness probe",
    operation_class=PublicOperation,
    response_description="Ready: the database and the blob store answer.",
    responses={
        503: ResponseSpec(
            dict[str, str], description="Not ready: each failing dependency and why.", generate_examples=False
        )
    },
    exclude_from_auth=True,
)
async def health(request: Request[Any, Any, Any]) -> Response[dict[str, str]]:
    """Readiness: 200 when the database and the blob store answer, 503 otherwise (public)."""
    context = app_context(request)
    failing = await anyio.to_thread.run_sync(context.archive.readiness_problems)
    if failing:
        return Response({"status": "unavailable", **failing}, status_code=503)
    return Response({"status": "ok"})


@get(
    "/openapi.json",
    tags=["health"],
    operation_id="GetOpenApi",
    summary="This API's OpenAPI description",
    operation_class=PublicOperation,
    exclude_from_auth=True,
)
async def openapi_document(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """The OpenAPI description of every route (public)."""
    schema: dict[str, Any] = request.app.openapi_schema.to_schema()
    return schema


ADMIN_HANDLERS: Final = [create_token, list_tokens, revoke_token, status, health, openapi_document]
