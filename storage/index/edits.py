"""Index edits over many instances at once: a study rewritten, a series moved, the recycle bin.

An edit writes new bytes for every instance first (storage/study_edits.py); here the index is switched
to them in one transaction, so a reader sees the whole study old or the whole study new, never a mix.
The transaction locks the study rows (as every write does, storage/index/writes.py) and checks that
the instances are still those that were rewritten: a store or replace that came in between is
reported as stale, nothing is written, and the caller rewrites those instances too and tries again.

The recycle bin hides a study (`study_recycle` row) without touching its rows or bytes: QIDO-RS,
WADO-RS and every instance lookup leave hidden studies out (`not_recycled`), restoring drops the
row, purging deletes the study like any delete. A table of its own rather than a column on `study`:
the QIDO paging subquery keeps being answered from the study order index alone, and the check is a
probe into a table that is empty most of the time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import Column, ForeignKey, String, bindparam, delete, exists, insert, select, update
from sqlmodel import Field, SQLModel

from storage.errors import ConflictingInstance, NotFound
from storage.index.journal import forget_blobs
from storage.index.models import (
    UtcDateTime,
    blob_journal_table,
    id_type,
    instance_table,
    series_table,
    study_table,
)
from storage.index.writes import (
    APPEND_CHANGES,
    LOCK_STUDY,
    UPDATE_INSTANCE,
    UPDATE_STUDY,
    NewInstance,
    delete_instances,
    instance_row_values,
    recount_study,
    refresh_modalities,
    study_row_values,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sqlalchemy import ColumnElement
    from sqlalchemy.engine import Connection

__all__ = [
    "RecycledStudy",
    "Rewritten",
    "StudyRecycle",
    "StudyRow",
    "move_series",
    "not_recycled",
    "patient_studies",
    "purge_recycled",
    "recycle_study",
    "recycled_studies",
    "restore_study",
    "study_row",
    "switch_study",
]


class StudyRecycle(SQLModel, table=True):
    """A study in the recycle bin: hidden from every query and retrieval until restored or purged."""

    __tablename__ = "study_recycle"

    study_id: int = Field(
        sa_column=Column(
            "study_id",
            id_type(),
            ForeignKey("study.id", ondelete="CASCADE", name="fk_study_recycle_study_id"),
            primary_key=True,
        )
    )
    recycled_at: datetime = Field(sa_column=Column("recycled_at", UtcDateTime(), nullable=False, index=True))
    recycled_by: str = Field(default="", sa_column=Column("recycled_by", String(200), nullable=False))


recycle_table: Final = SQLModel.metadata.tables["study_recycle"]


def not_recycled(study_id: ColumnElement[Any]) -> ColumnElement[bool]:
    """The condition that the study whose id is `study_id` is not in the recycle bin."""
    return ~exists().where(recycle_table.c.study_id == study_id)


@dataclass(frozen=True, slots=True)
class Rewritten:
    """An instance's new bytes (durable, journaled) and the blob they replace."""

    item: NewInstance
    old_blob_key: str


@dataclass(frozen=True, slots=True)
class StudyRow:
    """What an edit needs to know of a visible study."""

    id: int
    study_instance_uid: str
    json: str
    num_instances: int


@dataclass(frozen=True, slots=True)
class RecycledStudy:
    """A study in the recycle bin."""

    study_instance_uid: str
    patient_name: str
    patient_id: str
    study_date: str
    study_description: str
    accession_number: str
    num_instances: int
    recycled_at: datetime
    recycled_by: str


_VISIBLE_STUDY: Final = select(
    study_table.c.id, study_table.c.study_instance_uid, study_table.c.json, study_table.c.num_instances
).where(study_table.c.study_instance_uid == bindparam("study_uid"), not_recycled(study_table.c.id))
_CURRENT_BLOBS: Final = select(instance_table.c.id, instance_table.c.sop_instance_uid, instance_table.c.blob_key)
_IS_RECYCLED: Final = select(recycle_table.c.study_id).where(recycle_table.c.study_id == bindparam("study_pk"))


def study_row(connection: Connection, study_uid: str) -> StudyRow:
    """The visible (not recycled) study `study_uid`.

    Raises:
        NotFound: no such study, or it is in the recycle bin.
    """
    row = connection.execute(_VISIBLE_STUDY, {"study_uid": study_uid}).first()
    if row is None:
        msg = f"study {study_uid} is not in the archive"
        raise NotFound(msg)
    return StudyRow(row.id, row.study_instance_uid, row.json, row.num_instances)


def _lock_visible(connection: Connection, study_uid: str) -> int:
    """Lock the study row (writes.py's lock) and return its id.

    Raises:
        NotFound: no such study, or it is in the recycle bin.
    """
    study_id: int | None = connection.execute(LOCK_STUDY, {"study_uid": study_uid}).scalar()
    if study_id is None or connection.execute(_IS_RECYCLED, {"study_pk": study_id}).first() is not None:
        msg = f"study {study_uid} is not in the archive"
        raise NotFound(msg)
    return study_id


def _stale(current: dict[str, tuple[int, str]], rewritten: Sequence[Rewritten]) -> list[str]:
    """SOP Instance UIDs whose stored blob is not the one rewritten (stored or replaced meanwhile)."""
    done = {r.item.parsed.instance.sop_instance_uid: r.old_blob_key for r in rewritten}
    return sorted(sop for sop, (_, blob_key) in current.items() if done.get(sop) != blob_key)


def _journal_doomed(connection: Connection, blob_keys: Sequence[str], host: str, now: datetime) -> None:
    """Journal blobs the index stops referencing, until the caller deleted them after the commit.

    A crash before those deletes leaves them unreferenced; as this host's journal rows, the sweep at
    its restart deletes them whatever their ingest day (storage/archive.py `sweep_orphans`).
    """
    if blob_keys:
        connection.execute(
            insert(blob_journal_table), [{"blob_key": key, "host": host, "created_at": now} for key in blob_keys]
        )


def _switch_rows(
    connection: Connection,
    current: dict[str, tuple[int, str]],
    rewritten: Sequence[Rewritten],
    now: datetime,
    host: str,
) -> list[Rewritten]:
    """Point the instance rows at their new blobs and metadata; return what was switched."""
    switched = [r for r in rewritten if r.item.parsed.instance.sop_instance_uid in current]
    if switched:
        connection.execute(
            UPDATE_INSTANCE,
            [
                {
                    "row_id": current[r.item.parsed.instance.sop_instance_uid][0],
                    # created_at stays: retention measures "received" from it.
                    **{k: v for k, v in instance_row_values(r.item, now).items() if k != "created_at"},
                }
                for r in switched
            ],
        )
    forget_blobs(connection, [r.item.blob_key for r in rewritten])
    _journal_doomed(connection, [r.old_blob_key for r in switched], host, now)
    return switched


def _switch_scope(
    connection: Connection, scope: ColumnElement[bool], rewritten: Sequence[Rewritten], host: str
) -> tuple[list[str], dict[str, tuple[int, str]], list[Rewritten], datetime]:
    """Switch the instances in `scope` to their rewritten bytes, unless some are stale.

    Returns:
        (stale SOP Instance UIDs: nothing written when there are any; the instances in scope as
        {SOP Instance UID: (row id, blob key before)}; the rewritten instances switched; now).
    """
    rows = connection.execute(_CURRENT_BLOBS.where(scope)).all()
    current = {row.sop_instance_uid: (row.id, row.blob_key) for row in rows}
    now = datetime.now(UTC)
    stale = _stale(current, rewritten)
    if stale:
        return stale, current, [], now
    return [], current, _switch_rows(connection, current, rewritten, now, host), now


def _changes(kind: str, study_uid: str, rewritten: Sequence[Rewritten], now: datetime) -> list[dict[str, Any]]:
    return [
        {
            "kind": kind,
            "study_instance_uid": study_uid,
            "series_instance_uid": r.item.parsed.series.series_instance_uid,
            "sop_instance_uid": r.item.parsed.instance.sop_instance_uid,
            "at": now,
        }
        for r in rewritten
    ]


def switch_study(connection: Connection, study_uid: str, rewritten: Sequence[Rewritten], *, host: str) -> list[str]:
    """Switch every instance of the study to its rewritten bytes, inside the caller's write transaction.

    The study row takes the patient/study attributes of its newest instance's new bytes (the newest
    instance's values win, as when storing). Each switched instance gets a "stored" change record.
    The old blobs are journaled for `host`, which deletes them and forgets the rows after the commit.

    Returns:
        The SOP Instance UIDs that are stale (stored or replaced since they were read, or not
        rewritten): nothing was written, rewrite those and call again. Empty when switched.

    Raises:
        NotFound: the study is gone or in the recycle bin.
    """
    study_id = _lock_visible(connection, study_uid)
    stale, current, switched, now = _switch_scope(connection, instance_table.c.study_id == study_id, rewritten, host)
    if stale:
        return stale
    if switched:
        newest = max(switched, key=lambda r: current[r.item.parsed.instance.sop_instance_uid][0])
        values = study_row_values(newest.item.parsed)
        connection.execute(UPDATE_STUDY, {"row_id": study_id, **values, "updated_at": now})
        connection.execute(APPEND_CHANGES, _changes("stored", study_uid, switched, now))
    return []


def move_series(
    connection: Connection,
    study_uid: str,
    series_uid: str,
    to_study_uid: str,
    rewritten: Sequence[Rewritten],
    *,
    host: str,
) -> list[str]:
    """Move a series to another study with its rewritten bytes, inside the caller's write transaction.

    Counts, ModalitiesInStudy and SOPClassesInStudy of both studies are recomputed; the source
    study goes when it is left empty. Each instance gets a "deleted" change record under the old
    study and a "stored" one under the new.

    Returns:
        Stale SOP Instance UIDs, as `switch_study` does (nothing written); empty when moved. The old
        blobs are journaled for `host`, as `switch_study` does.

    Raises:
        NotFound: either study is gone or recycled, or the series is not in the source study.
        ConflictingInstance: the target is the source study.
    """
    if study_uid == to_study_uid:
        msg = f"series {series_uid} is already in study {study_uid}: name another study to move it to"
        raise ConflictingInstance(msg)
    # Both studies locked in UID order, so that two moves between them never deadlock.
    ids = {uid: _lock_visible(connection, uid) for uid in sorted((study_uid, to_study_uid))}
    source_id, target_id = ids[study_uid], ids[to_study_uid]
    series_id = connection.execute(
        select(series_table.c.id).where(
            series_table.c.series_instance_uid == series_uid, series_table.c.study_id == source_id
        )
    ).scalar()
    if series_id is None:
        msg = f"series {series_uid} of study {study_uid} is not in the archive"
        raise NotFound(msg)
    stale, _, switched, now = _switch_scope(connection, instance_table.c.series_id == series_id, rewritten, host)
    if stale:
        return stale
    connection.execute(update(series_table).where(series_table.c.id == series_id).values(study_id=target_id))
    connection.execute(update(instance_table).where(instance_table.c.series_id == series_id).values(study_id=target_id))
    for study_id in (target_id, source_id):
        recount_study(connection, study_id, now)  # drops the source study when it is left empty
        refresh_modalities(connection, study_id)
    connection.execute(
        APPEND_CHANGES, _changes("deleted", study_uid, switched, now) + _changes("stored", to_study_uid, switched, now)
    )
    return []


_ISSUER_OF_PATIENT_ID: Final = "00100021"


def patient_studies(connection: Connection, patient_id: str, issuer: str) -> list[tuple[str, str]]:
    """(Study Instance UID, study DICOM JSON) of the visible studies of a patient, least recently updated first.

    A patient is its Patient ID and Issuer of Patient ID ('' when absent), which only the stored
    JSON keeps.
    """
    rows = connection.execute(
        select(study_table.c.study_instance_uid, study_table.c.json)
        .where(study_table.c.patient_id == patient_id, not_recycled(study_table.c.id))
        .order_by(study_table.c.updated_at, study_table.c.id)
    ).all()
    found = []
    for uid, text in rows:
        values = json.loads(text).get(_ISSUER_OF_PATIENT_ID, {}).get("Value") or [""]
        if str(values[0]) == issuer:
            found.append((uid, text))
    return found


def recycle_study(connection: Connection, study_uid: str, by: str) -> int:
    """Put a study in the recycle bin, inside the caller's write transaction; returns its instance count.

    Raises:
        NotFound: no such study, or it is in the recycle bin already.
    """
    study_id = _lock_visible(connection, study_uid)
    connection.execute(
        insert(recycle_table), {"study_id": study_id, "recycled_at": datetime.now(UTC), "recycled_by": by[:200]}
    )
    count: int = connection.execute(
        select(study_table.c.num_instances).where(study_table.c.id == study_id)
    ).scalar_one()
    return count


def _recycled_id(connection: Connection, study_uid: str) -> int:
    study_id: int | None = connection.execute(LOCK_STUDY, {"study_uid": study_uid}).scalar()
    if study_id is None or connection.execute(_IS_RECYCLED, {"study_pk": study_id}).first() is None:
        msg = f"study {study_uid} is not in the recycle bin"
        raise NotFound(msg)
    return study_id


def restore_study(connection: Connection, study_uid: str) -> None:
    """Take a study out of the recycle bin, inside the caller's write transaction.

    Raises:
        NotFound: the study is not in the recycle bin.
    """
    study_id = _recycled_id(connection, study_uid)
    connection.execute(delete(recycle_table).where(recycle_table.c.study_id == study_id))


def purge_recycled(connection: Connection, study_uid: str, *, host: str) -> list[str]:
    """Delete a recycled study from the index (a restore in between wins), in the caller's transaction.

    Returns:
        The blob keys to delete once this committed, journaled for `host` (forget them once deleted).

    Raises:
        NotFound: the study is not in the recycle bin (restored, or purged by another worker).
    """
    _recycled_id(connection, study_uid)
    keys = delete_instances(connection, study_uid, None, None)
    _journal_doomed(connection, keys, host, datetime.now(UTC))
    return keys


def recycled_studies(connection: Connection, *, before: datetime | None = None) -> list[RecycledStudy]:
    """The recycle bin, oldest first; with `before`, only studies recycled earlier than that."""
    statement = (
        select(
            study_table.c.study_instance_uid,
            study_table.c.patient_name,
            study_table.c.patient_id,
            study_table.c.study_date,
            study_table.c.study_description,
            study_table.c.accession_number,
            study_table.c.num_instances,
            recycle_table.c.recycled_at,
            recycle_table.c.recycled_by,
        )
        .select_from(recycle_table.join(study_table, recycle_table.c.study_id == study_table.c.id))
        .order_by(recycle_table.c.recycled_at, study_table.c.id)
    )
    if before is not None:
        statement = statement.where(recycle_table.c.recycled_at < before)
    return [RecycledStudy(*row) for row in connection.execute(statement)]
