"""Bearer-token authentication for every route but the declared public ones, and permission guards."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult, DefineMiddleware

from auth.errors import InvalidToken
from auth.principals import Permission, Principal

if TYPE_CHECKING:
    from litestar.connection import ASGIConnection
    from litestar.handlers.base import BaseRouteHandler
    from litestar.types import Guard

    from auth.tokens import TokenService

__all__ = ["PUBLIC_PATHS", "admin_only", "authentication", "require"]

# Reachable without a token: the readiness probe and the API description (issue #3).
PUBLIC_PATHS: Final = ("^/healthz$", "^/openapi.json$", "^/schema")


class _BearerAuthentication(AbstractAuthenticationMiddleware):
    async def authenticate_request(self, connection: ASGIConnection[Any, Any, Any, Any]) -> AuthenticationResult:
        header = connection.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise NotAuthorizedException(
                "send 'Authorization: Bearer <token>'; create a token with 'webpacs token create'",
                headers={"WWW-Authenticate": 'Bearer realm="webpacs"'},
            )
        tokens: TokenService = connection.app.state.context.tokens
        try:
            principal = tokens.verify(token.strip())
        except InvalidToken as exc:
            raise NotAuthorizedException(
                str(exc), headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}
            ) from exc
        return AuthenticationResult(user=principal, auth=None)


def authentication() -> DefineMiddleware:
    """The middleware that turns a bearer token into `request.user` (a Principal)."""
    return DefineMiddleware(_BearerAuthentication, exclude=list(PUBLIC_PATHS))


def require(permission: Permission) -> Guard:
    """A guard letting through principals whose role grants `permission` (403 otherwise)."""

    def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        principal = connection.user
        if not isinstance(principal, Principal) or not principal.may(permission):
            raise PermissionDeniedException(f"this needs the '{permission.value}' permission, which your role lacks")

    return guard


admin_only: Final = require(Permission.ADMINISTER)
