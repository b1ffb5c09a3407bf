"""The audit log for admins (`/api/audit`): search it, or export it as JSON lines."""

from __future__ import annotations

from datetime import datetime  # noqa: TC003 - Litestar reads the parameter types at run time
from typing import Annotated, Any, Final

import anyio.to_thread
from litestar import Request, get
from litestar.di import Provide
from litestar.params import Parameter
from litestar.response import Stream

from auth.audit import Action, AuditQuery
from dicomweb.context import app_context
from dicomweb.openapi import problems
from dicomweb.security import admin_only

__all__ = ["AUDIT_HANDLERS"]

_MAX_PAGE: Final = 1000
_MAX_OFFSET: Final = 2**31 - 1


def _audit_query(
    user: Annotated[str | None, Parameter(query="user", max_length=200, description="Who acted (name).")] = None,
    action: Annotated[Action | None, Parameter(query="action", description="What was done.")] = None,
    study_uid: Annotated[str | None, Parameter(query="study_uid", max_length=64)] = None,
    since: Annotated[datetime | None, Parameter(query="since", description="From this time (ISO 8601).")] = None,
    until: Annotated[datetime | None, Parameter(query="until", description="Before this time (ISO 8601).")] = None,
    limit: Annotated[int, Parameter(query="limit", ge=1, le=_MAX_PAGE)] = 100,
    offset: Annotated[int, Parameter(query="offset", ge=0, le=_MAX_OFFSET)] = 0,
) -> AuditQuery:
    return AuditQuery(user, action, study_uid, since, until, limit, offset)


_common: Final[dict[str, Any]] = {
    "guards": [admin_only],
    "tags": ["audit"],
    "dependencies": {"filters": Provide(_audit_query, sync_to_thread=False)},
    "responses": problems(400, 401, 403),
}


@get("/api/audit", operation_id="SearchAuditLog", summary="Search the audit log", **_common)
async def search_audit_log(request: Request[Any, Any, Any], filters: AuditQuery) -> list[dict[str, Any]]:
    """Audit events, newest first: who, what, which study, when (UTC), from where, and the outcome."""
    return await anyio.to_thread.run_sync(app_context(request).access.audit.search, filters)


@get(
    "/api/audit/export",
    operation_id="ExportAuditLog",
    summary="Export the audit log as JSON lines",
    media_type="application/jsonl",
    **_common,
)
async def export_audit_log(request: Request[Any, Any, Any], filters: AuditQuery) -> Stream:
    """Every matching event, oldest first, one JSON object per line (streamed; `limit` is ignored)."""
    audit = app_context(request).access.audit
    lines = await anyio.to_thread.run_sync(lambda: audit.export(filters))
    return Stream(
        lines, media_type="application/jsonl", headers={"Content-Disposition": "attachment; filename=audit.jsonl"}
    )


AUDIT_HANDLERS: Final = [search_audit_log, export_audit_log]
