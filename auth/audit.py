"""The audit log: who did what to which study, when and from where; append-only, queryable, exportable.

Requests must not wait on an audit insert (a QIDO is a few milliseconds), so events are queued and
one background thread writes them in batches: it collects what arrives for `_LINGER` after the first
event, so a client sending one request after another costs one transaction per batch, not one per
request (a transaction costs more than a request's own work). Searches and exports flush first,
so they see every event. A process killed outright loses at most the events of its last moments.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from queue import Empty, SimpleQueue
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from auth.models import AuditEvent, aware

if TYPE_CHECKING:
    from collections.abc import Iterator

    from sqlalchemy import Engine

__all__ = ["Action", "AuditLog", "AuditQuery", "AuditRecord", "Outcome"]

log = logging.getLogger(__name__)

_MAX_BATCH: Final = 500
_LINGER: Final = 0.2  # seconds
_EXPORT_PAGE: Final = 1000
_table = AuditEvent.__table__  # type: ignore[attr-defined]
# Built once: every audited request runs it, and a prebuilt statement keeps its cache key.
_INSERT: Final = _table.insert()


class Action(StrEnum):
    """What was done."""

    SEARCH = "search"
    VIEW = "view"  # metadata, frames, rendered images, bulk data
    DOWNLOAD = "download"  # whole instances, series or studies
    STORE = "store"
    DELETE = "delete"
    SHARE = "share"  # a link created
    SHARE_REVOKE = "share-revoke"
    SHARE_USE = "share-use"  # a link redeemed (or refused)
    LOGIN = "login"
    LOGOUT = "logout"
    ADMINISTER = "administer"  # users, tokens, DICOM nodes
    SEND = "send"  # a study (or some of its instances) sent to another node by a forwarding job


class Outcome(StrEnum):
    """How it ended."""

    SUCCESS = "success"
    FAILURE = "failure"  # bad credentials, bad request, server error
    DENIED = "denied"  # authenticated but not allowed, or a study the principal may not see


@dataclass(frozen=True)
class AuditRecord:
    """One audited event."""

    actor_kind: str
    actor: str
    action: Action
    outcome: Outcome
    study_uid: str | None = None
    source: str = ""
    detail: str = ""
    at: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass(frozen=True)
class AuditQuery:
    """Filters of an audit search; None means any."""

    actor: str | None = None
    action: Action | None = None
    study_uid: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 100
    offset: int = 0


class AuditLog:
    """Record events in the background; search and export them."""

    def __init__(self, engine: Engine) -> None:
        """Write to `engine`'s `audit_event` table; the writer thread starts with the first event."""
        self._engine = engine
        self._waiting: SimpleQueue[AuditRecord | threading.Event] = SimpleQueue()
        self._start = threading.Lock()
        self._thread: threading.Thread | None = None

    def record(self, event: AuditRecord) -> None:
        """Queue an event; it is written within moments."""
        self._waiting.put(event)
        self._ensure_thread()

    def flush(self) -> None:
        """Return once every event queued before this call is written."""
        written = threading.Event()
        self._waiting.put(written)
        self._ensure_thread()
        written.wait(timeout=30)

    def pending(self) -> int:
        """How many events wait to be written (a gauge for /metrics)."""
        return self._waiting.qsize()

    def search(self, query: AuditQuery) -> list[dict[str, Any]]:
        """The matching events, newest first."""
        self.flush()
        statement = _filtered(query).order_by(_table.c.id.desc()).limit(query.limit).offset(query.offset)
        with self._engine.connect() as connection:
            return [_public(row) for row in connection.execute(statement)]

    def export(self, query: AuditQuery) -> Iterator[bytes]:
        """The matching events, oldest first, as JSON lines, read page by page (any size)."""
        self.flush()
        last_id = 0
        while True:
            statement = _filtered(query).where(_table.c.id > last_id).order_by(_table.c.id).limit(_EXPORT_PAGE)
            with self._engine.connect() as connection:
                rows = connection.execute(statement).all()
            if not rows:
                return
            for row in rows:
                yield json.dumps(_public(row), default=str).encode() + b"\n"
            last_id = rows[-1].id

    def _ensure_thread(self) -> None:
        with self._start:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            batch = [self._waiting.get()]
            deadline = time.monotonic() + _LINGER
            # A flush request ends the wait: whoever asked is waiting for the write.
            while len(batch) < _MAX_BATCH and not isinstance(batch[-1], threading.Event):
                try:
                    batch.append(self._waiting.get(timeout=max(0.0, deadline - time.monotonic())))
                except Empty:
                    break
            events = [item for item in batch if isinstance(item, AuditRecord)]
            if events:
                self._write(events)
            for item in batch:
                if isinstance(item, threading.Event):
                    item.set()

    def _write(self, events: list[AuditRecord]) -> None:
        try:
            with self._engine.begin() as connection:
                # The fields are plain values, so the instance dict serves (asdict deep-copies each).
                connection.execute(_INSERT, [vars(event) for event in events])
        except SQLAlchemyError:
            # The database is down: say so loudly, with what was lost, rather than stop auditing.
            log.exception("could not write %d audit events (%s)", len(events), events[0].action)


def _filtered(query: AuditQuery) -> Any:
    statement = select(_table)
    if query.actor is not None:
        statement = statement.where(_table.c.actor == query.actor)
    if query.action is not None:
        statement = statement.where(_table.c.action == query.action.value)
    if query.study_uid is not None:
        statement = statement.where(_table.c.study_uid == query.study_uid)
    if query.since is not None:
        statement = statement.where(_table.c.at >= query.since)
    if query.until is not None:
        statement = statement.where(_table.c.at < query.until)
    return statement


def _public(row: Any) -> dict[str, Any]:
    values = dict(row._mapping)
    values["at"] = aware(values["at"]).isoformat()
    return values
