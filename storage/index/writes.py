"""Index writes: add (store or replace) and delete instances, keeping counts and sets exact.

Every write to a study's rows first locks the study row (PostgreSQL: row lock; SQLite: the database
write lock of BEGIN IMMEDIATE), so writers of the same study are serialised and the maintained
counts (NumberOfStudyRelated..., ModalitiesInStudy, SOPClassesInStudy) never lose an update; inserts
of UIDs use ON CONFLICT so that two writers of different studies never create duplicate rows.

Adding is the hot path of STOW-RS, so its statements are built once, here, with bind parameters:
executing one only looks up SQLAlchemy's compiled cache. An add checks everything the instance could
be refused for before it writes a row that would have to be undone, and writes attributes only when
one changed. On PostgreSQL, where a round trip costs more than a statement, the common add (a new
instance of a known series) is one statement after the lock (`_LOOKUP_AND_STORE`). On SQLite,
in-process, a transaction's counts and change records are written once, at its end (`_Writer.flush`):
the study rows stay locked until the commit, so counting at the end is as exact as on the way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, Literal

from sqlalchemy import Boolean, String, and_, bindparam, delete, func, insert, literal_column, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.dml import Insert, ReturningDelete

from storage.dicom.records import ParsedInstance
from storage.errors import ArchiveError, ConflictingInstance, NotFound
from storage.index.journal import forget_blobs
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
    from collections.abc import Callable, Sequence

    from sqlalchemy import BindParameter, ColumnElement, Select, Table
    from sqlalchemy.engine import Connection, NestedTransaction


__all__ = [
    "APPEND_CHANGES",
    "LOCK_STUDY",
    "UPDATE_INSTANCE",
    "UPDATE_STUDY",
    "AddOutcome",
    "NewInstance",
    "add_instance",
    "add_instances",
    "delete_instances",
    "instance_row_values",
    "recount_study",
    "refresh_modalities",
    "study_row_values",
]


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


# The columns an add copies from the instance onto the study and series rows (the newest instance's
# values win), in the order `study_row_values` and `_series_values` produce them.
_STUDY_ATTRIBUTES: Final = (
    "patient_id",
    "patient_name",
    "patient_name_norm",
    "patient_birth_date",
    "patient_sex",
    "study_date",
    "study_time",
    "accession_number",
    "study_id",
    "study_description",
    "referring_physician_name",
    "referring_physician_name_norm",
    "institution_name",
    "json",
)
_SERIES_ATTRIBUTES: Final = (
    "modality",
    "series_number",
    "series_description",
    "body_part_examined",
    "pps_start_date",
    "pps_start_time",
    "json",
)


def _by_id(table: Table) -> ColumnElement[bool]:
    # Not named "id": an UPDATE takes its SET columns from the other parameter names.
    return table.c.id == bindparam("row_id")


# Locks the study row (FOR UPDATE is dropped on SQLite, where BEGIN IMMEDIATE already holds the lock).
LOCK_STUDY: Final = (
    select(study_table.c.id, *(study_table.c[name] for name in _STUDY_ATTRIBUTES))
    .where(study_table.c.study_instance_uid == bindparam("study_uid"))
    .with_for_update()
)
# Everything an add decides on, in one round trip: the series and the instance stored under the
# new instance's UIDs, and whether the study already lists its SOP class. Run after the study lock,
# so that on PostgreSQL it sees what the previous holder of the lock committed.
_SERIES_LABELS: Final = tuple(f"s_{name}" for name in _SERIES_ATTRIBUTES)  # short: see _store_in_one_statement
_DUAL: Final = select(literal_column("1").label("one")).subquery("dual")
_LOOKUP: Final = select(
    series_table.c.id.label("series_id"),
    series_table.c.study_id.label("series_study_id"),
    *(series_table.c[name].label(label) for name, label in zip(_SERIES_ATTRIBUTES, _SERIES_LABELS, strict=True)),
    instance_table.c.id.label("instance_id"),
    instance_table.c.study_id.label("instance_study_id"),
    instance_table.c.series_id.label("instance_series_id"),
    instance_table.c.sop_class_uid.label("instance_sop_class_uid"),
    instance_table.c.sha256.label("instance_sha256"),
    instance_table.c.blob_key.label("instance_blob_key"),
    study_sop_class_table.c.study_id.label("listed_sop_class"),
).select_from(
    _DUAL.outerjoin(series_table, series_table.c.series_instance_uid == bindparam("series_uid"))
    .outerjoin(instance_table, instance_table.c.sop_instance_uid == bindparam("sop_uid"))
    .outerjoin(
        study_sop_class_table,
        and_(
            study_sop_class_table.c.study_id == bindparam("study_pk"),
            study_sop_class_table.c.sop_class_uid == bindparam("sop_class_uid"),
        ),
    )
)
# Executed with the changed columns as further parameters (SET takes them from the parameter names).
UPDATE_STUDY: Final = update(study_table).where(_by_id(study_table))
_UPDATE_SERIES: Final = update(series_table).where(_by_id(series_table))
UPDATE_INSTANCE: Final = update(instance_table).where(_by_id(instance_table))
_COUNT_SERIES: Final = (
    update(series_table)
    .where(_by_id(series_table))
    .values(num_instances=series_table.c.num_instances + bindparam("added_instances"))
)
_COUNT_STUDY: Final = (
    update(study_table)
    .where(_by_id(study_table))
    .values(
        num_series=study_table.c.num_series + bindparam("added_series"),
        num_instances=study_table.c.num_instances + bindparam("added_instances"),
    )
)
APPEND_CHANGES: Final = insert(change_table)
_INSTANCE_PLACE: Final = (
    select(series_table.c.series_instance_uid, study_table.c.study_instance_uid)
    .select_from(
        instance_table.join(series_table, instance_table.c.series_id == series_table.c.id).join(
            study_table, instance_table.c.study_id == study_table.c.id
        )
    )
    .where(_by_id(instance_table))
)
_STUDY_UID: Final = select(study_table.c.study_instance_uid).where(_by_id(study_table))


@dataclass(frozen=True, slots=True)
class _Inserts:
    """The INSERT ... ON CONFLICT statements, in one dialect's spelling."""

    study: Insert
    series: Insert
    instance: Insert
    study_modality: Insert
    study_sop_class: Insert


def _inserts(insert_on_conflict: Callable[[Table], Any]) -> _Inserts:
    def new_row(table: Table, uid: str) -> Insert:
        statement: Insert = insert_on_conflict(table).on_conflict_do_nothing(index_elements=[uid]).returning(table.c.id)
        return statement

    return _Inserts(
        study=new_row(study_table, "study_instance_uid"),
        series=new_row(series_table, "series_instance_uid"),
        instance=new_row(instance_table, "sop_instance_uid"),
        study_modality=insert_on_conflict(study_modality_table).on_conflict_do_nothing(),
        study_sop_class=insert_on_conflict(study_sop_class_table).on_conflict_do_nothing(),
    )


_INSERTS: Final = {"postgresql": _inserts(postgresql.insert), "sqlite": _inserts(sqlite.insert)}

# The instance row's columns; the ones `instance_row_values` makes and the three keys.
_INSTANCE_COLUMNS: Final = (
    "sop_instance_uid",
    "series_id",
    "study_id",
    "sop_class_uid",
    "instance_number",
    "transfer_syntax_uid",
    "rows",
    "columns",
    "bits_allocated",
    "number_of_frames",
    "json",
    "metadata",
    "frames",
    "blob_key",
    "size",
    "sha256",
    "created_at",
)


def _param(name: str, column: ColumnElement[Any]) -> BindParameter[Any]:
    """A parameter typed like `column`, text without its collation: shorter SQL (see below)."""
    return bindparam(name, type_=String() if isinstance(column.type, String) else column.type)


def _store_in_one_statement() -> Select[*tuple[Any, ...]]:
    """PostgreSQL: look up, store, count and record an instance in one round trip.

    The `_LOOKUP` row comes back in any case, with `stored_id` set when the instance was stored:
    that happens only in the common case, which needs no other write (no instance under its SOP
    Instance UID, its series already in the study with the same attributes, its SOP class listed,
    `study_unchanged`). Otherwise nothing is written and the caller decides from the lookup row.
    Data-modifying CTEs all run on the INSERT's RETURNING, so ON CONFLICT skipping the row (another
    study's writer stored the SOP Instance UID meanwhile) counts and records nothing either.
    No parameter is named like a column: SQLAlchemy would add such a one to the UPDATEs' SET.
    The SQL stays under psycopg's 4096 characters, above which it parses the query on each call.
    """
    found = _LOOKUP.cte("found")
    common_case = and_(
        found.c.instance_id.is_(None),
        found.c.series_study_id == bindparam("study_pk"),
        found.c.listed_sop_class.is_not(None),
        bindparam("study_unchanged", type_=Boolean()),
        *(
            found.c[label].is_not_distinct_from(_param(f"new_series_{name}", series_table.c[name]))
            for name, label in zip(_SERIES_ATTRIBUTES, _SERIES_LABELS, strict=True)
        ),
    )
    new_instance = (
        postgresql.insert(instance_table)
        .from_select(
            list(_INSTANCE_COLUMNS),
            select(
                *(
                    found.c.series_id if name == "series_id" else _param(f"new_{name}", instance_table.c[name])
                    for name in _INSTANCE_COLUMNS
                )
            ).where(common_case),
        )
        .on_conflict_do_nothing(index_elements=["sop_instance_uid"])
        .returning(instance_table.c.id, instance_table.c.series_id, instance_table.c.study_id)
        .cte("new_instance")
    )
    counted_series = (
        update(series_table)
        .where(series_table.c.id == new_instance.c.series_id)
        .values(num_instances=series_table.c.num_instances + 1)
        .cte("counted_series")
    )
    counted_study = (
        update(study_table)
        .where(study_table.c.id == new_instance.c.study_id)
        .values(
            num_series=study_table.c.num_series + bindparam("added_series"),
            num_instances=study_table.c.num_instances + 1,
            updated_at=bindparam("study_updated_at", type_=study_table.c.updated_at.type),
        )
        .cte("counted_study")
    )
    change = change_table.c
    appended = (
        insert(change_table)
        .from_select(
            ["kind", "study_instance_uid", "series_instance_uid", "sop_instance_uid", "at"],
            select(
                literal_column("'stored'"),
                _param("change_study_uid", change.study_instance_uid),
                _param("series_uid", change.series_instance_uid),
                _param("sop_uid", change.sop_instance_uid),
                _param("change_at", change.at),
            ).select_from(new_instance),
        )
        .cte("appended")
    )
    stored_id = select(new_instance.c.id).scalar_subquery().label("stored_id")
    return select(*found.c, stored_id).add_cte(counted_series, counted_study, appended)


_LOOKUP_AND_STORE: Final = _store_in_one_statement()


def _json(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _time(value: str) -> str:
    """TM as matched: ACR-NEMA `HH:MM:SS` loses its colons (PS3.5 §6.2, earlier formats)."""
    return value.replace(":", "")


def _date(value: str) -> str:
    """DA as matched: ACR-NEMA `YYYY.MM.DD` loses its dots (PS3.5 §6.2, earlier formats)."""
    return value.replace(".", "")


def study_row_values(parsed: ParsedInstance) -> dict[str, Any]:
    """The study row's columns as an instance's header gives them."""
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


def instance_row_values(item: NewInstance, now: datetime) -> dict[str, Any]:
    """The instance row's columns for a new or replacing instance."""
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


def _conflict(what: str, uid: str, stored_in: str, parsed: ParsedInstance) -> ConflictingInstance:
    return ConflictingInstance(
        f"{what} {uid} is already stored in {stored_in}, but this instance belongs to study "
        f"{parsed.study.study_instance_uid} series {parsed.series.series_instance_uid}: "
        "give the instance new UIDs, or delete the stored one first"
    )


@dataclass(slots=True)
class _LockedStudy:
    """A study row this transaction holds the lock of, with its attributes as stored now."""

    id: int
    attributes: dict[str, Any]
    added_series: int = 0
    added_instances: int = 0
    touched: bool = False  # an instance was stored or replaced: counts and updated_at to write


class _Writer:
    """The adds of one write transaction; `flush` before the commit."""

    def __init__(self, connection: Connection, *, savepoints: bool) -> None:
        self._connection = connection
        self._inserts = _INSERTS[connection.dialect.name]
        # PostgreSQL: the common add is one statement (`_LOOKUP_AND_STORE`), as a round trip costs
        # more than the statement. SQLite, in-process: plain statements, counts and changes at flush.
        self._one_statement = connection.dialect.name == "postgresql"
        # In a batch a refused instance must leave no trace: the rows written before it could be
        # refused (a new study or series, changed attributes) go in a savepoint, opened only then.
        self._savepoints = savepoints
        self._savepoint: NestedTransaction | None = None
        self._studies: dict[str, _LockedStudy] = {}  # locked by this transaction, by Study Instance UID
        self._added_to_series: dict[int, int] = {}  # series id -> instances stored
        self._changes: list[dict[str, Any]] = []

    def add(self, item: NewInstance) -> AddOutcome:
        """Index one instance.

        Raises:
            ConflictingInstance: its SOP Instance UID or Series Instance UID is stored elsewhere;
                with savepoints, whatever it wrote is undone.
        """
        self._savepoint = None
        try:
            outcome = self._add(item)
        except ArchiveError:
            if self._savepoint is not None:
                self._savepoint.rollback()
            raise
        if self._savepoint is not None:
            self._savepoint.commit()
        return outcome

    def _begin_undoable(self) -> None:
        if self._savepoints and self._savepoint is None:
            self._savepoint = self._connection.begin_nested()

    def _add(self, item: NewInstance) -> AddOutcome:
        connection = self._connection
        parsed = item.parsed
        now = datetime.now(UTC)
        study_uid = parsed.study.study_instance_uid
        series_uid = parsed.series.series_instance_uid
        sop_uid = parsed.instance.sop_instance_uid
        study_values = study_row_values(parsed)
        study = self._studies.get(study_uid) or self._lock_study(study_uid, study_values, now)
        series_values = _series_values(parsed)
        instance_values = instance_row_values(item, now)
        lookup = {
            "series_uid": series_uid,
            "sop_uid": sop_uid,
            "study_pk": study.id,
            "sop_class_uid": parsed.instance.sop_class_uid,
        }
        store: dict[str, Any] = {}
        if self._one_statement:
            store = {f"new_{name}": value for name, value in instance_values.items()}
            store.update({f"new_series_{name}": value for name, value in series_values.items()})
            store.update(
                new_sop_instance_uid=sop_uid,
                new_study_id=study.id,
                study_updated_at=now,
                change_study_uid=study_uid,
                change_at=now,
            )
            unchanged = {"study_unchanged": study.attributes == study_values, "added_series": 0}
            found = connection.execute(_LOOKUP_AND_STORE, {**lookup, **store, **unchanged}).one()
            if found.stored_id is not None:
                self._studies[study_uid] = study
                return AddOutcome("stored")
        else:
            found = connection.execute(_LOOKUP, lookup).one()
        replaces = found.instance_id is not None
        if replaces:
            if found.instance_study_id != study.id or found.instance_series_id != found.series_id:
                place = connection.execute(_INSTANCE_PLACE, {"row_id": found.instance_id}).one()
                where = f"study {place.study_instance_uid} series {place.series_instance_uid}"
                raise _conflict("SOP Instance UID", sop_uid, where, parsed)
            if found.instance_sha256 == item.sha256:
                self._studies[study_uid] = study
                return AddOutcome("already_present")
        new_series = found.series_id is None
        if not new_series and found.series_study_id != study.id:
            stored_in = connection.execute(_STUDY_UID, {"row_id": found.series_study_id}).scalar_one()
            raise _conflict("Series Instance UID", series_uid, f"study {stored_in}", parsed)
        stored_series = (
            None
            if new_series
            else dict(zip(_SERIES_ATTRIBUTES, (found._mapping[label] for label in _SERIES_LABELS), strict=True))
        )
        series_changed = stored_series is not None and stored_series != series_values
        study_changed = study.attributes != study_values
        if not replaces and (new_series or series_changed or study_changed or found.listed_sop_class is None):
            # These writes come before the instance's row, which another study's writer may still
            # take (its SOP Instance UID): until then they must be undoable.
            self._begin_undoable()
        if new_series:
            series_id = self._insert_series(parsed, study.id, series_values, now)
            modality = {"study_id": study.id, "modality": series_values["modality"]}
            connection.execute(self._inserts.study_modality, modality)
        else:
            series_id = found.series_id
            if series_changed:
                connection.execute(_UPDATE_SERIES, {"row_id": series_id, **series_values})
                if stored_series is not None and stored_series["modality"] != series_values["modality"]:
                    refresh_modalities(connection, study.id)
        if study_changed:
            connection.execute(UPDATE_STUDY, {"row_id": study.id, **study_values})
        if replaces:
            connection.execute(UPDATE_INSTANCE, {"row_id": found.instance_id, **instance_values})
            if found.instance_sop_class_uid != parsed.instance.sop_class_uid:
                # The replaced instance may have been the study's last of its SOP class.
                _refresh_sop_classes(connection, study.id)
        else:
            if found.listed_sop_class is None:
                connection.execute(
                    self._inserts.study_sop_class, {"study_id": study.id, "sop_class_uid": lookup["sop_class_uid"]}
                )
            if self._one_statement:  # the common case now: stored, counted and recorded
                store.update(study_unchanged=True, added_series=int(new_series))
                stored_id = connection.execute(_LOOKUP_AND_STORE, {**lookup, **store}).one().stored_id
            else:
                row = {"sop_instance_uid": sop_uid, "series_id": series_id, "study_id": study.id, **instance_values}
                stored_id = connection.execute(self._inserts.instance, row).scalar()
            if stored_id is None:  # another study's writer stored the same SOP Instance UID meanwhile
                raise _conflict("SOP Instance UID", sop_uid, "another study", parsed)
        # Stored or replaced: remember what this transaction wrote.
        study.attributes = study_values
        self._studies[study_uid] = study
        if replaces or not self._one_statement:
            study.touched = True
            study.added_series += int(new_series)
            if not replaces:
                study.added_instances += 1
                self._added_to_series[series_id] = self._added_to_series.get(series_id, 0) + 1
            self._changes.append(
                {
                    "kind": "stored",
                    "study_instance_uid": study_uid,
                    "series_instance_uid": series_uid,
                    "sop_instance_uid": sop_uid,
                    "at": now,
                }
            )
            if self._one_statement:  # keeps the change feed in the order of the adds
                self.flush()
        if replaces:
            return AddOutcome("replaced", found.instance_blob_key)
        return AddOutcome("stored")

    def _lock_study(self, uid: str, values: dict[str, Any], now: datetime) -> _LockedStudy:
        """Lock the study row, creating it if missing."""
        while True:
            row = self._connection.execute(LOCK_STUDY, {"study_uid": uid}).first()
            if row is not None:
                return _LockedStudy(row.id, dict(zip(_STUDY_ATTRIBUTES, row[1:], strict=True)))
            self._begin_undoable()
            created = self._connection.execute(
                self._inserts.study,
                {"study_instance_uid": uid, **values, "created_at": now, "updated_at": now},
            ).scalar()
            if created is not None:
                return _LockedStudy(created, values)
            # Another writer created it meanwhile (PostgreSQL): lock the row it committed.

    def _insert_series(self, parsed: ParsedInstance, study_id: int, values: dict[str, Any], now: datetime) -> int:
        uid = parsed.series.series_instance_uid
        series_id: int | None = self._connection.execute(
            self._inserts.series,
            {"series_instance_uid": uid, "study_id": study_id, "created_at": now, **values},
        ).scalar()
        if series_id is None:  # another study's writer created it meanwhile
            raise _conflict("Series Instance UID", uid, "another study", parsed)
        return series_id

    def flush(self) -> None:
        """Write the counts, updated_at and change records of the adds not written yet."""
        connection = self._connection
        if self._added_to_series:
            connection.execute(
                _COUNT_SERIES,
                [{"row_id": series_id, "added_instances": added} for series_id, added in self._added_to_series.items()],
            )
        touched = [study for study in self._studies.values() if study.touched]
        if touched:
            now = datetime.now(UTC)
            connection.execute(
                _COUNT_STUDY,
                [
                    {
                        "row_id": study.id,
                        "added_series": study.added_series,
                        "added_instances": study.added_instances,
                        "updated_at": now,
                    }
                    for study in touched
                ],
            )
        if self._changes:
            connection.execute(APPEND_CHANGES, self._changes)
        self._added_to_series = {}
        self._changes = []
        for study in touched:
            study.added_series = study.added_instances = 0
            study.touched = False


def add_instance(connection: Connection, item: NewInstance) -> AddOutcome:
    """Index one instance inside the caller's write transaction.

    Raises:
        ConflictingInstance: its SOP Instance UID or Series Instance UID is stored elsewhere.
    """
    writer = _Writer(connection, savepoints=False)
    outcome = writer.add(item)
    writer.flush()
    forget_blobs(connection, [item.blob_key])  # its bytes are referenced now: no longer pending
    return outcome


def add_instances(connection: Connection, items: Sequence[NewInstance]) -> list[AddOutcome | ArchiveError]:
    """Index several instances inside the caller's write transaction; a refused one leaves no trace.

    Returns:
        Per item, in order, its outcome or the ArchiveError that refused it.
    """
    outcomes: dict[int, AddOutcome | ArchiveError] = {}
    writer = _Writer(connection, savepoints=True)
    # Study rows are locked in one order (by UID) so that two batches never deadlock.
    for position in sorted(range(len(items)), key=lambda i: items[i].parsed.study.study_instance_uid):
        try:
            outcomes[position] = writer.add(items[position])
        except ArchiveError as exc:
            outcomes[position] = exc
    writer.flush()
    # Referenced now, or refused (the caller deletes those bytes): no blob of the batch is pending.
    forget_blobs(connection, [item.blob_key for item in items])
    return [outcomes[position] for position in range(len(items))]


# Recounting and rebuilding the sets after a delete. Built once, bound to the study's id (study_pk).
_CLEAR_MODALITIES: Final = delete(study_modality_table).where(study_modality_table.c.study_id == bindparam("study_pk"))
_FILL_MODALITIES: Final = insert(study_modality_table).from_select(
    ["study_id", "modality"],
    select(series_table.c.study_id, series_table.c.modality)
    .where(series_table.c.study_id == bindparam("study_pk"))
    .distinct(),
)
_CLEAR_SOP_CLASSES: Final = delete(study_sop_class_table).where(
    study_sop_class_table.c.study_id == bindparam("study_pk")
)
_FILL_SOP_CLASSES: Final = insert(study_sop_class_table).from_select(
    ["study_id", "sop_class_uid"],
    select(instance_table.c.study_id, instance_table.c.sop_class_uid)
    .where(instance_table.c.study_id == bindparam("study_pk"))
    .distinct(),
)
_RECOUNT_SERIES: Final = (
    update(series_table)
    .where(series_table.c.study_id == bindparam("study_pk"))
    .values(num_instances=select(func.count()).where(instance_table.c.series_id == series_table.c.id).scalar_subquery())
)
_DROP_EMPTY_SERIES: Final = delete(series_table).where(
    series_table.c.study_id == bindparam("study_pk"), series_table.c.num_instances == 0
)
_RECOUNT_STUDY: Final = (
    update(study_table)
    .where(study_table.c.id == bindparam("study_pk"))
    .values(
        num_series=select(func.count()).where(series_table.c.study_id == bindparam("study_pk")).scalar_subquery(),
        num_instances=select(func.count()).where(instance_table.c.study_id == bindparam("study_pk")).scalar_subquery(),
        updated_at=bindparam("now", type_=study_table.c.updated_at.type),
    )
    .returning(study_table.c.num_series)
)
_DELETE_STUDY: Final = delete(study_table).where(study_table.c.id == bindparam("study_pk"))


def _doomed(*, series: bool, sop: bool) -> list[ColumnElement[bool]]:
    """Which instances of the study (study_pk) a delete of a series (series_uid) or instance (sop_uid) takes."""
    conditions = [instance_table.c.study_id == bindparam("study_pk")]
    if series:
        in_series = select(series_table.c.id).where(
            series_table.c.study_id == bindparam("study_pk"),
            series_table.c.series_instance_uid == bindparam("series_uid"),
        )
        conditions.append(instance_table.c.series_id.in_(in_series))
    if sop:
        conditions.append(instance_table.c.sop_instance_uid == bindparam("sop_uid"))
    return conditions


@dataclass(frozen=True, slots=True)
class _Delete:
    """The two statements of a delete, for one shape (study, series, instance)."""

    # In SQL, not a row at a time from Python: a study's thousands of rows cost milliseconds.
    record: Insert
    # DELETE ... RETURNING: the rows are read once, not once to list them and again to delete them.
    delete: ReturningDelete[*tuple[Any, ...]]


def _delete_statements(*, series: bool, sop: bool) -> _Delete:
    doomed = _doomed(series=series, sop=sop)
    return _Delete(
        record=insert(change_table)
        .from_select(
            ["kind", "study_instance_uid", "series_instance_uid", "sop_instance_uid", "at"],
            select(
                literal_column("'deleted'"),
                bindparam("study_uid", type_=change_table.c.study_instance_uid.type),
                series_table.c.series_instance_uid,
                instance_table.c.sop_instance_uid,
                bindparam("now", type_=change_table.c.at.type),
            )
            .select_from(instance_table.join(series_table, instance_table.c.series_id == series_table.c.id))
            .where(*doomed),
        )
        .execution_options(preserve_rowcount=True),  # SQLAlchemy keeps an INSERT's rowcount only if asked
        delete=delete(instance_table).where(*doomed).returning(instance_table.c.blob_key),
    )


# By (series named, instance named).
_DELETES: Final = {
    (series, sop): _delete_statements(series=series, sop=sop) for series in (False, True) for sop in (False, True)
}


def refresh_modalities(connection: Connection, study_id: int) -> None:
    """Rebuild ModalitiesInStudy from the study's series."""
    connection.execute(_CLEAR_MODALITIES, {"study_pk": study_id})
    connection.execute(_FILL_MODALITIES, {"study_pk": study_id})


def _refresh_sop_classes(connection: Connection, study_id: int) -> None:
    """Rebuild SOPClassesInStudy from the study's instances."""
    connection.execute(_CLEAR_SOP_CLASSES, {"study_pk": study_id})
    connection.execute(_FILL_SOP_CLASSES, {"study_pk": study_id})


def delete_instances(connection: Connection, study_uid: str, series_uid: str | None, sop_uid: str | None) -> list[str]:
    """Delete a study, a series or an instance inside the caller's write transaction.

    Returns:
        The blob keys of the deleted instances, for the caller to delete after the commit.

    Raises:
        NotFound: nothing is stored under these UIDs.
    """
    study_id = connection.execute(LOCK_STUDY, {"study_uid": study_uid}).scalar()
    if study_id is None:
        msg = f"study {study_uid} is not in the archive"
        raise NotFound(msg)
    now = datetime.now(UTC)
    statements = _DELETES[series_uid is not None, sop_uid is not None]
    parameters = {"study_pk": study_id, "study_uid": study_uid, "series_uid": series_uid, "sop_uid": sop_uid}
    if connection.execute(statements.record, {**parameters, "now": now}).rowcount == 0:  # nothing written
        what = f"instance {sop_uid} of " if sop_uid is not None else ""
        what += f"series {series_uid} of " if series_uid is not None else ""
        msg = f"{what}study {study_uid} is not in the archive"
        raise NotFound(msg)
    blob_keys = list(connection.execute(statements.delete, parameters).scalars())
    if series_uid is None and sop_uid is None:
        # Its series and sets go with it (ON DELETE CASCADE).
        connection.execute(_DELETE_STUDY, {"study_pk": study_id})
    else:
        recount_study(connection, study_id, now)
    return blob_keys


def recount_study(connection: Connection, study_id: int, now: datetime) -> None:
    """Recompute a study's counts and sets after a delete; drop what became empty.

    Recounted rather than decremented: counting a study's index entries costs little and would
    repair a count gone wrong.
    """
    connection.execute(_RECOUNT_SERIES, {"study_pk": study_id})
    series_dropped = connection.execute(_DROP_EMPTY_SERIES, {"study_pk": study_id}).rowcount > 0
    num_series = connection.execute(_RECOUNT_STUDY, {"study_pk": study_id, "now": now}).scalar_one()
    if num_series == 0:
        connection.execute(_DELETE_STUDY, {"study_pk": study_id})
        return
    if series_dropped:
        refresh_modalities(connection, study_id)
    _refresh_sop_classes(connection, study_id)
