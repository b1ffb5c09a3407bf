"""Delete studies, series and instances (admin only): index first, then the bytes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import anyio.to_thread
from litestar import Request, Response, delete
from litestar.openapi import ResponseSpec

from auth.audit import Action, Outcome
from auth.principals import Permission
from dicomweb.audit_trail import audit
from dicomweb.context import app_context
from dicomweb.openapi import problems
from dicomweb.security import principal_of, require
from storage.study_edits import recycle

__all__ = ["DELETE_HANDLERS", "Deleted"]


@dataclass(frozen=True)
class Deleted:
    """What a deletion removed."""

    deleted_instances: int


_common: Final[dict[str, Any]] = {
    "guards": [require(Permission.DELETE)],
    "tags": ["Delete"],
    "status_code": 200,
    "responses": {
        200: ResponseSpec(Deleted, description="How many instances were deleted.", generate_examples=False),
        **problems(400, 401, 403, 404),
    },
}


async def _delete(
    request: Request[Any, Any, Any], study: str, series: str | None = None, instance: str | None = None
) -> Response[dict[str, int]]:
    archive = app_context(request).archive
    count = await anyio.to_thread.run_sync(lambda: archive.delete(study, series, instance))
    return Response({"deleted_instances": count})


@delete("/dicomweb/studies/{study:str}", operation_id="DeleteStudy", summary="Delete a study", **_common)
async def delete_study(request: Request[Any, Any, Any], study: str) -> Response[dict[str, int]]:
    """Remove every instance of the study from the index, then their bytes.

    While WEBPACS_RECYCLE_DAYS > 0 the study goes to the recycle bin instead (/api/recycle-bin):
    hidden at once, restorable, purged after that many days.
    """
    context = app_context(request)
    if context.settings.recycle_days:
        by = principal_of(request).name
        count = await anyio.to_thread.run_sync(lambda: recycle(context.engine, study, by=by))
        days = context.settings.recycle_days
        audit(request, Action.DELETE, Outcome.SUCCESS, study_uid=study, detail=f"to the recycle bin for {days} day(s)")
        return Response({"deleted_instances": count})
    return await _delete(request, study)


@delete(
    "/dicomweb/studies/{study:str}/series/{series:str}",
    operation_id="DeleteSeries",
    summary="Delete a series",
    **_common,
)
async def delete_series(request: Request[Any, Any, Any], study: str, series: str) -> Response[dict[str, int]]:
    """Remove every instance of the series."""
    return await _delete(request, study, series)


@delete(
    "/dicomweb/studies/{study:str}/series/{series:str}/instances/{instance:str}",
    operation_id="DeleteInstance",
    summary="Delete an instance",
    **_common,
)
async def delete_instance(
    request: Request[Any, Any, Any], study: str, series: str, instance: str
) -> Response[dict[str, int]]:
    """Remove one instance."""
    return await _delete(request, study, series, instance)


DELETE_HANDLERS: Final = [delete_study, delete_series, delete_instance]
