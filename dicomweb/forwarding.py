"""Forwarding over HTTP: rules, jobs, "send study to node", the bridge's claims, and the rule engine task.

- `/api/forwarding-rules` (admin): what to forward where.
- `/api/forwarding-jobs` (list and retry: the `send` permission, unfiltered accounts; cancel: admin).
- `POST /api/studies/{study}/send` (`send`, and the study must be visible): a manual job.
- `POST /api/forwarding-jobs/claim`, `/{id}/progress`, `/{id}/result` (`deliver`: the bridge). The
  server never dials out (DESIGN.md §1): the bridge claims due jobs, delivers, and reports.
- The rule engine runs in every API worker as a background task; the cursor row makes each change
  matched once whichever worker gets to it (storage/forwarding/engine.py).
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal

import anyio
import anyio.to_thread
from litestar import Request, Router, delete, get, post, put
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, KwargDefinition, Parameter
from sqlalchemy.engine import Engine

from auth.audit import Action, Outcome
from auth.principals import Permission
from dicomweb.audit_trail import audit
from dicomweb.context import app_context
from dicomweb.openapi import problems
from dicomweb.security import admin_only, principal_of, require, unrestricted
from storage.dicom.ingest_compression import source_ae_title
from storage.errors import NotFound
from storage.forwarding import (
    MAX_JOB_PAGE,
    Conditions,
    Destination,
    ForwardingJob,
    ForwardingRule,
    JobState,
    RuleEngine,
    RuleFields,
    cancel_job,
    claim_jobs,
    create_rule,
    delete_rule,
    enqueue,
    get_job,
    get_rule,
    job_instances,
    list_jobs,
    list_rules,
    report_progress,
    report_result,
    retry_job,
    rule_conditions,
    update_rule,
)
from storage.index.changes import ChangeFeed

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from contextlib import AbstractAsyncContextManager

    from litestar import Litestar
    from litestar.handlers import HTTPRouteHandler

    from dicomweb.context import AppContext
    from storage.archive import Archive

__all__ = ["FORWARDING_HANDLERS", "rule_engine_task"]

log = logging.getLogger(__name__)

_MAX_ID: Final = 2**63 - 1
_UID: Final = r"^[0-9]+(\.[0-9]+)*$"
_MAX_CLAIM: Final = 16
_ENGINE_BATCH: Final = 500


@dataclass(frozen=True)
class DestinationIn:
    """Where to send: `ae_title` (a registered DICOM node, C-STORE by the bridge) or `dicomweb_url`.

    `dicomweb_url` is a DICOMweb service root (STOW-RS goes to `<url>/studies`), with an optional
    bearer `dicomweb_token` (kept server-side, never shown). `transfer_syntax`: transcode to this
    transfer syntax UID first (default: as stored).
    """

    ae_title: Annotated[str | None, KwargDefinition(max_length=16)] = None
    dicomweb_url: Annotated[str | None, KwargDefinition(max_length=2048)] = None
    dicomweb_token: Annotated[str | None, KwargDefinition(max_length=4096)] = None
    transfer_syntax: Annotated[str | None, KwargDefinition(max_length=64)] = None


@dataclass(frozen=True, kw_only=True)
class ForwardingRuleIn(DestinationIn):
    """A rule: on `stored` (each instance) or `stable` (a study without new instances for a while).

    `conditions`: every given key must match, each a list of alternatives with `*` and `?`
    wildcards: `calling_ae`, `modality`, `referring_physician`, `institution`, `study_description`,
    `transfer_syntax`; and `time_window` "HH:MM-HH:MM" (may wrap past midnight) in `time_zone`
    (an IANA name, default UTC). Example: {"modality": ["CT"], "calling_ae": ["CT_*"]}.
    """

    name: Annotated[str, KwargDefinition(min_length=1, max_length=200)]
    trigger: Literal["stored", "stable"] = "stable"
    enabled: bool = True
    # A mapping rather than a typed object: an unknown key must be refused, not silently dropped.
    conditions: dict[str, list[str] | str] | None = None


@dataclass(frozen=True)
class ForwardingRuleOut:
    """A forwarding rule (the DICOMweb token is never shown: `has_dicomweb_token` says if one is set)."""

    id: int
    name: str
    trigger: str
    enabled: bool
    conditions: dict[str, Any]
    ae_title: str | None
    dicomweb_url: str | None
    has_dicomweb_token: bool
    transfer_syntax: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class SendRequest(DestinationIn):
    """A manual send: the study, or one series of it (`series_uid`), to one destination."""

    series_uid: Annotated[str | None, KwargDefinition(pattern=_UID, max_length=64)] = None


@dataclass(frozen=True)
class ForwardingJobOut:
    """A forwarding job: its destination, state, attempts, last error and progress.

    `instances`: how many instances it lists (0: the whole study or series); `instances_sent` of
    `instances_total`: progress of the current or last attempt.
    """

    id: int
    rule_id: int | None
    requested_by: str
    study_instance_uid: str
    series_instance_uid: str
    instances: int
    ae_title: str | None
    dicomweb_url: str | None
    transfer_syntax: str | None
    state: str
    attempts: int
    last_error: str
    next_attempt_at: datetime
    lease_until: datetime | None
    instances_total: int
    instances_sent: int
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True)
class ClaimRequest:
    """How many due jobs the bridge takes at once."""

    limit: Annotated[int, KwargDefinition(ge=1, le=_MAX_CLAIM)] = 1


@dataclass(frozen=True)
class ClaimedJob(ForwardingJobOut):
    """A job leased to the caller: deliver it, report progress (which extends the lease) and the result.

    `lease`: the token to present; `lease_seconds`: how long the lease lasts without progress;
    `sop_instance_uids`: the instances to send ([]: the whole study or series).
    """

    lease: str = ""
    lease_seconds: int = 0
    sop_instance_uids: list[str] | None = None
    dicomweb_token: str | None = None


@dataclass(frozen=True)
class ProgressReport:
    """Instances sent so far, of how many, under the lease given at claim."""

    lease: Annotated[str, KwargDefinition(min_length=1, max_length=64)]
    instances_sent: Annotated[int, KwargDefinition(ge=0)] = 0
    instances_total: Annotated[int, KwargDefinition(ge=0)] = 0


@dataclass(frozen=True)
class ResultReport(ProgressReport):
    """The outcome of an attempt: `success`, or `error` saying what went wrong."""

    success: bool = False
    error: Annotated[str, KwargDefinition(max_length=10_000)] = ""


def _rule_out(rule: ForwardingRule) -> ForwardingRuleOut:
    return ForwardingRuleOut(
        id=rule.id or 0,
        name=rule.name,
        trigger=rule.trigger,
        enabled=rule.enabled,
        conditions=rule_conditions(rule).to_mapping(),
        ae_title=rule.ae_title,
        dicomweb_url=rule.dicomweb_url,
        has_dicomweb_token=bool(rule.dicomweb_token),
        transfer_syntax=rule.transfer_syntax,
        created_at=rule.created_at,
        updated_at=rule.updated_at,
    )


def _job_out(job: ForwardingJob) -> ForwardingJobOut:
    return ForwardingJobOut(
        id=job.id or 0,
        rule_id=job.rule_id,
        requested_by=job.requested_by,
        study_instance_uid=job.study_instance_uid,
        series_instance_uid=job.series_instance_uid,
        instances=len(job_instances(job)),
        ae_title=job.ae_title,
        dicomweb_url=job.dicomweb_url,
        transfer_syntax=job.transfer_syntax,
        state=job.state,
        attempts=job.attempts,
        last_error=job.last_error,
        next_attempt_at=job.next_attempt_at,
        lease_until=job.lease_until,
        instances_total=job.instances_total,
        instances_sent=job.instances_sent,
        created_at=job.created_at,
        updated_at=job.updated_at,
        finished_at=job.finished_at,
    )


def _destination(data: DestinationIn) -> Destination:
    return Destination(
        ae_title=data.ae_title, dicomweb_url=data.dicomweb_url, dicomweb_token=data.dicomweb_token,
        transfer_syntax=data.transfer_syntax,
    )  # fmt: skip


def _rule_fields(data: ForwardingRuleIn) -> RuleFields:
    return RuleFields(
        name=data.name,
        trigger=data.trigger,
        conditions=Conditions.from_mapping(dict(data.conditions or {})),
        destination=_destination(data),
        enabled=data.enabled,
    )


def _lease(request: Request[Any, Any, Any]) -> timedelta:
    return timedelta(seconds=app_context(request).settings.forward_lease_seconds)


_RuleId = Annotated[int, Parameter(ge=1, le=2**31 - 1)]
_JobId = Annotated[int, Parameter(ge=1, le=_MAX_ID)]


# --- Rules (admin) -------------------------------------------------------------------------------


@get("/", operation_id="ListForwardingRules", summary="List forwarding rules", responses=problems(401, 403))
async def list_forwarding_rules(engine: NamedDependency[Engine]) -> list[ForwardingRuleOut]:
    """Every forwarding rule, by id."""
    return [_rule_out(rule) for rule in await anyio.to_thread.run_sync(list_rules, engine)]


@post("/", operation_id="CreateForwardingRule", summary="Add a forwarding rule", responses=problems(400, 401, 403, 409))
async def create_forwarding_rule(
    engine: NamedDependency[Engine], data: JSONBody[ForwardingRuleIn]
) -> ForwardingRuleOut:
    """Add a rule (201); 400 names a bad field (an unregistered AE title, say), 409 a taken name."""
    fields = _rule_fields(data)
    return _rule_out(await anyio.to_thread.run_sync(create_rule, engine, fields))


@get(
    "/{rule_id:int}",
    operation_id="GetForwardingRule",
    summary="Get a forwarding rule",
    responses=problems(400, 401, 403, 404),
)
async def get_forwarding_rule(engine: NamedDependency[Engine], rule_id: FromPath[_RuleId]) -> ForwardingRuleOut:
    """One rule; 404 when unknown."""
    return _rule_out(await anyio.to_thread.run_sync(get_rule, engine, rule_id))


@put(
    "/{rule_id:int}",
    operation_id="UpdateForwardingRule",
    summary="Replace a forwarding rule",
    responses=problems(400, 401, 403, 404, 409),
)
async def update_forwarding_rule(
    engine: NamedDependency[Engine], rule_id: FromPath[_RuleId], data: JSONBody[ForwardingRuleIn]
) -> ForwardingRuleOut:
    """Replace a rule's fields (jobs already queued keep their destination); 404 when unknown."""
    fields = _rule_fields(data)
    return _rule_out(await anyio.to_thread.run_sync(update_rule, engine, rule_id, fields))


@delete(
    "/{rule_id:int}",
    operation_id="DeleteForwardingRule",
    summary="Remove a forwarding rule",
    responses=problems(400, 401, 403, 404),
)
async def delete_forwarding_rule(engine: NamedDependency[Engine], rule_id: FromPath[_RuleId]) -> None:
    """Remove a rule (204); its queued jobs stay until they finish."""
    await anyio.to_thread.run_sync(delete_rule, engine, rule_id)


FORWARDING_RULES_ROUTER: Final = Router(
    path="/api/forwarding-rules",
    route_handlers=[
        list_forwarding_rules,
        create_forwarding_rule,
        get_forwarding_rule,
        update_forwarding_rule,
        delete_forwarding_rule,
    ],
    guards=[admin_only],
    tags=["forwarding"],
)


# --- Jobs ----------------------------------------------------------------------------------------

_SEND: Final = [require(Permission.SEND), unrestricted]
_DELIVER: Final = [require(Permission.DELIVER)]


@get(
    "/",
    operation_id="ListForwardingJobs",
    summary="List forwarding jobs",
    guards=_SEND,
    responses=problems(400, 401, 403),
)
async def list_forwarding_jobs(
    engine: NamedDependency[Engine],
    # `state` is a name Litestar reserves for the app state: the query key is mapped.
    job_state: Annotated[JobState | None, Parameter(query="state", description="only jobs in this state")] = None,
    study_uid: Annotated[str | None, Parameter(pattern=_UID, max_length=64, description="only this study's")] = None,
    rule_id: Annotated[int | None, Parameter(ge=1, le=2**31 - 1, description="only this rule's")] = None,
    limit: Annotated[int, Parameter(ge=1, le=MAX_JOB_PAGE)] = 100,
    offset: Annotated[int, Parameter(ge=0, le=_MAX_ID)] = 0,
) -> list[ForwardingJobOut]:
    """Jobs, newest first, with their attempts, last error and progress."""
    jobs = await anyio.to_thread.run_sync(
        lambda: list_jobs(engine, state=job_state, study_uid=study_uid, rule_id=rule_id, limit=limit, offset=offset)
    )
    return [_job_out(job) for job in jobs]


@get(
    "/{job_id:int}",
    operation_id="GetForwardingJob",
    summary="Get a forwarding job",
    guards=_SEND,
    responses=problems(400, 401, 403, 404),
)
async def get_forwarding_job(engine: NamedDependency[Engine], job_id: FromPath[_JobId]) -> ForwardingJobOut:
    """One job; 404 when unknown."""
    return _job_out(await anyio.to_thread.run_sync(get_job, engine, job_id))


@post(
    "/{job_id:int}/retry",
    operation_id="RetryForwardingJob",
    summary="Retry a forwarding job now",
    guards=_SEND,
    status_code=200,
    responses=problems(400, 401, 403, 404, 409),
)
async def retry_forwarding_job(engine: NamedDependency[Engine], job_id: FromPath[_JobId]) -> ForwardingJobOut:
    """Make a job due now with a fresh series of attempts (a done one is sent again); 409 while running."""
    return _job_out(await anyio.to_thread.run_sync(retry_job, engine, job_id))


@post(
    "/{job_id:int}/cancel",
    operation_id="CancelForwardingJob",
    summary="Cancel a forwarding job",
    guards=[admin_only],
    status_code=200,
    responses=problems(400, 401, 403, 404, 409),
)
async def cancel_forwarding_job(engine: NamedDependency[Engine], job_id: FromPath[_JobId]) -> ForwardingJobOut:
    """Cancel a job that is not done; a bridge delivering it stops at its next progress report."""
    return _job_out(await anyio.to_thread.run_sync(cancel_job, engine, job_id))


@post(
    "/claim",
    operation_id="ClaimForwardingJobs",
    summary="Lease due forwarding jobs (the bridge)",
    guards=_DELIVER,
    status_code=200,
    responses=problems(400, 401, 403),
)
async def claim_forwarding_jobs(
    request: Request[Any, Any, Any], engine: NamedDependency[Engine], data: JSONBody[ClaimRequest]
) -> list[ClaimedJob]:
    """Lease up to `limit` due jobs (none: an empty list); a lease not renewed by progress runs out."""
    lease = _lease(request)
    jobs = await anyio.to_thread.run_sync(lambda: claim_jobs(engine, limit=data.limit, lease=lease))
    return [
        ClaimedJob(
            **asdict(_job_out(job)),
            lease=job.lease_owner or "",
            lease_seconds=int(lease.total_seconds()),
            sop_instance_uids=job_instances(job),
            dicomweb_token=job.dicomweb_token,
        )
        for job in jobs
    ]


@post(
    "/{job_id:int}/progress",
    operation_id="ReportForwardingProgress",
    summary="Report a forwarding job's progress (the bridge)",
    guards=_DELIVER,
    status_code=200,
    responses=problems(400, 401, 403, 404, 409),
)
async def report_forwarding_progress(
    request: Request[Any, Any, Any],
    engine: NamedDependency[Engine],
    job_id: FromPath[_JobId],
    data: JSONBody[ProgressReport],
) -> ForwardingJobOut:
    """Record progress and extend the lease; 409: the lease is gone (cancelled or re-claimed), stop."""
    lease = _lease(request)
    job = await anyio.to_thread.run_sync(
        lambda: report_progress(
            engine, job_id, data.lease, sent=data.instances_sent, total=data.instances_total, lease=lease
        )
    )
    return _job_out(job)


@post(
    "/{job_id:int}/result",
    operation_id="ReportForwardingResult",
    summary="Report a forwarding attempt's outcome (the bridge)",
    guards=_DELIVER,
    status_code=200,
    responses=problems(400, 401, 403, 404, 409),
)
async def report_forwarding_result(
    request: Request[Any, Any, Any],
    engine: NamedDependency[Engine],
    job_id: FromPath[_JobId],
    data: JSONBody[ResultReport],
) -> ForwardingJobOut:
    """End the attempt: done, or retried after the next back-off, or failed after the last one."""
    backoff = app_context(request).settings.forward_backoff_delays()
    error = None if data.success else (data.error or "the bridge reported a failure without a reason")
    job = await anyio.to_thread.run_sync(
        lambda: report_result(
            engine, job_id, data.lease, error=error, sent=data.instances_sent, total=data.instances_total,
            backoff=backoff,
        )
    )  # fmt: skip
    where = job.ae_title or job.dicomweb_url
    audit(
        request,
        Action.SEND,
        Outcome.SUCCESS if error is None else Outcome.FAILURE,
        study_uid=job.study_instance_uid,
        detail=f"forwarding job {job_id} to {where}: {job.instances_sent}/{job.instances_total} instances"
        + ("" if error is None else f"; {error[:500]}"),
    )
    return _job_out(job)


FORWARDING_JOBS_ROUTER: Final = Router(
    path="/api/forwarding-jobs",
    route_handlers=[
        list_forwarding_jobs,
        get_forwarding_job,
        retry_forwarding_job,
        cancel_forwarding_job,
        claim_forwarding_jobs,
        report_forwarding_progress,
        report_forwarding_result,
    ],
    tags=["forwarding"],
)


@post(
    "/api/studies/{study:str}/send",
    operation_id="SendStudy",
    summary="Send a study to a DICOM node or DICOMweb server",
    # The path parameter is named `study` so the guard applies the caller's study filter (404).
    guards=[require(Permission.SEND)],
    status_code=202,
    tags=["forwarding"],
    responses=problems(400, 401, 403, 404),
)
async def send_study(
    request: Request[Any, Any, Any], engine: NamedDependency[Engine], study: FromPath[str], data: JSONBody[SendRequest]
) -> ForwardingJobOut:
    """Queue a job sending the study (or one series) to a registered AE title or a STOW-RS URL (202).

    The bridge delivers it like a rule's job; follow it at /api/forwarding-jobs/{id}.
    """
    principal = principal_of(request)
    destination = _destination(data)
    job = await anyio.to_thread.run_sync(
        lambda: enqueue(
            engine, study, destination, requested_by=f"{principal.kind.value} {principal.name}",
            series_uid=data.series_uid or "",
        )
    )  # fmt: skip
    audit(
        request,
        Action.SEND,
        Outcome.SUCCESS,
        study_uid=study,
        detail=f"forwarding job {job.id} queued to {job.ae_title or job.dicomweb_url}",
    )
    return _job_out(job)


FORWARDING_HANDLERS: Final[list[Router | HTTPRouteHandler]] = [
    FORWARDING_RULES_ROUTER,
    FORWARDING_JOBS_ROUTER,
    send_study,
]


# --- The rule engine, in the background of every worker ------------------------------------------


def _source_ae(archive: Archive, study: str, series: str, instance: str) -> str:
    """The Source AE Title (0002,0016) in the stored file's meta: the AE that sent it by C-STORE."""
    try:
        [stored] = archive.instances(study, series, instance)
    except (NotFound, ValueError):
        return ""  # deleted meanwhile
    with archive.local_file(stored) as path:
        return source_ae_title(path)


def rule_engine_task(context: AppContext) -> Callable[[Litestar], AbstractAsyncContextManager[None]]:
    """A lifespan hook running the rule engine while the app runs."""
    settings = context.settings
    engine = RuleEngine(
        context.engine,
        ChangeFeed(context.engine, stable_after=timedelta(seconds=settings.stable_study_seconds)),
        lambda study, series, instance: _source_ae(context.archive, study, series, instance),
    )

    async def follow() -> None:
        while True:
            try:
                matched = await anyio.to_thread.run_sync(lambda: engine.step(_ENGINE_BATCH))
            except Exception:  # a database hiccup must not end the engine; it tries again
                log.exception("the forwarding rule engine failed; retrying")
                matched = 0
            if matched < _ENGINE_BATCH:
                await anyio.sleep(settings.forward_interval_seconds)

    @asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(follow)
            yield
            tasks.cancel_scope.cancel()

    return lifespan
