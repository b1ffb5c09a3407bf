"""The one place where domain errors become HTTP responses (application/problem+json, RFC 9457)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Final

from litestar import Response
from litestar.exceptions import HTTPException

from auth.errors import (
    AuthError,
    DuplicateUser,
    IdentityProviderUnavailable,
    InvalidCredentials,
    InvalidToken,
    InvalidUser,
    TooManyAttempts,
    UnknownRole,
    UnknownShareLink,
    UnknownUser,
)
from storage.errors import (
    ArchiveError,
    BlobError,
    ConflictingInstance,
    InvalidInstance,
    InvalidQuery,
    NotAcceptable,
    NotFound,
)
from storage.forwarding import DuplicateRule, JobConflict
from storage.index.nodes import DuplicateNode
from storage.retention import DuplicatePolicy

if TYPE_CHECKING:
    from litestar import Request

__all__ = ["EXCEPTION_HANDLERS", "PROBLEM_JSON", "Problem", "problem"]

log = logging.getLogger(__name__)

PROBLEM_JSON: Final = "application/problem+json"

# Most specific first: the first matching class decides the status.
_STATUS_BY_ERROR: Final[tuple[tuple[type[Exception], int], ...]] = (
    (NotFound, 404),
    (DuplicateNode, 409),
    (DuplicatePolicy, 409),
    (DuplicateRule, 409),
    (JobConflict, 409),
    (ConflictingInstance, 409),
    (InvalidQuery, 400),
    (NotAcceptable, 406),
    (InvalidInstance, 409),
    (BlobError, 503),
    (InvalidToken, 401),
    (InvalidCredentials, 401),
    (TooManyAttempts, 429),
    (DuplicateUser, 409),
    (InvalidUser, 400),
    (UnknownRole, 400),
    (UnknownUser, 404),
    (UnknownShareLink, 404),
    (IdentityProviderUnavailable, 503),
    (ArchiveError, 400),
    (AuthError, 403),
)


@dataclass(frozen=True, slots=True)
class Problem:
    """An error, as RFC 9457 problem details: `detail` names the bad value and says what to do."""

    type: str
    title: str
    status: int
    detail: str


def problem(status: int, detail: str, *, headers: dict[str, str] | None = None) -> Response[Problem]:
    """An RFC 9457 problem response."""
    body = Problem(type="about:blank", title=HTTPStatus(status).phrase, status=status, detail=detail)
    return Response(content=body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _domain_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Problem]:
    status = next(code for kind, code in _STATUS_BY_ERROR if isinstance(exc, kind))
    if status >= 500:
        log.error("%s %s failed: %s", request.method, request.url.path, exc)
    headers = None
    if status == 401:
        headers = {"WWW-Authenticate": 'Bearer realm="webpacs"'}
    elif isinstance(exc, TooManyAttempts):
        headers = {"Retry-After": str(exc.retry_after)}
    return problem(status, str(exc), headers=headers)


def _http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Problem]:
    detail = exc.detail
    extra = getattr(exc, "extra", None)
    if extra:
        detail = f"{detail}: {extra}"
    return problem(exc.status_code, str(detail), headers=exc.headers)


def _undecodable(request: Request[Any, Any, Any], exc: UnicodeDecodeError) -> Response[Problem]:
    # Raised while parsing a request (a form field that is not UTF-8): the client's error, not ours.
    log.info("%s %s: undecodable request text: %s", request.method, request.url.path, exc)
    return problem(400, f"the request holds text that is not UTF-8 ({exc.reason} at byte {exc.start})")


def _unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[Problem]:
    log.exception("%s %s failed unexpectedly", request.method, request.url.path, exc_info=exc)
    return problem(500, "internal error; the server log has the details")


EXCEPTION_HANDLERS: Final = {
    ArchiveError: _domain_error,
    AuthError: _domain_error,
    HTTPException: _http_error,
    UnicodeDecodeError: _undecodable,
    Exception: _unexpected,
}
