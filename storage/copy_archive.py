"""Copy a whole archive, blobs and index, to another database and blob store (`webpacs migrate-storage`).

Typically from the embedded default (SQLite + folder) to PostgreSQL + S3. The blobs go first,
each read from the source while its SHA-256 is computed and compared with the index's before it
is put; then the index rows, table by table in foreign-key order, with their ids. So the target
index never points at bytes the target store lacks.

Resumable: a blob already in the target with the right size is complete (a put is atomic and
the store checked its checksum), and rows already copied are skipped (INSERT ... ON CONFLICT DO
NOTHING); running the copy again after an interruption finishes it. The target is an empty
database migrated to the same revision, or one an interrupted copy of the same source left.
"""

from __future__ import annotations

import contextlib
import hashlib
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import Integer, MetaData, Table, bindparam, func, select, text
from sqlalchemy.dialects import postgresql, sqlite

from storage.errors import ArchiveError, BlobExists, BlobNotFound
from storage.index.database import write_transaction
from storage.index.models import instance_table

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from sqlalchemy.engine import Connection, Engine

    from storage.blobs.base import BlobStore

__all__ = ["CopyMismatch", "CopyReport", "IndexedBlob", "blob_present", "copy_archive", "copy_blob", "indexed_blobs"]

_PAGE: Final = 2000
_NOT_COPIED: Final = frozenset({"alembic_version"})  # each database records its own migrations
# INSERT ... ON CONFLICT DO NOTHING in the target's dialect: rows a previous run copied are skipped.
_INSERTS: Final[dict[str, Callable[[Table], Any]]] = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}
_INSTANCES: Final = (
    select(instance_table.c.id, instance_table.c.blob_key, instance_table.c.size, instance_table.c.sha256)
    .where(instance_table.c.id > bindparam("after"))
    .order_by(instance_table.c.id)
    .limit(_PAGE)
)


class CopyMismatch(ArchiveError):
    """Bytes or row counts differ between source and target; the copy is not complete."""


@dataclass
class CopyReport:
    """What a copy did."""

    blobs_copied: int = 0
    blobs_present: int = 0
    bytes_copied: int = 0
    rows: dict[str, int] = field(default_factory=dict)  # per table: rows in the target afterwards


@dataclass(frozen=True)
class IndexedBlob:
    """A blob as the index records it: key, size and the SHA-256 computed at ingest."""

    key: str
    size: int
    sha256: str


def copy_archive(
    source: tuple[Engine, BlobStore],
    target: tuple[Engine, BlobStore],
    *,
    verify: bool = False,
    on_start: Callable[[int, int], None] | None = None,
    on_blob: Callable[[int], None] | None = None,
) -> CopyReport:
    """Copy every blob and every index row from `source` to `target` (both migrated to the same head).

    Args:
        source: the (index engine, blob store) to copy from.
        target: the (index engine, blob store) to copy to.
        verify: read back every target blob already present and compare its SHA-256 too.
        on_start: called once with (number of instances, total bytes), e.g. to size a progress bar.
        on_blob: called with each blob's size once it is in the target.

    Raises:
        CopyMismatch: a source blob does not match its index checksum, a target blob differs, or
            row counts differ after the copy.
        BlobError, IndexUnavailable: a store or a database failed (run the copy again to resume).
    """
    source_engine, source_blobs = source
    target_engine, target_blobs = target
    report = CopyReport()
    with source_engine.connect() as connection:
        count, total = connection.execute(select(func.count(), func.coalesce(func.sum(instance_table.c.size), 0))).one()
    if on_start is not None:
        on_start(count, int(total))
    for blob in indexed_blobs(source_engine):
        if blob_present(target_blobs, blob, verify=verify):
            report.blobs_present += 1
        else:
            copy_blob(source_blobs, target_blobs, blob)
            report.blobs_copied += 1
            report.bytes_copied += blob.size
        if on_blob is not None:
            on_blob(blob.size)
    report.rows = _copy_rows(source_engine, target_engine)
    return report


def indexed_blobs(engine: Engine) -> Iterator[IndexedBlob]:
    """Every instance's blob, page by page in id order (bounded memory at any archive size)."""
    after = 0
    while True:
        with engine.connect() as connection:
            page = connection.execute(_INSTANCES, {"after": after}).all()
        yield from (IndexedBlob(row.blob_key, row.size, row.sha256) for row in page)
        if len(page) < _PAGE:
            return
        after = page[-1].id


def blob_present(target: BlobStore, blob: IndexedBlob, *, verify: bool) -> bool:
    """Whether `target` holds the blob with its size (and, with `verify`, its SHA-256)."""
    try:
        size = target.size(blob.key)
    except BlobNotFound:
        return False
    if size != blob.size:
        msg = f"the target already holds blob {blob.key!r} with {size} bytes, not {blob.size}: remove it and resume"
        raise CopyMismatch(msg)
    if verify:
        digest = hashlib.sha256()
        for chunk in target.open_range(blob.key):
            digest.update(chunk)
        if digest.hexdigest() != blob.sha256:
            msg = f"the target's blob {blob.key!r} does not match its SHA-256 in the index: remove it and resume"
            raise CopyMismatch(msg)
    return True


def copy_blob(source: BlobStore, target: BlobStore, blob: IndexedBlob) -> None:
    """Spool the source blob to the target's staging folder, checking its SHA-256, then put it."""
    digest = hashlib.sha256()
    with tempfile.NamedTemporaryFile(dir=target.staging_dir(), prefix="copy-", delete=False) as spool:
        spooled = Path(spool.name)
        for chunk in source.open_range(blob.key):
            digest.update(chunk)
            spool.write(chunk)
    try:
        if digest.hexdigest() != blob.sha256:
            msg = f"the source's blob {blob.key!r} does not match its SHA-256 in the index (damaged source bytes)"
            raise CopyMismatch(msg)
        # BlobExists: another run of the copy put it meanwhile; its size is checked on the next run.
        with contextlib.suppress(BlobExists):
            target.put_file(blob.key, spooled)
    finally:
        spooled.unlink(missing_ok=True)


def _copy_rows(source: Engine, target: Engine) -> dict[str, int]:
    """Copy every table's rows (ids kept) in foreign-key order; return the target's row counts."""
    source_tables = MetaData()
    source_tables.reflect(source)
    target_tables = MetaData()
    target_tables.reflect(target)
    insert = _INSERTS[target.dialect.name]
    counts: dict[str, int] = {}
    for table in target_tables.sorted_tables:
        if table.name in _NOT_COPIED:
            continue
        origin = source_tables.tables[table.name]
        with source.connect() as reading:
            rows = reading.execution_options(yield_per=_PAGE).execute(select(origin))
            for page in rows.mappings().partitions(_PAGE):
                with write_transaction(target) as writing:
                    _utc(writing)
                    writing.execute(insert(table).on_conflict_do_nothing(), [dict(row) for row in page])
        with write_transaction(target) as writing:
            _advance_sequence(writing, table)
            counts[table.name] = writing.execute(select(func.count()).select_from(table)).scalar_one()
        with source.connect() as reading:
            expected = reading.execute(select(func.count()).select_from(origin)).scalar_one()
        if counts[table.name] < expected:
            msg = f"table {table.name}: {counts[table.name]} rows in the target, {expected} in the source"
            raise CopyMismatch(msg)
    return counts


def _utc(connection: Connection) -> None:
    """SQLite hands timestamps back without an offset (they are UTC by rule): PostgreSQL must read them so."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SET LOCAL TIME ZONE 'UTC'"))


def _advance_sequence(connection: Connection, table: Table) -> None:
    """PostgreSQL: move an id column's sequence past the copied ids, so new rows do not collide."""
    if connection.dialect.name != "postgresql":
        return  # SQLite takes max(rowid) + 1 by itself
    key = list(table.primary_key.columns)
    if len(key) != 1 or not isinstance(key[0].type, Integer):
        return
    connection.execute(
        text(
            f"SELECT setval(pg_get_serial_sequence(:table, :column), max_id) "  # noqa: S608 - names from the catalog
            f'FROM (SELECT max("{key[0].name}") AS max_id FROM "{table.name}") m '
            f"WHERE max_id IS NOT NULL AND pg_get_serial_sequence(:table, :column) IS NOT NULL"
        ),
        {"table": table.name, "column": key[0].name},
    )
