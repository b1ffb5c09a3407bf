"""The change feed over HTTP: `GET /api/changes?since=&limit=` (admin; later also a service role)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any, Final, Literal

import anyio.to_thread
from litestar import Request, get
from litestar.params import Parameter

from dicomweb.context import app_context
from dicomweb.openapi import problems
from dicomweb.security import admin_only
from storage.index.changes import MAX_PAGE, ChangeFeed

__all__ = ["CHANGE_HANDLERS"]

_MAX_SEQ: Final = 2**63 - 1  # BIGINT


@dataclass(frozen=True)
class Change:
    """Something that happened to the archive.

    `stored`: an instance was stored (or replaced by other bytes); `deleted`: an instance was
    deleted; `stable`: no instance arrived in the study for WEBPACS_STABLE_STUDY_SECONDS (series and
    instance UIDs are then empty).
    """

    seq: int
    kind: Literal["stored", "deleted", "stable"]
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    at: datetime


@dataclass(frozen=True)
class ChangePage:
    """Up to `limit` changes after `since`, oldest first; ask again with `since=next`."""

    changes: list[Change]
    next: int


@get(
    "/api/changes",
    guards=[admin_only],
    tags=["admin"],
    operation_id="ListChanges",
    summary="Read the change feed",
    responses=problems(400, 401, 403),
)
async def list_changes(
    request: Request[Any, Any, Any],
    since: Annotated[
        int, Parameter(ge=0, le=_MAX_SEQ, description="the last `seq` already read (0: from the start)")
    ] = 0,
    limit: Annotated[int, Parameter(ge=1, le=MAX_PAGE, description="at most this many changes")] = 100,
) -> ChangePage:
    """What changed after position `since`, in order; the same `since` always gives the same answer.

    A change is listed once its transaction has committed, never before a change listed earlier:
    following `next` misses nothing, whichever worker answers.
    """
    context = app_context(request)
    feed = ChangeFeed(context.engine, stable_after=timedelta(seconds=context.settings.stable_study_seconds))
    records = await anyio.to_thread.run_sync(lambda: feed.read(since, limit))
    changes = [
        Change(r.seq, r.kind, r.study_instance_uid, r.series_instance_uid, r.sop_instance_uid, r.at) for r in records
    ]
    return ChangePage(changes=changes, next=changes[-1].seq if changes else since)


CHANGE_HANDLERS: Final = [list_changes]
