"""What goes into the audit log from the HTTP edge: one event per archive request, plus explicit events.

Every DICOMweb, WADO-URI and management request is recorded when its response starts, with who
(principal), what (an Action read off the route), which study, the outcome and the client address.
Logins, share links and their redemption record themselves, since they know more (the user name
tried, the link's study).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qs

from litestar.middleware import ASGIMiddleware

from auth.audit import Action, AuditRecord, Outcome
from auth.principals import Principal
from dicomweb.response_status import call_with_status

if TYPE_CHECKING:
    from litestar import Request
    from litestar.types import ASGIApp, Receive, Scope, Send

    from dicomweb.context import AppContext

__all__ = ["AuditTrail", "audit", "client_address"]

_STUDY_IN_PATH: Final = re.compile(r"^/(?:dicomweb|api)/studies/([0-9.]{1,64})(?:/|$)")
_ATTACHMENTS: Final = re.compile(r"^/api/studies/[^/]+/attachments$")
# QIDO-RS resources (PS3.18 §10.6): the collections, not a study's or series' own resource.
_SEARCH: Final = re.compile(
    r"^/dicomweb/(?:studies(?:/[^/]+/series(?:/[^/]+/instances)?|/[^/]+/instances)?"
    r"|series|instances)$"
)
_VIEW: Final = re.compile(r"/(?:metadata|frames/[^/]+|rendered|thumbnail|bulkdata(?:/.*)?)$")
# Audited where they happen, with what only the handler knows.
_SELF_AUDITED: Final = re.compile(r"^/api/(?:auth/|share-links|studies/[^/]+/send$)")


def client_address(scope: Scope | Any) -> str:
    """The client's address as the server saw it (behind a proxy: run uvicorn with --proxy-headers)."""
    client = scope.get("client")
    return str(client[0]) if client else ""


def _action(method: str, path: str) -> Action | None:
    if path.startswith("/dicomweb/"):
        if method == "POST":
            return Action.STORE
        if method == "DELETE":
            return Action.DELETE
        if _SEARCH.match(path):
            return Action.SEARCH
        return Action.VIEW if _VIEW.search(path) else Action.DOWNLOAD
    if path == "/wado":
        return Action.VIEW
    if _ATTACHMENTS.match(path):
        return Action.STORE if method == "POST" else Action.VIEW
    if path.startswith("/api/") and method != "GET" and not _SELF_AUDITED.match(path):
        return Action.ADMINISTER
    return None


def _outcome(status: int) -> Outcome:
    if status < 400:
        return Outcome.SUCCESS
    return Outcome.DENIED if status in {403, 404} else Outcome.FAILURE


def _study_uid(scope: Scope) -> str | None:
    match = _STUDY_IN_PATH.match(scope.get("path", ""))
    if match:
        return match.group(1)
    if scope.get("path") == "/wado":
        values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("studyUID")
        return values[0][:64] if values else None
    return None


def _actor(user: object) -> tuple[str, str]:
    if isinstance(user, Principal):
        return user.kind.value, user.name
    return "anonymous", "-"


class AuditTrail(ASGIMiddleware):
    """Queues one audit event per audited request (see `_action`) once its status is known."""

    scopes = ("http",)  # type: ignore[assignment]

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        """Run the request, then record it with the status it got."""
        action = _action(str(scope.get("method", "")), str(scope.get("path", "")))
        if action is None:
            await next_app(scope, receive, send)
            return

        def record(status: int) -> None:
            kind, name = _actor(scope.get("user"))
            context: AppContext = scope["app"].state.context
            context.access.audit.record(
                AuditRecord(
                    actor_kind=kind,
                    actor=name,
                    action=action,
                    outcome=_outcome(status),
                    study_uid=_study_uid(scope),
                    source=client_address(scope),
                    detail=f"{scope.get('method')} {scope.get('path')} {status}",
                )
            )

        await call_with_status(next_app, scope, receive, send, record)


def audit(
    request: Request[Any, Any, Any],
    action: Action,
    outcome: Outcome,
    *,
    study_uid: str | None = None,
    actor: tuple[str, str] | None = None,
    detail: str = "",
) -> None:
    """Record an event a handler knows best about (the actor defaults to the request's principal)."""
    kind, name = actor or _actor(request.scope.get("user"))
    context: AppContext = request.app.state.context
    context.access.audit.record(
        AuditRecord(
            actor_kind=kind,
            actor=name,
            action=action,
            outcome=outcome,
            study_uid=study_uid,
            source=client_address(request.scope),
            detail=detail,
        )
    )
