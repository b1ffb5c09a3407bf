"""The change feed: what happened to the archive, in an order a reader can resume from.

Writers append `change` rows in their index transaction (storage/index/writes.py). Their `seq`
comes from a sequence when the row is inserted, but transactions commit in another order: a
reader that saw seq 7 could later find a seq 6 committed after it. So rows are numbered for
readers (`feed_seq`) only once committed, by one publisher at a time, holding the `feed_state`
row's lock (PostgreSQL: SELECT ... FOR UPDATE; SQLite: BEGIN IMMEDIATE): every number handed out
is larger than any a reader has seen. The publisher runs before each read, in whichever worker
serves it, so no background process is needed.

The publisher also announces studies that went quiet: a study whose `updated_at` (set by every
store or delete) falls in (stable_until, now - stable_after] gets one "stable" row, and
stable_until moves to now - stable_after in the same transaction. The windows never overlap and
only one publisher moves them, so each quiet period is announced exactly once, however many
workers read the feed. A study's writes must commit within `stable_after` of their updated_at
(transactions take milliseconds; hosts' clocks must agree to well within it).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Final, Literal

from sqlalchemy import bindparam, func, insert, select, update

from storage.index.database import write_transaction
from storage.index.models import change_table, feed_state_table, study_table

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

__all__ = ["MAX_PAGE", "ChangeFeed", "ChangeRecord"]

MAX_PAGE: Final = 1000
# Rows numbered per publisher transaction: keeps the feed lock short after a burst of stores.
_PUBLISH_BATCH: Final = 10_000
_STATE_ID: Final = 1

_change = change_table.c
_LOCK_STATE: Final = select(feed_state_table.c.stable_until).where(feed_state_table.c.id == _STATE_ID).with_for_update()
_MOVE_STABLE_UNTIL: Final = (
    update(feed_state_table).where(feed_state_table.c.id == _STATE_ID).values(stable_until=bindparam("until"))
)
_QUIET_STUDIES: Final = (
    select(study_table.c.study_instance_uid)
    .where(study_table.c.updated_at > bindparam("since"), study_table.c.updated_at <= bindparam("until"))
    .order_by(study_table.c.updated_at, study_table.c.id)
)
_LAST_NUMBER: Final = select(func.coalesce(func.max(_change.feed_seq), 0))
_UNPUBLISHED: Final = select(_change.seq).where(_change.feed_seq.is_(None)).order_by(_change.seq).limit(_PUBLISH_BATCH)
# Parameters not named like columns: SQLAlchemy would add them to the SET clause.
_NUMBER: Final = update(change_table).where(_change.seq == bindparam("row_seq")).values(feed_seq=bindparam("number"))
_READ: Final = (
    select(
        _change.feed_seq,
        _change.kind,
        _change.study_instance_uid,
        _change.series_instance_uid,
        _change.sop_instance_uid,
        _change.at,
    )
    .where(_change.feed_seq > bindparam("since"))
    .order_by(_change.feed_seq)
    .limit(bindparam("limit"))
)


@dataclass(frozen=True, slots=True)
class ChangeRecord:
    """One entry of the feed.

    Attributes:
        seq: its position; read on with `since=seq`.
        kind: stored (new or replaced instance), deleted (instance), stable (no instance arrived
            in the study for the configured time; series and instance UIDs are "").
        at: when it happened (for stable: when the feed noticed the quiet).
    """

    seq: int
    kind: Literal["stored", "deleted", "stable"]
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    at: datetime


class ChangeFeed:
    """The feed on one database engine."""

    def __init__(self, engine: Engine, *, stable_after: timedelta) -> None:
        """Read and publish on `engine`; a study is stable after `stable_after` without a change."""
        self._engine = engine
        self._stable_after = stable_after

    def read(self, since: int = 0, limit: int = 100) -> list[ChangeRecord]:
        """Publish what committed meanwhile, then return up to `limit` entries after position `since`.

        Raises:
            ValueError: `since` is negative or `limit` is not in 1..MAX_PAGE.
        """
        if since < 0 or not 1 <= limit <= MAX_PAGE:
            msg = f"since={since}, limit={limit}: since must be 0 or more, limit 1 to {MAX_PAGE}"
            raise ValueError(msg)
        while self.publish() == _PUBLISH_BATCH:
            pass  # a backlog: number all of it, a batch per transaction
        with self._engine.connect() as connection:
            rows = connection.execute(_READ, {"since": since, "limit": limit}).all()
        return [ChangeRecord(*row) for row in rows]

    def publish(self) -> int:
        """Announce studies that went quiet and number committed entries; return how many were numbered."""
        now = datetime.now(UTC)
        with write_transaction(self._engine) as connection:
            stable_until = connection.execute(_LOCK_STATE).scalar_one()
            self._announce_quiet_studies(connection, stable_until, now)
            last = connection.execute(_LAST_NUMBER).scalar_one()
            rows = connection.execute(_UNPUBLISHED).scalars().all()
            if rows:
                connection.execute(
                    _NUMBER, [{"row_seq": seq, "number": last + offset} for offset, seq in enumerate(rows, start=1)]
                )
        return len(rows)

    def _announce_quiet_studies(self, connection: Connection, stable_until: datetime | None, now: datetime) -> None:
        until = now - self._stable_after
        if stable_until is not None and until <= stable_until:
            return
        if stable_until is not None:  # None: a new feed, which announces from now on
            quiet = connection.execute(_QUIET_STUDIES, {"since": stable_until, "until": until}).scalars().all()
            if quiet:
                connection.execute(
                    insert(change_table),
                    [
                        {
                            "kind": "stable",
                            "study_instance_uid": uid,
                            "series_instance_uid": "",
                            "sop_instance_uid": "",
                            "at": now,
                        }
                        for uid in quiet
                    ],
                )
        connection.execute(_MOVE_STABLE_UNTIL, {"until": until})
