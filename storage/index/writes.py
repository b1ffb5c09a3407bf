"""Index writes: add (store or replace) and delete instances, keeping counts and sets exact.

Every write to a study's rows first locks the study row (PostgreSQL: row lock; SQLite: the database
write lock of BEGIN IMMEDIATE), so writers of the same study are serialised and the maintained
counts (NumberOfStudyRelated..., ModalitiesInStudy, SOPClassesInStudy) never lose an update; inserts
of UIDs use ON CONFLICT so that two writers of different studies never create duplicate rows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from storage.dicom.records import ParsedInstance
from storage.errors import ConflictingInstance, NotFound
from storage.index.models import (
    change_table,
    instance_table,
    normalize_person_name,
    series_table,
    study_modality_table,
    study_sop_class_table,
    study_table,
)

if TYPE_CHECKING:
    from sqlalchemy import ColumnElement, Row, Table
    from sqlalchemy.engine import Connection


__all__ = ["AddOutcome", "NewInstance", "add_instance", "delete_instances"]


@dataclass(frozen=True, slots=True)
class AddOutcome:
    """What adding one instance did.

    Attributes:
        kind: stored (new), already_present (same SOP Instance UID and bytes: nothing changed) or
            replaced (same UID, other bytes: the row now points at the new blob).
        old_blob_key: for replaced, the blob the caller deletes once the transaction committed.
    """

    kind: Literal["stored", "already_present", "replaced"]
    old_blob_key: str | None = None


@dataclass(frozen=True, slots=True)
class NewInstance:
    """One instance to index, its bytes already durable in the blob store."""

    parsed: ParsedInstance
    blob_key: str
    size: int
    sha256: str


def _upsert(connection: Connection, table: Table) -> Any:
    """INSERT with ON CONFLICT support: both dialects spell it the same way in SQLAlchemy."""
    if connection.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def _json(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _time(value: str) -> str:
    """TM as matched: ACR-NEMA `HH:MM:SS` loses its colons (PS3.5 §6.2, earlier formats)."""
    return value.replace(":", "")


def _date(value: str) -> str:
    """DA as matched: ACR-NEMA `YYYY.MM.DD` loses its dots (PS3.5 §6.2, earlier formats)."""
    return value.replace(".", "")


def _study_values(parsed: ParsedInstance, now: datetime) -> dict[str, Any]:
    study = parsed.study
    return {
        "patient_id": study.patient_id,
        "patient_name": study.patient_name,
        "patient_name_norm": normalize_person_name(study.patient_name).rstrip("="),
        "patient_birth_date": _date(study.patient_birth_date),
        "patient_sex": study.patient_sex,
        "study_date": _date(study.study_date),
        "study_time": _time(study.study_time),
        "accession_number": study.accession_number,
        "study_id": study.study_id,
        "study_description": study.study_description,
        "referring_physician_name": study.referring_physician_name,
        "referring_physician_name_norm": normalize_person_name(study.referring_physician_name).rstrip("="),
        "institution_name": study.institution_name,
        "json": _json(study.json),
        "updated_at": now,
    }


def _series_values(parsed: ParsedInstance) -> dict[str, Any]:
    series = parsed.series
    return {
        "modality": series.modality,
        "series_number": series.series_number,
        "series_description": series.series_description,
        "body_part_examined": series.body_part_examined,
        "pps_start_date": _date(series.performed_procedure_step_start_date),
        "pps_start_time": _time(series.performed_procedure_step_start_time),
        "json": _json(series.json),
    }


def _instance_values(item: NewInstance, now: datetime) -> dict[str, Any]:
    instance = item.parsed.instance
    frames = item.parsed.frames
    return {
        "sop_class_uid": instance.sop_class_uid,
        "instance_number": instance.instance_number,
        "transfer_syntax_uid": instance.transfer_syntax_uid,
        "rows": instance.rows,
        "columns": instance.columns,
        "bits_allocated": instance.bits_allocated,
        "number_of_frames": instance.number_of_frames,
        "json": _json(instance.json),
        "metadata": item.parsed.metadata,
        "frames": None if frames is None else _json([frame.fragments for frame in frames]),
        "blob_key": item.blob_key,
        "size": item.size,
        "sha256": item.sha256,
        "created_at": now,
    }


def _lock_study(connection: Connection, parsed: ParsedInstance, now: datetime) -> int:
    """Create the study row if missing and lock it for the rest of the transaction; its id."""
    uid = parsed.study.study_instance_uid
    values = {"study_instance_uid": uid, **_study_values(parsed, now), "created_at": now}
    connection.execute(
        _upsert(connection, study_table).values(values).on_conflict_do_nothing(index_elements=["study_instance_uid"])
    )
    study_id: int = connection.execute(
        select(study_table.c.id).where(study_table.c.study_instance_uid == uid).with_for_update()
    ).scalar_one()
    return study_id


def _stored_instance(connection: Connection, sop_uid: str) -> Row[*tuple[Any, ...]] | None:
    return connection.execute(
        select(
            instance_table.c.id,
            instance_table.c.study_id,
            instance_table.c.sha256,
            instance_table.c.blob_key,
            series_table.c.series_instance_uid,
            study_table.c.study_instance_uid,
        )
        .select_from(
            instance_table.join(series_table, instance_table.c.series_id == series_table.c.id).join(
                study_table, instance_table.c.study_id == study_table.c.id
            )
        )
        .where(instance_table.c.sop_instance_uid == sop_uid)
    ).first()


def _conflict(what: str, uid: str, stored_in: str, parsed: ParsedInstance) -> ConflictingInstance:
    return ConflictingInstance(
        f"{what} {uid} is already stored in {stored_in}, but this instance belongs to study "
        f"{parsed.study.study_instance_uid} series {parsed.series.series_instance_uid}: "
        "give the instance new UIDs, or delete the stored one first"
    )


def add_instance(connection: Connection, item: NewInstance) -> AddOutcome:
    """Index one instance inside the caller's write transaction.

    Raises:
        ConflictingInstance: its SOP Instance UID or Series Instance UID is stored elsewhere.
    """
    parsed = item.parsed
    now = datetime.now(UTC)
    study_id = _lock_study(connection, parsed, now)
    sop_uid = parsed.instance.sop_instance_uid
    stored = _stored_instance(connection, sop_uid)
    if stored is not None:
        if stored.study_id != study_id or stored.series_instance_uid != parsed.series.series_instance_uid:
            where = f"study {stored.study_instance_uid} series {stored.series_instance_uid}"
            raise _conflict("SOP Instance UID", sop_uid, where, parsed)
        if stored.sha256 == item.sha256:
            return AddOutcome("already_present")
    series_id, new_series = _series(connection, parsed, study_id)
    new_instance = stored is None
    if stored is None:
        _insert_instance(connection, item, series_id, study_id, now)
    else:
        connection.execute(
            update(instance_table).where(instance_table.c.id == stored.id).values(_instance_values(item, now))
        )
        # The replaced instance may have been the study's last of its SOP class.
        _refresh_sop_classes(connection, study_id)
    connection.execute(
        update(series_table)
        .where(series_table.c.id == series_id)
        .values(num_instances=series_table.c.num_instances + int(new_instance))
    )
    connection.execute(
        update(study_table)
        .where(study_table.c.id == study_id)
        .values(
            {
                **_study_values(parsed, now),
                "num_series": study_table.c.num_series + int(new_series),
                "num_instances": study_table.c.num_instances + int(new_instance),
            }
        )
    )
    connection.execute(
        _upsert(connection, study_sop_class_table)
        .values(study_id=study_id, sop_class_uid=parsed.instance.sop_class_uid)
        .on_conflict_do_nothing()
    )
    uids = (parsed.study.study_instance_uid, parsed.series.series_instance_uid, sop_uid)
    _append_changes(connection, "stored", [uids], now)
    if stored is None:
        return AddOutcome("stored")
    return AddOutcome("replaced", stored.blob_key)


def _series(connection: Connection, parsed: ParsedInstance, study_id: int) -> tuple[int, bool]:
    """The series row (created if missing, attributes updated from this instance); (id, created)."""
    uid = parsed.series.series_instance_uid
    values = _series_values(parsed)
    existing = connection.execute(
        select(series_table.c.id, series_table.c.study_id, series_table.c.modality).where(
            series_table.c.series_instance_uid == uid
        )
    ).first()
    if existing is None:
        series_id = connection.execute(
            _upsert(connection, series_table)
            .values(series_instance_uid=uid, study_id=study_id, created_at=datetime.now(UTC), **values)
            .on_conflict_do_nothing(index_elements=["series_instance_uid"])
            .returning(series_table.c.id)
        ).scalar()
        if series_id is None:  # another study's writer created it meanwhile
            raise _conflict("Series Instance UID", uid, "another study", parsed)
        connection.execute(
            _upsert(connection, study_modality_table)
            .values(study_id=study_id, modality=parsed.series.modality)
            .on_conflict_do_nothing()
        )
        return series_id, True
    if existing.study_id != study_id:
        stored_in = connection.execute(
            select(study_table.c.study_instance_uid).where(study_table.c.id == existing.study_id)
        ).scalar_one()
        raise _conflict("Series Instance UID", uid, f"study {stored_in}", parsed)
    connection.execute(update(series_table).where(series_table.c.id == existing.id).values(values))
    if existing.modality != parsed.series.modality:
        _refresh_modalities(connection, study_id)
    return existing.id, False


def _insert_instance(connection: Connection, item: NewInstance, series_id: int, study_id: int, now: datetime) -> None:
    sop_uid = item.parsed.instance.sop_instance_uid
    inserted = connection.execute(
        _upsert(connection, instance_table)
        .values(
            sop_instance_uid=sop_uid,
            series_id=series_id,
            study_id=study_id,
            **_instance_values(item, now),
        )
        .on_conflict_do_nothing(index_elements=["sop_instance_uid"])
        .returning(instance_table.c.id)
    ).scalar()
    if inserted is None:  # another study's writer stored the same SOP Instance UID meanwhile
        raise _conflict("SOP Instance UID", sop_uid, "another study", item.parsed)


def _append_changes(connection: Connection, kind: str, uids: list[tuple[str, str, str]], now: datetime) -> None:
    connection.execute(
        insert(change_table),
        [
            {
                "kind": kind,
                "study_instance_uid": study,
                "series_instance_uid": series,
                "sop_instance_uid": sop,
                "at": now,
            }
            for study, series, sop in uids
        ],
    )


def _refresh_modalities(connection: Connection, study_id: int) -> None:
    """Rebuild ModalitiesInStudy from the study's series."""
    connection.execute(delete(study_modality_table).where(study_modality_table.c.study_id == study_id))
    connection.execute(
        insert(study_modality_table).from_select(
            ["study_id", "modality"],
            select(series_table.c.study_id, series_table.c.modality)
            .where(series_table.c.study_id == study_id)
            .distinct(),
        )
    )


def _refresh_sop_classes(connection: Connection, study_id: int) -> None:
    """Rebuild SOPClassesInStudy from the study's instances."""
    connection.execute(delete(study_sop_class_table).where(study_sop_class_table.c.study_id == study_id))
    connection.execute(
        insert(study_sop_class_table).from_select(
            ["study_id", "sop_class_uid"],
            select(instance_table.c.study_id, instance_table.c.sop_class_uid)
            .where(instance_table.c.study_id == study_id)
            .distinct(),
        )
    )


def delete_instances(connection: Connection, study_uid: str, series_uid: str | None, sop_uid: str | None) -> list[str]:
    """Delete a study, a series or an instance inside the caller's write transaction.

    Returns:
        The blob keys of the deleted instances, for the caller to delete after the commit.

    Raises:
        NotFound: nothing is stored under these UIDs.
    """
    study_id = connection.execute(
        select(study_table.c.id).where(study_table.c.study_instance_uid == study_uid).with_for_update()
    ).scalar()
    if study_id is None:
        msg = f"study {study_uid} is not in the archive"
        raise NotFound(msg)
    conditions: list[ColumnElement[bool]] = [instance_table.c.study_id == study_id]
    if series_uid is not None:
        conditions.append(series_table.c.series_instance_uid == series_uid)
    if sop_uid is not None:
        conditions.append(instance_table.c.sop_instance_uid == sop_uid)
    doomed = connection.execute(
        select(
            instance_table.c.id,
            instance_table.c.blob_key,
            series_table.c.series_instance_uid,
            instance_table.c.sop_instance_uid,
        )
        .select_from(instance_table.join(series_table, instance_table.c.series_id == series_table.c.id))
        .where(*conditions)
    ).all()
    if not doomed:
        what = f"instance {sop_uid} of " if sop_uid is not None else ""
        what += f"series {series_uid} of " if series_uid is not None else ""
        msg = f"{what}study {study_uid} is not in the archive"
        raise NotFound(msg)
    _append_changes(
        connection,
        "deleted",
        [(study_uid, row.series_instance_uid, row.sop_instance_uid) for row in doomed],
        datetime.now(UTC),
    )
    if series_uid is None and sop_uid is None:
        # The whole study: its series, instances and sets go with it (ON DELETE CASCADE).
        connection.execute(delete(study_table).where(study_table.c.id == study_id))
        return [row.blob_key for row in doomed]
    doomed_ids = (
        select(instance_table.c.id)
        .select_from(instance_table.join(series_table, instance_table.c.series_id == series_table.c.id))
        .where(*conditions)
    )
    connection.execute(delete(instance_table).where(instance_table.c.id.in_(doomed_ids)))
    _recount(connection, study_id)
    return [row.blob_key for row in doomed]


def _recount(connection: Connection, study_id: int) -> None:
    """Recompute a study's counts and sets after a delete; drop what became empty."""
    per_series = select(func.count()).where(instance_table.c.series_id == series_table.c.id).scalar_subquery()
    connection.execute(update(series_table).where(series_table.c.study_id == study_id).values(num_instances=per_series))
    connection.execute(
        delete(series_table).where(series_table.c.study_id == study_id, series_table.c.num_instances == 0)
    )
    num_series = connection.execute(select(func.count()).where(series_table.c.study_id == study_id)).scalar_one()
    if num_series == 0:
        connection.execute(delete(study_table).where(study_table.c.id == study_id))
        return
    connection.execute(
        update(study_table)
        .where(study_table.c.id == study_id)
        .values(
            num_series=num_series,
            num_instances=select(func.count()).where(instance_table.c.study_id == study_id).scalar_subquery(),
            updated_at=datetime.now(UTC),
        )
    )
    _refresh_modalities(connection, study_id)
    _refresh_sop_classes(connection, study_id)
