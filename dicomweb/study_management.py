"""Study management over HTTP and the CLI: edit attributes, merge patients, move a series, the recycle bin.

HTTP: `PATCH /api/studies/{study}`, `POST /api/patients/merge`,
`POST /api/studies/{study}/series/{series}/move` (the `edit` permission: admin, manager), and
`/api/recycle-bin` (list, restore, purge; who may delete). CLI: `webpacs study edit | merge-patients
| move-series | delete | restore | purge | recycle-bin`. Every change is audited with its before and
after values. While WEBPACS_RECYCLE_DAYS > 0, deleted studies wait in the recycle bin and each
worker purges the expired ones every hour (`recycle_purge_schedule`).
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import sys
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal

import anyio
import anyio.to_thread
import msgspec
from litestar import Request, delete, get, patch, post
from litestar.exceptions import NotFoundException
from litestar.params import KwargDefinition

from auth.audit import Action, AuditRecord, Outcome
from auth.policy import visible_studies
from auth.principals import Permission
from dicomweb.audit_trail import audit
from dicomweb.context import app_context
from dicomweb.openapi import problems
from dicomweb.security import principal_of, require, unrestricted
from dicomweb.settings import SettingsError
from storage.errors import ArchiveError
from storage.study_edits import (
    DATE_PATTERN,
    EditResult,
    PatientKey,
    edit_study,
    merge_patients,
    move_series_to_study,
    purge_expired,
    purge_study,
    recycle,
    recycle_bin,
    restore,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from litestar import Litestar

    from dicomweb.context import AppContext
    from storage.study_edits import RecycledStudy

__all__ = ["STUDY_MANAGEMENT_HANDLERS", "add_study_commands", "recycle_purge_schedule"]

log = logging.getLogger(__name__)

_PURGE_INTERVAL_SECONDS: Final = 3600  # recycle periods are counted in days: hourly is prompt enough
_TAGS: Final = ["study management"]
_UID: Final = r"^[0-9.]{1,64}$"
# One value of each VR (PS3.5 §6.2), as storage/study_edits.py checks it: no backslash (it would make
# several values), no control characters; LO up to 64 characters, SH 16, PN up to three component
# groups of 64, DA YYYYMMDD. Empty empties the attribute.
_TEXT: Final = r"[^\\\x00-\x1f]"
_LO: Final = rf"^{_TEXT}{{0,64}}$"
_SH: Final = rf"^{_TEXT}{{0,16}}$"
_PN: Final = r"^[^=\\\x00-\x1f]{0,64}(=[^=\\\x00-\x1f]{0,64}){0,2}$"
_DA: Final = f"^{DATE_PATTERN}$"


# --- HTTP ------------------------------------------------------------------------------------------


class StudyChanges(msgspec.Struct, forbid_unknown_fields=True):
    """New values of patient/study attributes (DICOM keywords); attributes left out stay as they are.

    An empty string empties the attribute. Values must be valid for the attribute's VR
    (PatientBirthDate YYYYMMDD, PatientSex M/F/O, AccessionNumber up to 16 characters...).
    """

    PatientName: Annotated[str, msgspec.Meta(pattern=_PN)] | None = None
    PatientID: Annotated[str, msgspec.Meta(pattern=_LO)] | None = None
    IssuerOfPatientID: Annotated[str, msgspec.Meta(pattern=_LO)] | None = None
    PatientBirthDate: Annotated[str, msgspec.Meta(pattern=_DA)] | None = None
    PatientSex: Literal["M", "F", "O", ""] | None = None
    AccessionNumber: Annotated[str, msgspec.Meta(pattern=_SH)] | None = None
    StudyDescription: Annotated[str, msgspec.Meta(pattern=_LO)] | None = None
    ReferringPhysicianName: Annotated[str, msgspec.Meta(pattern=_PN)] | None = None

    def changes(self) -> dict[str, str]:
        """The attributes given, by keyword."""
        return {name: value for name in self.__struct_fields__ if (value := getattr(self, name)) is not None}


class PatientRef(msgspec.Struct, forbid_unknown_fields=True):
    """A patient: its Patient ID and, when the archive's patients have one, the Issuer of Patient ID."""

    PatientID: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    IssuerOfPatientID: str = ""

    def key(self) -> PatientKey:
        """The storage layer's form."""
        return PatientKey(self.PatientID, self.IssuerOfPatientID)


class PatientMerge(msgspec.Struct, forbid_unknown_fields=True):
    """Merge patient `from` into patient `into`: every study of `from` takes `into`'s patient attributes."""

    from_: PatientRef = msgspec.field(name="from")
    into: PatientRef = msgspec.field()


@dataclass(frozen=True)
class SeriesMove:
    """Where to move the series: the Study Instance UID of a study in the archive."""

    to_study: Annotated[str, KwargDefinition(pattern=_UID), msgspec.Meta(pattern=_UID)]


@dataclass(frozen=True)
class StudyEdit:
    """An edited study: per attribute, the value before and after, and the instances rewritten."""

    study_uid: str
    instances: int
    before: dict[str, str]
    after: dict[str, str]


@dataclass(frozen=True)
class MergedPatients:
    """The studies merged, and the patient attributes they now carry."""

    patient: dict[str, str]
    studies: list[StudyEdit]


@dataclass(frozen=True)
class MovedSeries:
    """A series moved to another study."""

    series_uid: str
    from_study_uid: str
    to_study_uid: str
    instances: int


@dataclass(frozen=True)
class RecycledStudyInfo:
    """A study in the recycle bin."""

    study_uid: str
    patient_name: str
    patient_id: str
    study_date: str
    study_description: str
    accession_number: str
    instances: int
    recycled_at: datetime
    recycled_by: str


@dataclass(frozen=True)
class PurgedStudy:
    """A study purged from the recycle bin."""

    study_uid: str
    deleted_instances: int


def _edit_info(result: EditResult) -> StudyEdit:
    return StudyEdit(result.study_uid, result.instances, result.before, result.after)


def _before_after(result: EditResult) -> str:
    return json.dumps({"before": result.before, "after": result.after}, ensure_ascii=False, sort_keys=True)


def _recycled_info(study: RecycledStudy) -> RecycledStudyInfo:
    return RecycledStudyInfo(
        study.study_instance_uid,
        study.patient_name,
        study.patient_id,
        study.study_date,
        study.study_description,
        study.accession_number,
        study.num_instances,
        study.recycled_at,
        study.recycled_by,
    )


@patch(
    "/api/studies/{study:str}",
    guards=[require(Permission.EDIT)],
    tags=_TAGS,
    operation_id="EditStudy",
    summary="Change patient/study attributes in every instance of a study",
    responses=problems(400, 401, 403, 404),
)
async def edit(request: Request[Any, Any, Any], study: str, data: StudyChanges) -> StudyEdit:
    """Rewrite every instance with the new values (pixel data untouched), then switch the study at once.

    Readers see the study entirely as before or entirely as after; the old bytes are deleted once
    the index points at the new. Audited with the values before and after.
    """
    context = app_context(request)
    changes = data.changes()
    result = await anyio.to_thread.run_sync(lambda: edit_study(context.engine, context.archive, study, changes))
    audit(request, Action.ADMINISTER, Outcome.SUCCESS, study_uid=study, detail=f"edited: {_before_after(result)}")
    return _edit_info(result)


@post(
    "/api/patients/merge",
    guards=[require(Permission.EDIT), unrestricted],
    tags=_TAGS,
    operation_id="MergePatients",
    summary="Merge two patients: every study of one takes the other's patient attributes",
    status_code=200,
    responses=problems(400, 401, 403, 404),
)
async def merge(request: Request[Any, Any, Any], data: PatientMerge) -> MergedPatients:
    """Edit each study of patient `from` to carry the patient attributes of `into` (each study atomic).

    Interrupted? Send it again: the studies still under `from` are merged, the others are done.
    """
    context = app_context(request)
    source, target = data.from_.key(), data.into.key()
    result = await anyio.to_thread.run_sync(lambda: merge_patients(context.engine, context.archive, source, target))
    for study in result.studies:
        audit(
            request,
            Action.ADMINISTER,
            Outcome.SUCCESS,
            study_uid=study.study_uid,
            detail=f"patient {source.patient_id!r} merged into {target.patient_id!r}: {_before_after(study)}",
        )
    return MergedPatients(result.patient, [_edit_info(study) for study in result.studies])


@post(
    "/api/studies/{study:str}/series/{series:str}/move",
    guards=[require(Permission.EDIT)],
    tags=_TAGS,
    operation_id="MoveSeries",
    summary="Move a series to another study",
    status_code=200,
    responses=problems(400, 401, 403, 404, 409),
)
async def move(request: Request[Any, Any, Any], study: str, series: str, data: SeriesMove) -> MovedSeries:
    """The series' instances take the target study's UID and patient/study attributes.

    Series and SOP Instance UIDs stay; both studies' counts follow; a study left empty goes.
    """
    context = app_context(request)
    policy = visible_studies(principal_of(request))
    if policy is not None and not await context.visible_studies.allows(policy, data.to_study):
        raise NotFoundException(f"there is no study {data.to_study}")
    result = await anyio.to_thread.run_sync(
        lambda: move_series_to_study(context.engine, context.archive, study, series, data.to_study)
    )
    detail = f"series {series} moved to study {data.to_study} ({result.instances} instance(s))"
    audit(request, Action.ADMINISTER, Outcome.SUCCESS, study_uid=study, detail=detail)
    audit(request, Action.ADMINISTER, Outcome.SUCCESS, study_uid=data.to_study, detail=detail)
    return MovedSeries(result.series_uid, result.from_study_uid, result.to_study_uid, result.instances)


@get(
    "/api/recycle-bin",
    guards=[require(Permission.DELETE), unrestricted],
    tags=_TAGS,
    operation_id="ListRecycleBin",
    summary="List the studies in the recycle bin",
    responses=problems(401, 403),
)
async def list_recycle_bin(request: Request[Any, Any, Any]) -> list[RecycledStudyInfo]:
    """Deleted studies waiting for their purge (WEBPACS_RECYCLE_DAYS after deletion), oldest first."""
    studies = await anyio.to_thread.run_sync(recycle_bin, app_context(request).engine)
    return [_recycled_info(study) for study in studies]


@post(
    "/api/recycle-bin/{study:str}/restore",
    guards=[require(Permission.DELETE)],
    tags=_TAGS,
    operation_id="RestoreStudy",
    summary="Restore a study from the recycle bin",
    status_code=204,
    responses=problems(400, 401, 403, 404),
)
async def restore_from_bin(request: Request[Any, Any, Any], study: str) -> None:
    """The study is found and served again, as it was."""
    await anyio.to_thread.run_sync(restore, app_context(request).engine, study)
    audit(request, Action.ADMINISTER, Outcome.SUCCESS, study_uid=study, detail="restored from the recycle bin")


@delete(
    "/api/recycle-bin/{study:str}",
    guards=[require(Permission.DELETE)],
    tags=_TAGS,
    operation_id="PurgeStudy",
    summary="Purge a study from the recycle bin now",
    status_code=200,
    responses=problems(400, 401, 403, 404),
)
async def purge(request: Request[Any, Any, Any], study: str) -> PurgedStudy:
    """Delete the recycled study for good: the index first, then the bytes."""
    context = app_context(request)
    count = await anyio.to_thread.run_sync(purge_study, context.engine, context.archive, study)
    audit(request, Action.DELETE, Outcome.SUCCESS, study_uid=study, detail="purged from the recycle bin")
    return PurgedStudy(study, count)


STUDY_MANAGEMENT_HANDLERS: Final = [edit, merge, move, list_recycle_bin, restore_from_bin, purge]


@asynccontextmanager
async def recycle_purge_schedule(app: Litestar) -> AsyncIterator[None]:
    """While the server runs with WEBPACS_RECYCLE_DAYS > 0, purge expired recycled studies every hour.

    Every worker runs it: a study purged by one is skipped by the others.
    """
    context: AppContext = app.state.context
    if context.settings.recycle_days == 0:
        yield
        return
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(_purge_loop, context)
        yield
        tasks.cancel_scope.cancel()


async def _purge_loop(context: AppContext) -> None:
    while True:
        try:
            purged = await anyio.to_thread.run_sync(
                lambda: _purge_expired(context, ("system", "recycle-bin")), abandon_on_cancel=True
            )
        except Exception:  # the schedule must outlive a database hiccup: logged, tried again next time
            log.exception("purging the recycle bin failed; retrying in %d s", _PURGE_INTERVAL_SECONDS)
        else:
            if purged:
                log.info("purged %d stud(ies) from the recycle bin", len(purged))
        await anyio.sleep(_PURGE_INTERVAL_SECONDS)


def _purge_expired(context: AppContext, actor: tuple[str, str], *, days: int | None = None) -> list[str]:
    """Purge what stayed longer than `days` (default WEBPACS_RECYCLE_DAYS) and audit each study."""
    keep_days = context.settings.recycle_days if days is None else days
    purged = purge_expired(context.engine, context.archive, days=keep_days)
    for study_uid in purged:
        context.access.audit.record(
            AuditRecord(
                actor_kind=actor[0],
                actor=actor[1],
                action=Action.DELETE,
                outcome=Outcome.SUCCESS,
                study_uid=study_uid,
                source="",
                detail=f"purged from the recycle bin after {keep_days} day(s)",
            )
        )
    return purged


# --- CLI -------------------------------------------------------------------------------------------


def add_study_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `webpacs study edit | merge-patients | move-series | delete | restore | purge | recycle-bin`."""
    from dicomweb.cli import storage_flags

    study = commands.add_parser("study", help="edit, merge, move, delete and restore studies").add_subparsers(
        required=True, metavar="ACTION"
    )
    edit_cmd = study.add_parser("edit", help="change patient/study attributes", description=_edit.__doc__)
    storage_flags(edit_cmd)
    edit_cmd.add_argument("study_uid", help="Study Instance UID")
    edit_cmd.add_argument(
        "--set",
        dest="values",
        action="append",
        required=True,
        type=_assignment,
        metavar="KEYWORD=VALUE",
        help="e.g. PatientName='DOE^JANE' (repeat for several attributes)",
    )
    edit_cmd.set_defaults(run=_reported(_edit))

    merge_cmd = study.add_parser("merge-patients", help="merge one patient into another", description=_merge.__doc__)
    storage_flags(merge_cmd)
    merge_cmd.add_argument("--from", dest="source", required=True, metavar="PATIENT_ID", help="the patient merged")
    merge_cmd.add_argument("--from-issuer", default="", help="its Issuer of Patient ID, if any")
    merge_cmd.add_argument("--into", required=True, metavar="PATIENT_ID", help="the patient kept")
    merge_cmd.add_argument("--into-issuer", default="", help="its Issuer of Patient ID, if any")
    merge_cmd.set_defaults(run=_reported(_merge))

    move_cmd = study.add_parser("move-series", help="move a series to another study", description=_move.__doc__)
    storage_flags(move_cmd)
    move_cmd.add_argument("study_uid", help="the study holding the series")
    move_cmd.add_argument("series_uid", help="Series Instance UID")
    move_cmd.add_argument("--to", required=True, metavar="STUDY_UID", help="the study to move it to")
    move_cmd.set_defaults(run=_reported(_move))

    delete_cmd = study.add_parser("delete", help="delete a study (to the recycle bin)", description=_delete.__doc__)
    storage_flags(delete_cmd)
    delete_cmd.add_argument("study_uid", help="Study Instance UID")
    delete_cmd.add_argument("--now", action="store_true", help="delete at once, even with a recycle period")
    delete_cmd.set_defaults(run=_reported(_delete))

    restore_cmd = study.add_parser("restore", help="restore a study from the recycle bin", description=_restore.__doc__)
    storage_flags(restore_cmd)
    restore_cmd.add_argument("study_uid", help="Study Instance UID")
    restore_cmd.set_defaults(run=_reported(_restore))

    purge_cmd = study.add_parser("purge", help="purge expired studies from the recycle bin", description=_purge.__doc__)
    storage_flags(purge_cmd)
    purge_cmd.add_argument(
        "--days", type=int, help="purge what was deleted more than this many days ago (default WEBPACS_RECYCLE_DAYS)"
    )
    purge_cmd.add_argument("--study", dest="study_uid", help="purge this one recycled study now")
    purge_cmd.set_defaults(run=_reported(_purge))

    bin_cmd = study.add_parser("recycle-bin", help="list the recycle bin", description=_list_bin.__doc__)
    storage_flags(bin_cmd)
    bin_cmd.set_defaults(run=_list_bin)


def _assignment(text: str) -> tuple[str, str]:
    keyword, equals, value = text.partition("=")
    if not equals or not keyword:
        raise argparse.ArgumentTypeError(f"{text!r}: write KEYWORD=VALUE, e.g. PatientName=DOE^JANE")
    return keyword.strip(), value


def _cli_context(args: argparse.Namespace) -> AppContext:
    from dicomweb.app import build_context
    from dicomweb.cli import prepared_settings

    return build_context(prepared_settings(args))


def _cli_actor() -> tuple[str, str]:
    try:
        return "cli", getpass.getuser()
    except (KeyError, OSError):  # no user name in a bare container
        return "cli", "-"


def _reported(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """`command`, with a refusal of the archive (unknown study, invalid value...) a message and status 1."""

    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except ArchiveError as exc:
            sys.stderr.write(f"webpacs: {exc}\n")
            return 1

    return run


def _done(context: AppContext, output: str, events: list[tuple[Action, str, str]]) -> int:
    """Audit (action, study, detail) events as the CLI's user, then print `output`."""
    kind, name = _cli_actor()
    for action, study_uid, detail in events:
        context.access.audit.record(
            AuditRecord(kind, name, action, Outcome.SUCCESS, study_uid=study_uid, source="cli", detail=detail)
        )
    context.access.audit.flush()
    sys.stdout.write(output)
    return 0


def _edit(args: argparse.Namespace) -> int:
    """Change patient/study attributes in every instance of a study (new bytes, then one index switch)."""
    context = _cli_context(args)
    result = edit_study(context.engine, context.archive, args.study_uid, dict(args.values))
    output = json.dumps(asdict(result), ensure_ascii=False) + "\n"
    return _done(context, output, [(Action.ADMINISTER, args.study_uid, f"edited: {_before_after(result)}")])


def _merge(args: argparse.Namespace) -> int:
    """Give every study of patient --from the patient attributes of patient --into (run again to resume)."""
    context = _cli_context(args)
    source, target = PatientKey(args.source, args.from_issuer), PatientKey(args.into, args.into_issuer)
    result = merge_patients(context.engine, context.archive, source, target)
    merged = f"patient {source.patient_id!r} merged into {target.patient_id!r}"
    sys.stderr.write(f"merged {len(result.studies)} stud(ies) into patient {target.patient_id}\n")
    return _done(
        context,
        "".join(f"{study.study_uid}\t{study.instances} instance(s)\n" for study in result.studies),
        [(Action.ADMINISTER, study.study_uid, f"{merged}: {_before_after(study)}") for study in result.studies],
    )


def _move(args: argparse.Namespace) -> int:
    """Move a series to another study: its instances take that study's UID and patient/study attributes."""
    context = _cli_context(args)
    result = move_series_to_study(context.engine, context.archive, args.study_uid, args.series_uid, args.to)
    detail = f"series {args.series_uid} moved to study {args.to} ({result.instances} instance(s))"
    return _done(
        context, detail + "\n", [(Action.ADMINISTER, args.study_uid, detail), (Action.ADMINISTER, args.to, detail)]
    )


def _delete(args: argparse.Namespace) -> int:
    """Delete a study: to the recycle bin while WEBPACS_RECYCLE_DAYS > 0 (unless --now), else at once."""
    context = _cli_context(args)
    if context.settings.recycle_days and not args.now:
        count = recycle(context.engine, args.study_uid, by=_cli_actor()[1])
        verb = f"moved to the recycle bin for {context.settings.recycle_days} day(s)"
    else:
        count = context.archive.delete(args.study_uid)
        verb = "deleted"
    detail = f"{verb} ({count} instance(s))"
    return _done(context, f"study {args.study_uid} {detail}\n", [(Action.DELETE, args.study_uid, detail)])


def _restore(args: argparse.Namespace) -> int:
    """Restore a study from the recycle bin."""
    context = _cli_context(args)
    restore(context.engine, args.study_uid)
    detail = "restored from the recycle bin"
    return _done(context, f"study {args.study_uid} {detail}\n", [(Action.ADMINISTER, args.study_uid, detail)])


def _purge(args: argparse.Namespace) -> int:
    """Purge studies deleted more than --days (default WEBPACS_RECYCLE_DAYS) ago, or one --study now."""
    if args.days is not None and args.days < 0:
        raise SettingsError(f"--days {args.days}: give 0 or more")
    context = _cli_context(args)
    if args.study_uid is None:
        purged = _purge_expired(context, _cli_actor(), days=args.days)
        return _done(context, "".join(f"{uid}\n" for uid in purged), [])
    count = purge_study(context.engine, context.archive, args.study_uid)
    detail = f"purged from the recycle bin ({count} instance(s))"
    return _done(context, f"{args.study_uid}\n", [(Action.DELETE, args.study_uid, detail)])


def _list_bin(args: argparse.Namespace) -> int:
    """List the recycle bin: Study Instance UID, deleted at, by, patient ID, study date, instances."""
    context = _cli_context(args)
    for study in recycle_bin(context.engine):
        sys.stdout.write(
            f"{study.study_instance_uid}\t{study.recycled_at:%Y-%m-%d %H:%M}\t{study.recycled_by}\t"
            f"{study.patient_id}\t{study.study_date or '-'}\t{study.num_instances}\n"
        )
    return 0
