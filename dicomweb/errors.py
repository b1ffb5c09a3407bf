"""The one place where domain errors become HTTP responses (application/problem+json, RFC 9457)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Final

from litestar import Response
from litestar.exceptions import HTTPException

from auth.errors import AuthError, InvalidToken, UnknownRole
from storage.errors import (
    ArchiveError,
    BlobError,
    InvalidInstance,
    InvalidQuery,
    NotAcceptable,
    NotFound,
)

if TYPE_CHECKING:
    from litestar import Request

__all__ = ["EXCEPTION_HANDLERS", "problem"]

log = logging.getLogger(__name__)

PROBLEM_JSON: Final = "application/problem+json"

# Most specific first: the first matching class decides the status.
_STATUS_BY_ERROR: Final[tuple[tuple[type[Exception], int], ...]] = (
    (NotFound, 404),
    (InvalidQuery, 400),
    (NotAcceptable, 406),
    (InvalidInstance, 409),
    (BlobError, 503),
    (InvalidToken, 401),
    (UnknownRole, 400),
    (ArchiveError, 400),
    (AuthError, 403),
)


def problem(status: int, detail: str, *, headers: dict[str, str] | None = None) -> Response[dict[str, object]]:
    """An RFC 9457 problem response."""
    from http import HTTPStatus

    body: dict[str, object] = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
    }
    return Response(content=body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _domain_error(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, object]]:
    status = next(code for kind, code in _STATUS_BY_ERROR if isinstance(exc, kind))
    if status >= 500:
        log.error("%s %s failed: %s", request.method, request.url.path, exc)
    headers = {"WWW-Authenticate": 'Bearer realm="webpacs"'} if status == 401 else None
    return problem(status, str(exc), headers=headers)


def _http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[dict[str, object]]:
    detail = exc.detail
    extra = getattr(exc, "extra", None)
    if extra:
        detail = f"{detail}: {extra}"
    return problem(exc.status_code, str(detail), headers=exc.headers)


def _unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, object]]:
    log.exception("%s %s failed unexpectedly", request.method, request.url.path, exc_info=exc)
    return problem(500, "internal error; the server log has the details")


EXCEPTION_HANDLERS: Final = {
    ArchiveError: _domain_error,
    AuthError: _domain_error,
    HTTPException: _http_error,
    Exception: _unexpected,
}
