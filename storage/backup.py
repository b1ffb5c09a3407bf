"""Backup and restore (`webpacs backup`, `webpacs restore`): the blobs and a consistent index snapshot.

A backup lives in a folder or an S3 prefix:

    <target>/blobs/<key>                  every instance's bytes, under the archive's own keys
    <target>/snapshots/<UTC time>.sqlite3 the whole index at one moment, one file per backup

The snapshot is one portable format for both databases: an SQLite database at the schema revision
of the code that wrote it (its `alembic_version` says which). From SQLite it is `VACUUM INTO` (a
consistent copy taken while the server runs); from PostgreSQL every table is read in one
REPEATABLE READ transaction (one snapshot of the whole database) into a migrated SQLite file. It
is chosen over pg_dump because it restores into either database and needs no client tools of a
matching version, and restore upgrades an older snapshot with the ordinary migrations.

A backup takes the snapshot first, then copies the blobs its instance rows name and the target
lacks (each checked against its SHA-256 while copied), and stores the snapshot last: a snapshot in
the target always has all its bytes there. Incremental: blobs are write-once under unique keys, so
one already in the target with the right size is that blob.

Restore copies a snapshot and its blobs into an empty installation with the same machinery as
`migrate-storage` (storage/copy_archive.py): every blob checked against the snapshot's SHA-256,
rows table by table in foreign-key order with their ids.
"""

from __future__ import annotations

import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Final

from sqlalchemy import MetaData, func, insert, select, text

from storage.blobs import open_blob_store
from storage.copy_archive import CopyReport, IndexedBlob, blob_present, copy_archive, copy_blob, indexed_blobs
from storage.errors import ArchiveError, BlobNotFound
from storage.index.database import check, migrate, open_engine, write_transaction
from storage.index.models import instance_table, study_table

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlalchemy.engine import Engine

    from storage.blobs import S3Options
    from storage.blobs.base import BlobStore

__all__ = [
    "BackupError",
    "BackupReport",
    "BackupTarget",
    "backup_archive",
    "restore_archive",
]

_PAGE: Final = 2000
_SNAPSHOT_SUFFIX: Final = ".sqlite3"
_NOT_EXPORTED: Final = frozenset({"alembic_version"})  # the snapshot's own migrations record it


class BackupError(ArchiveError):
    """A backup or restore cannot be done as asked; the message says why and what to do."""


@dataclass(frozen=True)
class BackupReport:
    """What a backup did."""

    snapshot: str  # the snapshot's key under <target>/snapshots
    instances: int
    studies: int
    blobs_copied: int
    blobs_present: int
    bytes_copied: int


class BackupTarget:
    """The two stores of a backup location: its blobs and its index snapshots."""

    def __init__(self, url: str, *, s3: S3Options | None = None) -> None:
        """Open the backup at `url` (a folder path, file:///path or s3://bucket/prefix).

        Raises:
            BlobError: the URL is malformed or the folder cannot be created.
        """
        base = url.rstrip("/")
        self.url = url
        self.blobs: BlobStore = open_blob_store(f"{base}/blobs", s3=s3)
        self.snapshots: BlobStore = open_blob_store(f"{base}/snapshots", s3=s3)

    def snapshot_keys(self) -> list[str]:
        """The snapshots held, oldest first (their keys are UTC times)."""
        return sorted(key for key in self.snapshots.keys("") if key.endswith(_SNAPSHOT_SUFFIX))


def backup_archive(
    engine: Engine,
    blobs: BlobStore,
    target: BackupTarget,
    *,
    verify: bool = False,
    workers: int = 8,
    on_start: Callable[[int, int], None] | None = None,
    on_blob: Callable[[int], None] | None = None,
) -> BackupReport:
    """Back the archive up to `target`: a snapshot of the index, then the blobs it names that `target` lacks.

    Args:
        engine: the archive's index (SQLite or PostgreSQL, migrated to this code's revision).
        blobs: the archive's blob store.
        target: where the backup goes.
        verify: also read back blobs already in the target and compare their SHA-256.
        workers: blobs copied at once.
        on_start: called once with (instances in the snapshot, their bytes).
        on_blob: called with each blob's size once it is in the target (from worker threads).

    Raises:
        BackupError: a blob named by the snapshot was deleted meanwhile (run the backup again).
        CopyMismatch: a source blob does not match its SHA-256, or a target blob differs.
        BlobError, IndexUnavailable: a store or the database failed.
    """
    check(engine)  # the snapshot must be at this code's revision, as restore expects
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    with tempfile.TemporaryDirectory(dir=target.snapshots.staging_dir(), prefix="snapshot-") as scratch:
        snapshot = Path(scratch) / f"{stamp}{_SNAPSHOT_SUFFIX}"
        _take_snapshot(engine, snapshot)
        snapshot_engine = open_engine(_sqlite_url(snapshot), pool_size=1, max_overflow=0)
        try:
            count, total = _totals(snapshot_engine)
            with snapshot_engine.connect() as connection:
                studies = connection.execute(select(func.count()).select_from(study_table)).scalar_one()
            if on_start is not None:
                on_start(count, total)
            copied, present, copied_bytes = _copy_blobs(
                snapshot_engine, blobs, target.blobs, verify=verify, workers=workers, on_blob=on_blob
            )
        finally:
            snapshot_engine.dispose()
        key = snapshot.name
        target.snapshots.put_file(key, snapshot)  # last: a stored snapshot has all its blobs
    return BackupReport(key, count, studies, copied, present, copied_bytes)


def restore_archive(
    target: BackupTarget,
    database_url: str,
    blobs: BlobStore,
    *,
    snapshot: str | None = None,
    verify: bool = False,
    workers: int = 8,
    on_start: Callable[[int, int], None] | None = None,
    on_blob: Callable[[int], None] | None = None,
) -> CopyReport:
    """Restore a backup's snapshot (the newest by default) and its blobs into an empty installation.

    Args:
        target: the backup.
        database_url: the index to restore into: migrated here, and refused unless empty.
        blobs: the blob store to restore into.
        snapshot: a snapshot key (see `BackupTarget.snapshot_keys`); default the newest.
        verify: also read back blobs already in `blobs` and compare their SHA-256.
        workers: blobs copied at once.
        on_start: called once with (instances, their bytes).
        on_blob: called with each blob's size once it is restored (from worker threads).

    Raises:
        BackupError: no snapshot, an unknown one, or the installation is not empty.
        CopyMismatch: a backup blob does not match the snapshot's SHA-256 (a damaged backup).
        BlobError, IndexUnavailable: a store or a database failed (run the restore again to resume).
    """
    keys = target.snapshot_keys()
    if not keys:
        raise BackupError(f"there is no snapshot in {target.url}: is it a webpacs backup?")
    chosen = snapshot or keys[-1]
    if chosen not in keys:
        raise BackupError(f"there is no snapshot {chosen!r} in {target.url}; it holds {', '.join(keys)}")
    migrate(database_url)
    engine = open_engine(database_url)
    try:
        seeded = _empty_or_refuse(engine, database_url)
        with tempfile.TemporaryDirectory(prefix="webpacs-restore-") as scratch:
            local = Path(scratch) / chosen
            with local.open("wb") as out:
                for chunk in target.snapshots.open_range(chosen):
                    out.write(chunk)
            try:
                migrate(_sqlite_url(local))  # an older snapshot is upgraded like any database
            except ArchiveError as exc:
                msg = (
                    f"snapshot {chosen} cannot be brought to this version's schema ({exc}): restore it with its version"
                )
                raise BackupError(msg) from exc
            source = open_engine(_sqlite_url(local), pool_size=1, max_overflow=0)
            try:
                if on_start is not None:
                    on_start(*_totals(source))
                copied, present, copied_bytes = _copy_blobs(
                    source, target.blobs, blobs, verify=verify, workers=workers, on_blob=on_blob
                )
                _clear(engine, seeded)  # rows the migrations put there come from the snapshot instead
                # The blobs are all there now (the copy only checks their sizes): the rows follow them.
                report = copy_archive((source, target.blobs), (engine, blobs))
            finally:
                source.dispose()
    finally:
        engine.dispose()
    report.blobs_copied, report.blobs_present, report.bytes_copied = copied, present, copied_bytes
    return report


def _sqlite_url(path: Path) -> str:
    return f"sqlite:///{path.resolve()}"


def _take_snapshot(engine: Engine, path: Path) -> None:
    """Write the whole index, as of one moment, to a new SQLite file at `path`."""
    if engine.dialect.name == "sqlite":
        # VACUUM INTO reads in one transaction (a consistent copy beside running writers) and cannot
        # run inside one of SQLAlchemy's, hence the driver connection (autocommit, see database.py).
        raw = engine.raw_connection()
        try:
            raw.driver_connection.execute("VACUUM INTO ?", (str(path),))  # type: ignore[union-attr]
        finally:
            raw.close()
        return
    migrate(_sqlite_url(path))
    snapshot = open_engine(_sqlite_url(path), pool_size=1, max_overflow=0)
    try:
        _export_rows(engine, snapshot)
    finally:
        snapshot.dispose()


def _export_rows(source: Engine, snapshot: Engine) -> None:
    """Copy every table from PostgreSQL in one REPEATABLE READ transaction, so all tables show one moment."""
    source_tables = MetaData()
    source_tables.reflect(source)
    snapshot_tables = MetaData()
    snapshot_tables.reflect(snapshot)
    with source.connect() as connection:
        reading = connection.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
        with reading.begin():
            reading.execute(text("SET LOCAL TIME ZONE 'UTC'"))  # SQLite keeps no offset: UTC by rule
            for table in snapshot_tables.sorted_tables:
                if table.name in _NOT_EXPORTED:
                    continue
                rows = reading.execution_options(yield_per=_PAGE).execute(select(source_tables.tables[table.name]))
                for page in rows.mappings().partitions(_PAGE):
                    with write_transaction(snapshot) as writing:
                        # OR REPLACE: rows the snapshot's migrations seeded take the archive's values.
                        writing.execute(insert(table).prefix_with("OR REPLACE"), [dict(row) for row in page])


def _totals(engine: Engine) -> tuple[int, int]:
    """Instances in the index and their bytes."""
    with engine.connect() as connection:
        count, total = connection.execute(select(func.count(), func.coalesce(func.sum(instance_table.c.size), 0))).one()
    return int(count), int(total)


def _copy_blobs(
    engine: Engine,
    source: BlobStore,
    target: BlobStore,
    *,
    verify: bool,
    workers: int,
    on_blob: Callable[[int], None] | None,
) -> tuple[int, int, int]:
    """Put every blob `engine`'s index names into `target` unless it is there; (copied, present, bytes copied).

    Each copy is checked against the index's SHA-256 (copy_archive's machinery). Each put waits on
    fsync or an upload, so several run at once to keep the disk or the link busy.

    Raises:
        BackupError: a blob is gone from `source` (deleted since the snapshot).
        CopyMismatch: a blob differs from its SHA-256.
    """

    def ensure(blob: IndexedBlob) -> bool:
        if blob_present(target, blob, verify=verify):
            copied_now = False
        else:
            try:
                copy_blob(source, target, blob)
            except BlobNotFound as exc:
                msg = (
                    f"blob {blob.key!r} was deleted while the backup ran (its instance with it): "
                    "run the backup again, it copies only what is still missing"
                )
                raise BackupError(msg) from exc
            copied_now = True
        if on_blob is not None:
            on_blob(blob.size)
        return copied_now

    copied = present = copied_bytes = 0
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="blob-copy") as pool:
        named = indexed_blobs(engine)
        while page := list(islice(named, _PAGE)):
            for blob, copied_now in zip(page, pool.map(ensure, page), strict=True):
                copied += copied_now
                present += not copied_now
                copied_bytes += blob.size if copied_now else 0
    return copied, present, copied_bytes


def _row_counts(engine: Engine) -> dict[str, int]:
    tables = MetaData()
    tables.reflect(engine)
    with engine.connect() as connection:
        return {
            table.name: connection.execute(select(func.count()).select_from(table)).scalar_one()
            for table in tables.sorted_tables
            if table.name not in _NOT_EXPORTED
        }


def _empty_or_refuse(engine: Engine, database_url: str) -> set[str]:
    """The tables holding only what the migrations seed (they are emptied before the restore).

    Raises:
        BackupError: a table holds more than a fresh installation has (the installation was used).
    """
    with tempfile.TemporaryDirectory(prefix="webpacs-fresh-") as scratch:
        fresh_url = _sqlite_url(Path(scratch) / "fresh.sqlite3")
        migrate(fresh_url)
        fresh = open_engine(fresh_url, pool_size=1, max_overflow=0)
        try:
            seeded = _row_counts(fresh)
        finally:
            fresh.dispose()
    for table, rows in _row_counts(engine).items():
        if rows > seeded.get(table, 0):
            msg = (
                f"the installation at {database_url} is not empty (table {table} has {rows} rows): "
                "restore into a new database and blob store, before any server started on them"
            )
            raise BackupError(msg)
    return {table for table, rows in seeded.items() if rows}


def _clear(engine: Engine, tables: set[str]) -> None:
    reflected = MetaData()
    reflected.reflect(engine, only=sorted(tables))
    with write_transaction(engine) as connection:
        for table in reversed(reflected.sorted_tables):
            connection.execute(table.delete())
