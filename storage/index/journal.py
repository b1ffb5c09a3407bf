"""The pending-blob journal: which blobs are being written, by which host, since when.

A store writes its journal row (committed) before it puts the blob, and the index transaction that
references the blob removes the row (`writes.forget_blobs`). So a blob that is neither referenced
nor journaled is an orphan for certain, whichever host wrote it, and the sweep may remove it at
once; a journaled one is in flight unless its host restarted since or its row is older than any
store takes. This replaces guessing from a blob's age, which is unsafe when hosts share a store.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final

from sqlalchemy import bindparam, delete, insert, or_, select

from storage.index.database import write_transaction
from storage.index.models import blob_journal_table, instance_table

if TYPE_CHECKING:
    from collections.abc import Collection, Sequence

    from sqlalchemy.engine import Connection, Engine

__all__ = ["BlobJournal", "JournalEntry", "forget_blobs"]

_JOURNALED: Final = select(
    blob_journal_table.c.blob_key, blob_journal_table.c.host, blob_journal_table.c.created_at
).where(blob_journal_table.c.blob_key.in_(bindparam("keys", expanding=True)))
_REFERENCED: Final = (
    select(instance_table.c.blob_key).where(instance_table.c.blob_key.in_(bindparam("keys", expanding=True))).distinct()
)
# Built once: a store runs it for every instance, and a prebuilt statement keeps its cache key.
_BEGIN: Final = insert(blob_journal_table)
_FORGET: Final = delete(blob_journal_table).where(blob_journal_table.c.blob_key.in_(bindparam("keys", expanding=True)))


def forget_blobs(connection: Connection, blob_keys: Collection[str]) -> None:
    """Remove the journal rows of `blob_keys` inside the caller's transaction (the index write's)."""
    if blob_keys:
        connection.execute(_FORGET, {"keys": list(blob_keys)})


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """A blob being written."""

    host: str
    created_at: datetime


class BlobJournal:
    """The journal on one database engine; each method is one short transaction."""

    def __init__(self, engine: Engine) -> None:
        """Use `engine` (schema migrated)."""
        self._engine = engine

    def begin(self, blob_key: str, host: str) -> None:
        """Record, durably, that `host` is about to put `blob_key` (call before the put)."""
        with write_transaction(self._engine) as connection:
            connection.execute(_BEGIN, {"blob_key": blob_key, "host": host, "created_at": datetime.now(UTC)})

    def forget(self, blob_keys: Collection[str]) -> None:
        """Remove the rows of `blob_keys` (the blobs were indexed, or deleted again)."""
        if blob_keys:
            with write_transaction(self._engine) as connection:
                forget_blobs(connection, blob_keys)

    def entries(self, blob_keys: Sequence[str]) -> dict[str, JournalEntry]:
        """The journal rows of those of `blob_keys` that have one."""
        with self._engine.connect() as connection:
            rows = connection.execute(_JOURNALED, {"keys": list(blob_keys)}).all()
        return {row.blob_key: JournalEntry(row.host, row.created_at) for row in rows}

    def referenced(self, blob_keys: Sequence[str]) -> set[str]:
        """Those of `blob_keys` an instance row points at."""
        with self._engine.connect() as connection:
            return set(connection.execute(_REFERENCED, {"keys": list(blob_keys)}).scalars())

    def stale(self, *, older_than: datetime, host: str | None) -> list[str]:
        """Keys of rows older than `older_than`, or of any age when written by `host` (its previous run)."""
        table = blob_journal_table
        condition = table.c.created_at < older_than
        if host is not None:
            condition = or_(condition, table.c.host == host)
        with self._engine.connect() as connection:
            return list(connection.execute(select(table.c.blob_key).where(condition)).scalars())
