"""Operations: the integrity check, backup and restore, retention (CLI commands, routes, the schedule).

CLI: `webpacs verify`, `webpacs backup`, `webpacs restore`, `webpacs retention run|policies`.
HTTP: `/api/retention-policies` (admin), `/api/retention/preview` (admin, a dry run) and
`/api/studies/{study}/keep` (who may delete may protect). The server applies the policies every
WEBPACS_RETENTION_INTERVAL_SECONDS (`retention_schedule`). Every deletion and every check is audited.
"""

from __future__ import annotations

import argparse
import getpass
import logging
import sys
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import TYPE_CHECKING, Annotated, Any, Final

import anyio
import anyio.to_thread
import msgspec
from litestar import Request, delete, get, post, put
from litestar.params import KwargDefinition, Parameter
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

from auth.audit import Action, AuditRecord, Outcome
from auth.principals import Permission
from dicomweb.audit_trail import audit
from dicomweb.context import app_context
from dicomweb.openapi import problems
from dicomweb.security import admin_only, require
from storage.retention import (
    MAX_AGE_DAYS,
    AgeBasis,
    PolicyFields,
    RetentionPolicy,
    RetentionReport,
    apply_retention,
    create_policy,
    delete_policy,
    is_kept,
    list_policies,
    set_keep,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from litestar import Litestar

    from dicomweb.context import AppContext

__all__ = ["OPERATIONS_HANDLERS", "add_operations_commands", "retention_schedule"]

log = logging.getLogger(__name__)

_MAX_ID: Final = 2**31 - 1
_NO_NUL: Final = "^[^\x00]*$"
_RETENTION_ACTOR: Final = ("system", "retention")


# --- HTTP ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetentionPolicyRequest:
    """A policy to create: delete studies older than `max_age_days`, measured by `age_basis`.

    `age_basis`: `study_date` (the StudyDate; studies without one are never deleted by it) or
    `received` (when the archive received the study). `modality`: only studies whose
    ModalitiesInStudy holds it; empty for every study.
    """

    name: Annotated[
        str,
        msgspec.Meta(min_length=1, max_length=200, pattern=_NO_NUL),
        KwargDefinition(min_length=1, max_length=200, pattern=_NO_NUL),
    ]
    max_age_days: Annotated[int, msgspec.Meta(ge=1, le=MAX_AGE_DAYS), KwargDefinition(ge=1, le=MAX_AGE_DAYS)]
    age_basis: AgeBasis = "study_date"
    modality: Annotated[str, msgspec.Meta(max_length=16, pattern=_NO_NUL), KwargDefinition(max_length=16)] = ""
    enabled: bool = True


@dataclass(frozen=True)
class ExpiredStudyInfo:
    """A study a retention run deletes (or deleted), and the policy that expires it."""

    study_instance_uid: str
    policy: str
    study_date: str
    received_at: datetime


@dataclass(frozen=True)
class RetentionRunResult:
    """A retention run: with `dry_run`, exactly what a real run at `as_of` deletes."""

    dry_run: bool
    as_of: datetime
    studies: list[ExpiredStudyInfo]
    deleted_instances: int
    skipped: list[str]


@dataclass(frozen=True)
class KeepFlag:
    """Whether retention policies spare the study."""

    study_instance_uid: str
    keep: bool


def _run_result(report: RetentionReport) -> RetentionRunResult:
    return RetentionRunResult(
        dry_run=report.dry_run,
        as_of=report.as_of,
        studies=[ExpiredStudyInfo(s.study_uid, s.policy, s.study_date, s.received_at) for s in report.studies],
        deleted_instances=report.deleted_instances,
        skipped=report.skipped,
    )


@get(
    "/api/retention-policies",
    guards=[admin_only],
    tags=["operations"],
    operation_id="ListRetentionPolicies",
    summary="List retention policies",
    responses=problems(401, 403),
)
async def list_retention_policies(request: Request[Any, Any, Any]) -> list[RetentionPolicy]:
    """Every retention policy, oldest first (admin only)."""
    return await anyio.to_thread.run_sync(list_policies, app_context(request).engine)


@post(
    "/api/retention-policies",
    guards=[admin_only],
    tags=["operations"],
    operation_id="CreateRetentionPolicy",
    summary="Create a retention policy",
    responses=problems(400, 401, 403, 409),
)
async def create_retention_policy(request: Request[Any, Any, Any], data: RetentionPolicyRequest) -> RetentionPolicy:
    """Add a policy; the next run applies it (GET /api/retention/preview shows what it would delete)."""
    fields = PolicyFields(data.name, data.max_age_days, data.age_basis, data.modality, data.enabled)
    return await anyio.to_thread.run_sync(create_policy, app_context(request).engine, fields)


@delete(
    "/api/retention-policies/{policy_id:int}",
    guards=[admin_only],
    tags=["operations"],
    operation_id="DeleteRetentionPolicy",
    summary="Delete a retention policy",
    responses=problems(400, 401, 403, 404),
)
async def delete_retention_policy(
    request: Request[Any, Any, Any], policy_id: Annotated[int, Parameter(ge=1, le=_MAX_ID)]
) -> None:
    """Remove a policy (admin only); studies it would have deleted stay."""
    await anyio.to_thread.run_sync(delete_policy, app_context(request).engine, policy_id)


@get(
    "/api/retention/preview",
    guards=[admin_only],
    tags=["operations"],
    operation_id="PreviewRetention",
    summary="What the retention policies delete (a dry run)",
    responses=problems(400, 401, 403),
)
async def preview_retention(
    request: Request[Any, Any, Any],
    as_of: Annotated[
        date | None, Parameter(description="measure ages at this date (default now): what will go by then")
    ] = None,
) -> RetentionRunResult:
    """Exactly the studies a run at `as_of` deletes; nothing is deleted.

    The deletions themselves run on the server's schedule (WEBPACS_RETENTION_INTERVAL_SECONDS) or
    from `webpacs retention run`: not from a request, which a retry or a crawler could repeat.
    """
    moment = None if as_of is None else datetime.combine(as_of, time.min, tzinfo=UTC)
    report = await anyio.to_thread.run_sync(
        lambda: apply_retention(app_context(request).engine, app_context(request).archive, dry_run=True, as_of=moment)
    )
    return _run_result(report)


@get(
    "/api/studies/{study:str}/keep",
    guards=[require(Permission.READ)],
    tags=["operations"],
    operation_id="GetStudyKeep",
    summary="Whether retention spares a study",
    responses=problems(400, 401, 403, 404),
)
async def get_keep(request: Request[Any, Any, Any], study: str) -> KeepFlag:
    """Whether the study is flagged "keep"."""
    kept = await anyio.to_thread.run_sync(is_kept, app_context(request).engine, study)
    return KeepFlag(study, kept)


@put(
    "/api/studies/{study:str}/keep",
    guards=[require(Permission.DELETE)],
    tags=["operations"],
    operation_id="KeepStudy",
    summary="Flag a study 'keep': no retention policy deletes it",
    responses=problems(400, 401, 403, 404),
)
async def keep_study(request: Request[Any, Any, Any], study: str) -> KeepFlag:
    """Flag the study (idempotent); a manual DELETE still removes it."""
    return await _flag(request, study, keep=True)


@delete(
    "/api/studies/{study:str}/keep",
    guards=[require(Permission.DELETE)],
    tags=["operations"],
    operation_id="UnkeepStudy",
    summary="Clear a study's 'keep' flag",
    responses=problems(400, 401, 403, 404),
    status_code=200,
)
async def unkeep_study(request: Request[Any, Any, Any], study: str) -> KeepFlag:
    """Clear the flag (idempotent): retention policies apply to the study again."""
    return await _flag(request, study, keep=False)


async def _flag(request: Request[Any, Any, Any], study: str, *, keep: bool) -> KeepFlag:
    """Set or clear the keep flag, audited with the study (the request's own audit event lacks it)."""
    by = str(getattr(request.user, "name", ""))
    await anyio.to_thread.run_sync(lambda: set_keep(app_context(request).engine, study, keep=keep, by=by))
    detail = "flagged keep (retention spares it)" if keep else "keep flag cleared"
    audit(request, Action.ADMINISTER, Outcome.SUCCESS, study_uid=study, detail=detail)
    return KeepFlag(study, keep=keep)


OPERATIONS_HANDLERS: Final = [
    list_retention_policies,
    create_retention_policy,
    delete_retention_policy,
    preview_retention,
    get_keep,
    keep_study,
    unkeep_study,
]


def _apply(
    context: AppContext, actor: tuple[str, str], *, dry_run: bool, as_of: datetime | None = None
) -> RetentionReport:
    """Run the policies and audit every deleted study (the plan of a dry run is not audited per study)."""
    report = apply_retention(context.engine, context.archive, dry_run=dry_run, as_of=as_of)
    kind, name = actor
    for study in [] if dry_run else report.studies:
        context.access.audit.record(
            AuditRecord(
                actor_kind=kind,
                actor=name,
                action=Action.DELETE,
                outcome=Outcome.SUCCESS,
                study_uid=study.study_uid,
                detail=f"retention policy {study.policy!r} (StudyDate {study.study_date or '-'}, "
                f"received {study.received_at:%Y-%m-%d})",
            )
        )
    return report


@asynccontextmanager
async def retention_schedule(app: Litestar) -> AsyncIterator[None]:
    """While the server runs, apply the retention policies every WEBPACS_RETENTION_INTERVAL_SECONDS (0: never).

    Every worker runs it: two runs at once delete each study once (the loser finds it gone).
    """
    context: AppContext = app.state.context
    interval = context.settings.retention_interval_seconds
    if interval == 0:
        yield
        return
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(_retention_loop, context, interval)
        yield
        tasks.cancel_scope.cancel()


async def _retention_loop(context: AppContext, interval: int) -> None:
    while True:
        await anyio.sleep(interval)
        try:
            report = await anyio.to_thread.run_sync(
                lambda: _apply(context, _RETENTION_ACTOR, dry_run=False), abandon_on_cancel=True
            )
        except Exception:  # the schedule must outlive a database hiccup: logged, tried again next time
            log.exception("retention run failed; retrying in %d s", interval)
            continue
        if report.studies:
            log.info("retention deleted %d stud(ies), %d instance(s)", len(report.studies), report.deleted_instances)


# --- CLI -------------------------------------------------------------------------------------------


def add_operations_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `webpacs verify`, `backup`, `restore` and `retention`."""
    from dicomweb.cli import storage_flags

    verify = commands.add_parser(
        "verify",
        help="re-read every blob and compare it with the size and SHA-256 recorded at ingest",
        description=_verify.__doc__,
    )
    storage_flags(verify)
    verify.add_argument("--resume", action="store_true", help="carry on where an interrupted check stopped")
    verify.add_argument(
        "--repair",
        action="store_true",
        help="copy missing or damaged blobs back from --backup, and remove unreferenced blobs",
    )
    verify.add_argument("--backup", metavar="URL", help="a backup (folder or s3://bucket/prefix) holding good copies")
    verify.add_argument(
        "--grace",
        type=float,
        default=86_400,
        help="--repair spares blobs another host journaled less than this many seconds ago (default 86400)",
    )
    verify.set_defaults(run=_verify)

    backup = commands.add_parser(
        "backup", help="copy new blobs and a database snapshot to a folder or S3", description=_backup.__doc__
    )
    storage_flags(backup)
    backup.add_argument("--to", required=True, metavar="URL", help="a folder, file:///path or s3://bucket/prefix")
    backup.add_argument("--verify", action="store_true", help="also read back blobs already there (SHA-256)")
    backup.set_defaults(run=_backup)

    restore = commands.add_parser(
        "restore", help="restore a backup into an empty installation", description=_restore.__doc__
    )
    storage_flags(restore)
    restore.add_argument("--from", dest="source", required=True, metavar="URL", help="the backup's folder or S3 URL")
    restore.add_argument("--snapshot", help="which snapshot (default the newest; --list shows them)")
    restore.add_argument("--list", action="store_true", help="list the backup's snapshots and stop")
    restore.add_argument("--verify", action="store_true", help="also read back blobs already restored (SHA-256)")
    restore.set_defaults(run=_restore)

    retention = commands.add_parser("retention", help="apply or list retention policies").add_subparsers(
        required=True, metavar="ACTION"
    )
    run = retention.add_parser("run", help="delete studies the policies no longer keep", description=_retention.__doc__)
    storage_flags(run)
    run.add_argument("--dry-run", action="store_true", help="only list what a real run deletes")
    run.add_argument(
        "--as-of",
        type=_utc_date,
        metavar="YYYY-MM-DD",
        help="with --dry-run: measure ages at this date instead of now (what will go by then)",
    )
    run.set_defaults(run=_retention)
    policies = retention.add_parser("policies", help="list the retention policies", description=_policies.__doc__)
    storage_flags(policies)
    policies.set_defaults(run=_policies)


def _utc_date(text: str) -> datetime:
    try:
        return datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date YYYY-MM-DD") from exc


def _cli_actor() -> tuple[str, str]:
    try:
        return "cli", getpass.getuser()
    except (KeyError, OSError):  # no user name in a bare container
        return "cli", "-"


def _progress(console: Console, label: str) -> Progress:
    return Progress(
        TextColumn(label), BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(),
        console=console,
    )  # fmt: skip


def _sized(progress: Progress) -> tuple[Callable[[int, int], None], Callable[[int], None]]:
    """The (on_start, on_item) callbacks that size and advance one progress bar by bytes."""
    task = progress.add_task("bytes")
    return (lambda _count, total: progress.update(task, total=total)), (lambda size: progress.advance(task, size))


def _record(context: AppContext, outcome: Outcome, detail: str, *, study_uid: str | None = None) -> None:
    kind, name = _cli_actor()
    context.access.audit.record(
        AuditRecord(kind, name, Action.ADMINISTER, outcome, study_uid=study_uid, source="cli", detail=detail)
    )


def _verify(args: argparse.Namespace) -> int:
    """Re-read every blob and compare its size and SHA-256 with those recorded at ingest.

    Lists instances whose bytes are missing or damaged, then blobs no instance references. With
    --repair, damaged or missing blobs are copied back from --backup when it holds a good copy
    (checked against the same SHA-256), and unreferenced blobs are removed; instances whose bytes
    cannot be recovered are reported, never dropped. Interrupted? --resume carries on. Exit status
    1 while problems remain.
    """
    from dicomweb.app import build_context
    from dicomweb.cli import prepared_settings
    from storage.backup import BackupTarget
    from storage.integrity import verify_archive

    settings = prepared_settings(args)
    context = build_context(settings)
    backup = None if args.backup is None else BackupTarget(args.backup, s3=settings.s3_options()).blobs
    console = Console(stderr=True)
    with _progress(console, "verifying") as progress:
        on_start, on_instance = _sized(progress)
        report = verify_archive(
            context.engine,
            context.archive,
            resume=args.resume,
            repair=args.repair,
            backup=backup,
            grace_seconds=args.grace,
            on_start=on_start,
            on_instance=on_instance,
        )
    out = sys.stdout
    for problem in report.problems:
        state = "repaired from the backup" if problem.repaired else "NOT repaired"
        out.write(
            f"{problem.kind}: study {problem.study_uid} series {problem.series_uid} instance {problem.sop_uid} "
            f"(blob {problem.blob_key}): {problem.detail}; {state}\n"
        )
        outcome = Outcome.SUCCESS if problem.repaired else Outcome.FAILURE
        _record(
            context, outcome, f"verify: {problem.kind} blob {problem.blob_key}; {state}", study_uid=problem.study_uid
        )
    for key in report.unreferenced:
        out.write(f"unreferenced: blob {key}{' removed' if args.repair else ''}\n")
    if report.resumed_checked:
        out.write(
            f"resumed after {report.resumed_checked} instance(s) checked earlier, which left "
            f"{report.resumed_missing} missing and {report.resumed_corrupt} damaged\n"
        )
    summary = (
        f"checked {report.checked} instance(s), {report.bytes_read} bytes: "
        f"{sum(p.kind == 'missing' for p in report.problems)} missing, "
        f"{sum(p.kind == 'corrupt' for p in report.problems)} damaged, "
        f"{sum(p.repaired for p in report.problems)} repaired; {len(report.unreferenced)} unreferenced blob(s)"
        f"{f', {report.unreferenced_removed} removed' if args.repair else ''}; {report.open_problems} problem(s) remain"
    )
    out.write(summary + "\n")
    _record(context, Outcome.FAILURE if report.open_problems else Outcome.SUCCESS, f"verify: {summary}")
    context.access.audit.flush()
    return 1 if report.open_problems else 0


def _backup(args: argparse.Namespace) -> int:
    """Back the archive up to a folder or an S3 prefix: new blobs, then a consistent database snapshot.

    Only blobs the backup lacks are copied, each checked against its SHA-256; the snapshot (SQLite's
    VACUUM INTO, or every PostgreSQL table read in one REPEATABLE READ transaction, into one SQLite
    file) is stored last, under snapshots/<UTC time>.sqlite3. Safe while the server runs; run it
    from cron. WEBPACS_S3_* variables reach an s3:// target.
    """
    from dicomweb.app import build_context
    from dicomweb.cli import prepared_settings
    from storage.backup import BackupTarget, backup_archive
    from storage.errors import ArchiveError

    settings = prepared_settings(args)
    context = build_context(settings)
    console = Console(stderr=True)
    try:
        target = BackupTarget(args.to, s3=settings.s3_options())
        target.blobs.check()
        with _progress(console, "backing up") as progress:
            on_start, on_blob = _sized(progress)
            report = backup_archive(
                context.engine, context.archive.blobs, target, verify=args.verify, on_start=on_start, on_blob=on_blob
            )
    except ArchiveError as exc:
        console.print(f"[red]backup stopped:[/red] {exc}", soft_wrap=True)
        _record(context, Outcome.FAILURE, f"backup to {args.to}: {exc}")
        context.access.audit.flush()
        return 1
    summary = (
        f"snapshot {report.snapshot}: {report.studies} stud(ies), {report.instances} instance(s); "
        f"copied {report.blobs_copied} blob(s) ({report.bytes_copied} bytes), {report.blobs_present} already there"
    )
    sys.stdout.write(f"{summary}\n")
    _record(context, Outcome.SUCCESS, f"backup to {args.to}: {summary}")
    context.access.audit.flush()
    return 0


def _restore(args: argparse.Namespace) -> int:
    """Restore a backup (its newest snapshot, or --snapshot) into an empty installation.

    The installation (--data-dir / --database-url / --blob-url or WEBPACS_*) must never have been
    used: restore refuses a database holding anything. Every blob is checked against the snapshot's
    SHA-256 on the way; an older snapshot is upgraded by the ordinary migrations. Interrupted? Run
    the same command again. Then start `webpacs serve` on it: the backup's users and tokens work.
    """
    from dicomweb.cli import prepared_settings
    from storage.backup import BackupTarget, restore_archive
    from storage.blobs import open_blob_store
    from storage.errors import ArchiveError

    settings = prepared_settings(args)
    console = Console(stderr=True)
    try:
        target = BackupTarget(args.source, s3=settings.s3_options())
        if args.list:
            sys.stdout.writelines(f"{key}\n" for key in target.snapshot_keys())
            return 0
        blobs = open_blob_store(settings.effective_blob_url, s3=settings.s3_options())
        with _progress(console, "restoring") as progress:
            on_start, on_blob = _sized(progress)
            report = restore_archive(
                target,
                settings.effective_database_url,
                blobs,
                snapshot=args.snapshot,
                verify=args.verify,
                on_start=on_start,
                on_blob=on_blob,
            )
    except ArchiveError as exc:
        console.print(f"[red]restore stopped:[/red] {exc}", soft_wrap=True)
        return 1
    sys.stdout.write(
        f"restored {report.rows.get('study', 0)} stud(ies), {report.rows.get('instance', 0)} instance(s); "
        f"{report.blobs_copied} blob(s) copied ({report.bytes_copied} bytes), {report.blobs_present} already there\n"
    )
    # Audited in the restored log itself, after its rows: the restore is part of its history.
    from dicomweb.app import build_context

    context = build_context(settings)
    _record(context, Outcome.SUCCESS, f"restore from {args.source}")
    context.access.audit.flush()
    return 0


def _retention(args: argparse.Namespace) -> int:
    """Delete the studies the retention policies no longer keep (studies flagged 'keep' stay).

    --dry-run lists exactly the studies a real run at the same moment deletes, one per line:
    Study Instance UID, policy, StudyDate, date received. Each deletion is audited.
    """
    from dicomweb.app import build_context
    from dicomweb.cli import prepared_settings
    from dicomweb.settings import SettingsError

    if args.as_of is not None and not args.dry_run:
        raise SettingsError("--as-of only goes with --dry-run: a real run measures ages now")
    context = build_context(prepared_settings(args))
    report = _apply(context, _cli_actor(), dry_run=args.dry_run, as_of=args.as_of)
    context.access.audit.flush()
    sys.stdout.writelines(
        f"{study.study_uid}\t{study.policy}\t{study.study_date or '-'}\t{study.received_at:%Y-%m-%d}\n"
        for study in report.studies
    )
    verb = "would delete" if args.dry_run else "deleted"
    extra = "" if args.dry_run else f", {report.deleted_instances} instance(s)"
    sys.stderr.write(f"{verb} {len(report.studies)} stud(ies){extra}\n")
    return 0


def _policies(args: argparse.Namespace) -> int:
    """List the retention policies (create them with POST /api/retention-policies)."""
    from dicomweb.app import build_context
    from dicomweb.cli import prepared_settings

    context = build_context(prepared_settings(args))
    for policy in list_policies(context.engine):
        modality = policy.modality or "any modality"
        state = "" if policy.enabled else " (disabled)"
        sys.stdout.write(
            f"{policy.id}\t{policy.name}\t{modality}\t"
            f"older than {policy.max_age_days} days by {policy.age_basis}{state}\n"
        )
    return 0
