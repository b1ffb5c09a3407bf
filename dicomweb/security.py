"""Authentication for every route but the declared public ones, and the guards that apply the policy."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import anyio.to_thread
from litestar.exceptions import NotAuthorizedException, NotFoundException, PermissionDeniedException
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult, DefineMiddleware

from auth.errors import InvalidToken
from auth.policy import visible_studies
from auth.principals import Permission, Principal

if TYPE_CHECKING:
    from litestar.connection import ASGIConnection
    from litestar.handlers.base import BaseRouteHandler
    from litestar.types import Guard

    from dicomweb.context import AppContext

__all__ = ["PUBLIC_PATHS", "admin_only", "authentication", "principal_of", "require", "unrestricted"]

# Reachable without a token: the readiness probe, the API description, and the steps that hand out
# tokens (login, refresh, redeeming a share link), which check credentials of their own.
PUBLIC_PATHS: Final = (
    "^/healthz$",
    "^/openapi.json$",
    "^/schema",
    "^/api/auth/login$",
    "^/api/auth/refresh$",
    "^/api/share-links/(?:challenge|redeem)$",
    # The web UI, its assets, the OHIF viewer and share-link landing pages are static files (issue #7):
    # a browser must load them before it can hold a token; every call they make for data needs one.
    "^/$",
    "^/ui/",
    "^/viewer(/|$)",
    "^/share/[^/]+$",
)

# Where a request names its study: the path parameter of DICOMweb routes, WADO-URI's query key.
_STUDY_PATH_PARAMETER: Final = "study"
_STUDY_QUERY_PARAMETER: Final = "studyUID"


class _BearerAuthentication(AbstractAuthenticationMiddleware):
    async def authenticate_request(self, connection: ASGIConnection[Any, Any, Any, Any]) -> AuthenticationResult:
        header = connection.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise NotAuthorizedException(
                "send 'Authorization: Bearer <token>': log in at /api/auth/login or create a token with "
                "'webpacs token create'",
                headers={"WWW-Authenticate": 'Bearer realm="webpacs"'},
            )
        context: AppContext = connection.app.state.context
        # A token checked moments ago is answered from memory, on the loop: no worker thread.
        principal = context.access.cached(token)
        if principal is not None:
            return AuthenticationResult(user=principal, auth=None)
        try:
            principal = await anyio.to_thread.run_sync(context.access.authenticate, token)
        except InvalidToken as exc:
            raise NotAuthorizedException(
                str(exc), headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}
            ) from exc
        return AuthenticationResult(user=principal, auth=None)


def authentication() -> DefineMiddleware:
    """The middleware that turns a bearer credential into `request.user` (a Principal)."""
    return DefineMiddleware(_BearerAuthentication, exclude=list(PUBLIC_PATHS))


def principal_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal:
    """The authenticated principal of a request (guarded routes only)."""
    principal = connection.user
    if not isinstance(principal, Principal):
        raise NotAuthorizedException("this needs a bearer token")
    return principal


def require(permission: Permission) -> Guard:
    """A guard letting through principals whose role grants `permission` (403 otherwise).

    When the request names a study, the principal must also be allowed to see it: a study outside
    its filter answers 404, exactly like a study that does not exist, so its existence does not leak.
    """

    async def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        principal = principal_of(connection)
        if not principal.may(permission):
            raise PermissionDeniedException(f"this needs the '{permission.value}' permission, which your role lacks")
        policy = visible_studies(principal)
        if policy is None or permission is Permission.STORE:
            # Storing adds to a study and reveals nothing of it; who may store is the role's say.
            return
        study_uid = connection.path_params.get(_STUDY_PATH_PARAMETER) or connection.query_params.get(
            _STUDY_QUERY_PARAMETER
        )
        if study_uid is None:
            return
        context: AppContext = connection.app.state.context
        if not await context.visible_studies.allows(policy, str(study_uid)):
            raise NotFoundException(f"there is no study {study_uid}")

    return guard


async def unrestricted(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """A guard for views of the whole archive (status, all share links): only unfiltered principals."""
    if principal_of(connection).restricted:
        raise PermissionDeniedException("your account sees only some studies, so it cannot use this")


admin_only: Final = require(Permission.ADMINISTER)
