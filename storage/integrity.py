"""The integrity check (`webpacs verify`): every blob re-read and compared with what ingest recorded.

Each instance row holds its blob's key, size and SHA-256, computed once while the bytes were
received. The check streams every blob back, in instance id order, and reports the rows whose
bytes are missing or differ (size or digest), then the blobs no row references. Repair copies a
good copy back from a backup store (`webpacs backup`), checked against the same digest, and
removes unreferenced blobs; a row whose bytes cannot be recovered is reported, never dropped.

Resumable: after each page the last instance id checked and the problems still open are stored in
`verify_cursor`, so an interrupted check carries on where it stopped (`resume=True`).
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import islice
from typing import TYPE_CHECKING, Any, Final, Literal

from sqlalchemy import BigInteger, Column, Integer, bindparam, delete, func, select
from sqlmodel import Field, SQLModel

from storage.copy_archive import CopyMismatch, IndexedBlob, blob_present, copy_blob
from storage.dicom.ingest_compression import ORIGINALS_PREFIX
from storage.errors import BlobNotFound
from storage.index.database import write_transaction
from storage.index.models import UtcDateTime, instance_table, series_table, study_table

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from sqlalchemy import Row
    from sqlalchemy.engine import Engine

    from storage.archive import Archive
    from storage.blobs.base import BlobStore

__all__ = ["BlobProblem", "VerifyCursor", "VerifyReport", "verify_archive"]

_PAGE: Final = 500
_CURSOR_ID: Final = 1
_INSTANCES: Final = (
    select(
        instance_table.c.id,
        study_table.c.study_instance_uid,
        series_table.c.series_instance_uid,
        instance_table.c.sop_instance_uid,
        instance_table.c.blob_key,
        instance_table.c.size,
        instance_table.c.sha256,
    )
    .join(series_table, instance_table.c.series_id == series_table.c.id)
    .join(study_table, instance_table.c.study_id == study_table.c.id)
    .where(instance_table.c.id > bindparam("after"))
    .order_by(instance_table.c.id)
    .limit(bindparam("limit"))
)


class VerifyCursor(SQLModel, table=True):
    """Where an interrupted integrity check stopped, and the problems it left open (one row)."""

    __tablename__ = "verify_cursor"

    id: int = Field(sa_column=Column("id", Integer(), primary_key=True, autoincrement=False))
    last_instance_id: int = Field(sa_column=Column("last_instance_id", BigInteger(), nullable=False))
    checked: int = Field(default=0, sa_column=Column("checked", Integer(), nullable=False))
    missing: int = Field(default=0, sa_column=Column("missing", Integer(), nullable=False))
    corrupt: int = Field(default=0, sa_column=Column("corrupt", Integer(), nullable=False))
    started_at: datetime = Field(sa_column=Column("started_at", UtcDateTime(), nullable=False))
    updated_at: datetime = Field(sa_column=Column("updated_at", UtcDateTime(), nullable=False))


_cursor_table: Final = SQLModel.metadata.tables["verify_cursor"]


@dataclass(frozen=True)
class BlobProblem:
    """An instance whose stored bytes are not what ingest recorded."""

    kind: Literal["missing", "corrupt"]
    study_uid: str
    series_uid: str
    sop_uid: str
    blob_key: str
    detail: str
    repaired: bool = False


@dataclass
class VerifyReport:
    """What a check found (and repaired); `resumed_*` count the open problems of the run it resumed."""

    checked: int = 0
    bytes_read: int = 0
    problems: list[BlobProblem] = field(default_factory=list)
    resumed_checked: int = 0
    resumed_missing: int = 0
    resumed_corrupt: int = 0
    unreferenced: list[str] = field(default_factory=list)
    unreferenced_removed: int = 0

    @property
    def open_problems(self) -> int:
        """Problems still there: unrepaired rows (this run and the resumed one), unreferenced blobs left."""
        unrepaired = sum(not problem.repaired for problem in self.problems)
        left = len(self.unreferenced) - self.unreferenced_removed
        return unrepaired + self.resumed_missing + self.resumed_corrupt + max(left, 0)


def verify_archive(
    engine: Engine,
    archive: Archive,
    *,
    resume: bool = False,
    repair: bool = False,
    backup: BlobStore | None = None,
    grace_seconds: float = 86_400,
    on_start: Callable[[int, int], None] | None = None,
    on_instance: Callable[[int], None] | None = None,
    page_size: int = _PAGE,
    workers: int = 8,
) -> VerifyReport:
    """Check every instance's bytes against its recorded size and SHA-256, then look for unreferenced blobs.

    Args:
        engine: the index database (the archive's).
        archive: the archive whose blobs are checked.
        resume: carry on after the instance where an interrupted check stopped (else start over).
        repair: copy missing or corrupt blobs back from `backup` when it holds a good copy, and
            remove unreferenced blobs (as `Archive.sweep_orphans`: journaled ones, another host's
            stores in flight, only once older than `grace_seconds`).
        backup: the blob store of a backup (`webpacs backup`), where repair finds good copies.
        grace_seconds: see `repair`.
        on_start: called once with (instances to check, their bytes), e.g. to size a progress bar.
        on_instance: called with each instance's recorded size once it is checked.
        page_size: instances read per query; progress is recorded after each page.
        workers: blobs read at once.

    Raises:
        BlobError, IndexUnavailable: a store or the database failed (run again with resume).
    """
    report = VerifyReport()
    after = _start(engine, report, resume=resume)
    with engine.connect() as connection:
        count, total = connection.execute(
            select(func.count(), func.coalesce(func.sum(instance_table.c.size), 0)).where(instance_table.c.id > after)
        ).one()
    if on_start is not None:
        on_start(count, int(total))
    # Blobs are read several at once: a read waits on the disk or, on S3, on a round trip.
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="verify") as pool:
        while page := _page(engine, after, page_size):
            checks = pool.map(lambda row: _check(archive.blobs, row.blob_key, row.size, row.sha256), page)
            for row, problem in zip(page, checks, strict=True):
                _record(report, row, problem, archive.blobs, backup if repair else None)
                if on_instance is not None:
                    on_instance(row.size)
            after = page[-1].id
            _save(engine, after, report)
    report.unreferenced = list(_unreferenced(archive))
    if repair:
        report.unreferenced_removed = _remove_unreferenced(archive, report.unreferenced, grace_seconds)
    with write_transaction(engine) as connection:
        connection.execute(delete(_cursor_table))  # complete: the next check starts over
    return report


def _page(engine: Engine, after: int, size: int) -> list[Row[*tuple[Any, ...]]]:
    with engine.connect() as connection:
        return list(connection.execute(_INSTANCES, {"after": after, "limit": size}).all())


def _record(
    report: VerifyReport,
    row: Row[*tuple[Any, ...]],
    problem: tuple[Literal["missing", "corrupt"], str] | None,
    blobs: BlobStore,
    backup: BlobStore | None,
) -> None:
    """Count a checked instance; a problem is repaired from `backup` when given and it holds a good copy."""
    report.checked += 1
    report.bytes_read += row.size
    if problem is None:
        return
    kind, detail = problem
    repaired = backup is not None and _restore(backup, blobs, IndexedBlob(row.blob_key, row.size, row.sha256), kind)
    report.problems.append(
        BlobProblem(
            kind,
            row.study_instance_uid,
            row.series_instance_uid,
            row.sop_instance_uid,
            row.blob_key,
            detail,
            repaired,
        )
    )


def _start(engine: Engine, report: VerifyReport, *, resume: bool) -> int:
    """The instance id to check after; a fresh start forgets an interrupted run's cursor."""
    with write_transaction(engine) as connection:
        row = connection.execute(select(_cursor_table).where(_cursor_table.c.id == _CURSOR_ID)).first()
        if resume and row is not None:
            report.resumed_checked = row.checked
            report.resumed_missing, report.resumed_corrupt = row.missing, row.corrupt
            return int(row.last_instance_id)
        connection.execute(delete(_cursor_table))
        now = datetime.now(UTC)
        connection.execute(
            _cursor_table.insert(),
            {"id": _CURSOR_ID, "last_instance_id": 0, "started_at": now, "updated_at": now},
        )
    return 0


def _save(engine: Engine, after: int, report: VerifyReport) -> None:
    """Record progress: the last id checked and the problems still open, for a resumed run to report."""
    open_rows = [problem for problem in report.problems if not problem.repaired]
    with write_transaction(engine) as connection:
        connection.execute(
            _cursor_table.update()
            .where(_cursor_table.c.id == _CURSOR_ID)
            .values(
                last_instance_id=after,
                checked=report.resumed_checked + report.checked,
                missing=report.resumed_missing + sum(problem.kind == "missing" for problem in open_rows),
                corrupt=report.resumed_corrupt + sum(problem.kind == "corrupt" for problem in open_rows),
                updated_at=datetime.now(UTC),
            )
        )


def _check(blobs: BlobStore, key: str, size: int, sha256: str) -> tuple[Literal["missing", "corrupt"], str] | None:
    """Stream the blob back; None when its size and SHA-256 are the recorded ones."""
    digest = hashlib.sha256()
    read = 0
    try:
        for chunk in blobs.open_range(key):
            digest.update(chunk)
            read += len(chunk)
    except BlobNotFound:
        return "missing", f"no blob under key {key}"
    if read != size:
        return "corrupt", f"{read} bytes, {size} recorded at ingest"
    if digest.hexdigest() != sha256:
        return "corrupt", "SHA-256 differs from the one recorded at ingest"
    return None


def _restore(backup: BlobStore, blobs: BlobStore, blob: IndexedBlob, kind: str) -> bool:
    """Copy the blob back from `backup` when it holds a good copy (same size and SHA-256); whether it did."""
    try:
        if not blob_present(backup, blob, verify=True):
            return False
    except CopyMismatch:
        return False  # the backup's copy is damaged too
    if kind == "corrupt":
        blobs.delete(blob.key)  # blobs are write-once: the bad bytes go before the good ones come back
    copy_blob(backup, blobs, blob)
    return True


def _unreferenced(archive: Archive) -> Iterator[str]:
    """Blobs no instance row references and no store in flight journaled (kept originals by their instance)."""
    keys = archive.blobs.keys("")
    journal = archive.index.journal
    while page := list(islice(keys, _PAGE)):
        owners = {key: key.removeprefix(ORIGINALS_PREFIX) for key in page}
        referenced = journal.referenced(sorted(set(owners.values())))
        journaled = journal.entries(sorted(set(owners.values())))
        yield from (key for key, owner in owners.items() if owner not in referenced and owner not in journaled)


def _remove_unreferenced(archive: Archive, keys: list[str], grace_seconds: float) -> int:
    """Remove the unreferenced blobs found (and journaled ones whose store died); return how many of `keys` went."""
    for key in keys:
        archive.blobs.delete(key)
    # Journal rows of stores that died longer ago than the grace period, and their blobs.
    archive.sweep_orphans(grace_seconds=grace_seconds, recent_days=None)
    return len(keys)
