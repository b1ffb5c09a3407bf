"""The index: what is stored where, and the QIDO-RS searches over it (SQLite or PostgreSQL).

Blocking API: callers on the event loop run it in a worker thread. Get an engine with
`database.open_engine(url)` after `database.migrate(url)`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import bindparam, func, select

from storage.dicom.records import Frame
from storage.errors import ArchiveError, NotFound
from storage.index.database import check, write_transaction
from storage.index.edits import not_recycled
from storage.index.journal import BlobJournal
from storage.index.models import instance_table, series_table, study_table
from storage.index.search import SearchResult, search, study_visible
from storage.index.writes import AddOutcome, NewInstance, add_instance, add_instances, delete_instances

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from sqlalchemy import ColumnElement, Row, Select
    from sqlalchemy.engine import Engine

    from storage.dicom.records import ParsedInstance
    from storage.index.query import Query

__all__ = [
    "AddOutcome",
    "Index",
    "IndexCounts",
    "NewInstance",
    "SearchResult",
    "StoredInstance",
]

_KEY_PAGE: Final = 10_000


@dataclass(frozen=True, slots=True)
class StoredInstance:
    """Where an instance's bytes are and what serving them needs."""

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    blob_key: str
    size: int
    sha256: str
    number_of_frames: int
    frames: tuple[Frame, ...] | None  # None: offsets unknown, decode the instance to serve frames
    rows: int | None
    columns: int | None
    bits_allocated: int | None


@dataclass(frozen=True, slots=True)
class IndexCounts:
    """Totals for the status page."""

    studies: int
    series: int
    instances: int
    bytes: int


_JOINED = instance_table.join(series_table, instance_table.c.series_id == series_table.c.id).join(
    study_table, instance_table.c.study_id == study_table.c.id
)
# The hierarchy order's keys lead every row of `_hierarchy_select` (see `_hierarchy_order`).
_ORDER_KEYS: Final = 4
_FRAMES: Final = _ORDER_KEYS + 9  # position of instance.frames in a stored-instance row
_STORED_INSTANCE_COLUMNS: Final = (
    study_table.c.study_instance_uid,
    series_table.c.series_instance_uid,
    instance_table.c.sop_instance_uid,
    instance_table.c.sop_class_uid,
    instance_table.c.transfer_syntax_uid,
    instance_table.c.blob_key,
    instance_table.c.size,
    instance_table.c.sha256,
    instance_table.c.number_of_frames,
    instance_table.c.frames,
    instance_table.c.rows,
    instance_table.c.columns,
    instance_table.c.bits_allocated,
)


def _hierarchy_select(columns: Sequence[Any], *, series: bool, sop: bool) -> Select[*tuple[Any, ...]]:
    """The rows of a study, series (`series`) or instance (`sop`) with the order keys first.

    Built once per shape: each call then only binds the UIDs (study_uid, series_uid, sop_uid).
    """
    conditions: list[ColumnElement[bool]] = [
        study_table.c.study_instance_uid == bindparam("study_uid"),
        not_recycled(study_table.c.id),  # a study in the recycle bin is not served
    ]
    if series:
        conditions.append(series_table.c.series_instance_uid == bindparam("series_uid"))
    if sop:
        conditions.append(instance_table.c.sop_instance_uid == bindparam("sop_uid"))
    return (
        select(
            series_table.c.series_number,
            series_table.c.id,
            instance_table.c.instance_number,
            instance_table.c.id,
            *columns,
        )
        .select_from(_JOINED)
        .where(*conditions)
    )


def _hierarchy_selects(columns: Sequence[Any]) -> dict[tuple[bool, bool], Select[*tuple[Any, ...]]]:
    return {
        (series, sop): _hierarchy_select(columns, series=series, sop=sop)
        for series in (False, True)
        for sop in (False, True)
    }


_SELECT_STORED_INSTANCES: Final = _hierarchy_selects(_STORED_INSTANCE_COLUMNS)
_SELECT_METADATA: Final = _hierarchy_selects((instance_table.c.metadata,))


def _hierarchy_order(row: Row[*tuple[Any, ...]]) -> tuple[bool, int, int, bool, int, int]:
    """Series by SeriesNumber then arrival, instances by InstanceNumber then arrival; no number last.

    Sorted in Python: the database would have to carry every row's metadata through its sorter.
    Rows are read by position: a Row's attribute access costs ten times more, per row.
    """
    series_number, series_pk, instance_number, instance_pk = row[0], row[1], row[2], row[3]
    return (
        series_number is None,
        series_number or 0,
        series_pk,
        instance_number is None,
        instance_number or 0,
        instance_pk,
    )


class Index:
    """The archive's index on one database engine; every method is one short transaction."""

    def __init__(self, engine: Engine) -> None:
        """Use `engine` (from `storage.index.database.open_engine`, schema migrated)."""
        self._engine = engine
        self.journal = BlobJournal(engine)  # blobs being written (storage/index/journal.py)

    def check(self) -> None:
        """Readiness probe: the database answers and its schema is at the newest migration.

        Raises:
            IndexUnavailable: the database is unreachable or not migrated.
        """
        check(self._engine)

    def add_instance(self, parsed: ParsedInstance, *, blob_key: str, size: int, sha256: str) -> AddOutcome:
        """Index an instance whose bytes are durable under `blob_key`, in one transaction.

        Same SOP Instance UID and sha256 as a stored instance: nothing changes (already_present).
        Same UID, other bytes, same study and series: the row moves to the new blob (replaced;
        delete `old_blob_key` after this returns).

        Raises:
            ConflictingInstance: the SOP Instance UID or Series Instance UID is stored under
                another study or series.
        """
        with write_transaction(self._engine) as connection:
            return add_instance(connection, NewInstance(parsed, blob_key, size, sha256))

    def add_instances(self, items: Sequence[NewInstance]) -> list[AddOutcome | ArchiveError]:
        """Index several instances in one transaction (group commit), as adding them one at a time would.

        Items are taken in Study Instance UID order (so two batches never deadlock); a refused item
        leaves no trace (what it wrote before it was refused sits in a savepoint, rolled back).

        Returns:
            Per item, in order, its outcome or the ArchiveError that refused it; a refused item
            does not undo the others.
        """
        with write_transaction(self._engine) as connection:
            return add_instances(connection, items)

    def search(self, query: Query, *, max_results: int) -> SearchResult:
        """Run a QIDO-RS search; at most `max_results` rows (`truncated` says when it cut).

        Raises:
            ValueError: `query.extra_study_filters` names a keyword that is not a study-level key.
        """
        with self._engine.connect() as connection:
            return search(connection, query, max_results=max_results)

    def study_visible(self, study_uid: str, policy: tuple[tuple[str, tuple[str, ...]], ...]) -> bool:
        """Whether the study exists and passes an access policy ((study-level keyword, values) pairs).

        Raises:
            ValueError: `policy` names a keyword that is not a study-level key.
        """
        with self._engine.connect() as connection:
            return study_visible(connection, study_uid, policy)

    def stored_instances(
        self, study_uid: str, series_uid: str | None = None, sop_uid: str | None = None
    ) -> list[StoredInstance]:
        """The instances of a study, series or single instance, in series then instance order.

        Raises:
            NotFound: nothing is stored under these UIDs.
        """
        rows = self._select(_SELECT_STORED_INSTANCES, study_uid, series_uid, sop_uid)
        frame_lists = _frame_lists([row[_FRAMES] for row in rows])
        return [
            StoredInstance(
                study_instance_uid=study,
                series_instance_uid=series,
                sop_instance_uid=sop,
                sop_class_uid=sop_class,
                transfer_syntax_uid=transfer_syntax,
                blob_key=blob_key,
                size=size,
                sha256=sha256,
                number_of_frames=number_of_frames,
                frames=None if frames is None else next(frame_lists),
                rows=rows_,
                columns=columns,
                bits_allocated=bits_allocated,
            )
            for (
                study,
                series,
                sop,
                sop_class,
                transfer_syntax,
                blob_key,
                size,
                sha256,
                number_of_frames,
                frames,
                rows_,
                columns,
                bits_allocated,
            ) in (row[_ORDER_KEYS:] for row in rows)
        ]

    def metadata(self, study_uid: str, series_uid: str | None = None, sop_uid: str | None = None) -> list[bytes]:
        """Each instance's stored DICOM JSON (UTF-8 bytes, BulkDataURIs under BULK_BASE), in order.

        Raises:
            NotFound: nothing is stored under these UIDs.
        """
        rows = self._select(_SELECT_METADATA, study_uid, series_uid, sop_uid)
        return [bytes(row[_ORDER_KEYS]) for row in rows]

    def _select(
        self,
        statements: dict[tuple[bool, bool], Select[*tuple[Any, ...]]],
        study_uid: str,
        series_uid: str | None,
        sop_uid: str | None,
    ) -> list[Row[*tuple[Any, ...]]]:
        statement = statements[series_uid is not None, sop_uid is not None]
        with self._engine.connect() as connection:
            rows = connection.execute(
                statement, {"study_uid": study_uid, "series_uid": series_uid, "sop_uid": sop_uid}
            ).all()
        if not rows:
            what = f"instance {sop_uid} of " if sop_uid is not None else ""
            what += f"series {series_uid} of " if series_uid is not None else ""
            msg = f"{what}study {study_uid} is not in the archive"
            raise NotFound(msg)
        return sorted(rows, key=_hierarchy_order)

    def delete(self, study_uid: str, series_uid: str | None = None, sop_uid: str | None = None) -> list[str]:
        """Remove a study, series or instance from the index, in one transaction.

        Counts and sets are recomputed; a series or study left empty goes too.

        Returns:
            The blob keys the caller deletes once this returned.

        Raises:
            NotFound: nothing is stored under these UIDs.
        """
        with write_transaction(self._engine) as connection:
            return delete_instances(connection, study_uid, series_uid, sop_uid)

    def is_referenced(self, blob_key: str) -> bool:
        """Whether an instance row points at `blob_key` (the orphan sweep keeps such blobs)."""
        with self._engine.connect() as connection:
            found = connection.execute(
                select(instance_table.c.id).where(instance_table.c.blob_key == blob_key).limit(1)
            ).first()
        return found is not None

    def referenced_keys(self) -> Iterator[str]:
        """Every blob key the index points at, in pages of short transactions."""
        after = 0
        while True:
            with self._engine.connect() as connection:
                page = connection.execute(
                    select(instance_table.c.id, instance_table.c.blob_key)
                    .where(instance_table.c.id > after)
                    .order_by(instance_table.c.id)
                    .limit(_KEY_PAGE)
                ).all()
            yield from (row.blob_key for row in page)
            if len(page) < _KEY_PAGE:
                return
            after = page[-1].id

    def counts(self) -> IndexCounts:
        """Number of studies, series, instances and stored bytes."""
        with self._engine.connect() as connection:
            studies = connection.execute(select(func.count()).select_from(study_table)).scalar_one()
            series = connection.execute(select(func.count()).select_from(series_table)).scalar_one()
            instances, size = connection.execute(
                select(func.count(), func.coalesce(func.sum(instance_table.c.size), 0))
            ).one()
        return IndexCounts(studies, series, instances, int(size))


def _frame_lists(texts: list[str | None]) -> Iterator[tuple[Frame, ...]]:
    """The frames of each stored `frames` JSON text that is not None, in order.

    One json.loads over all of them: for a study of thousands of single-frame instances, a call
    per text costs more than the parsing.
    """
    decoded: list[list[list[list[int]]]] = json.loads(f"[{','.join(text for text in texts if text is not None)}]")
    for frames in decoded:
        yield tuple([Frame(tuple([(offset, length) for offset, length in fragments])) for fragments in frames])
