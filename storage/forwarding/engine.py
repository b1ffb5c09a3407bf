"""The rule engine: matches the change feed to the enabled rules and queues a job per match.

The change-feed position it reached is a row. An engine matches the changes after it (reading
stored files if a rule asks for the calling AE), then, in one short write transaction, locks the row
(PostgreSQL: FOR UPDATE SKIP LOCKED; SQLite: BEGIN IMMEDIATE), checks it has not moved, queues the
jobs and moves it. Jobs and position commit together: each change is matched exactly once, however
many workers run the engine, and no lock is held while files are read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final

from sqlalchemy import bindparam, select, update

from storage.forwarding.model import (
    Conditions,
    JobState,
    Subject,
)
from storage.index.database import write_transaction
from storage.index.forwarding import (
    forwarding_cursor_table,
    forwarding_job_table,
    forwarding_rule_table,
)
from storage.index.models import (
    change_table,
    instance_table,
    series_table,
    study_modality_table,
    study_table,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from sqlalchemy.engine import Connection, Engine

    from storage.index.changes import ChangeFeed


__all__ = ["RuleEngine"]

# A rule matching each stored instance adds it to the rule's pending job for the study, up to this
# many instances; then a new job starts (a row stays small, a claim stays quick).
_MAX_INSTANCES_PER_JOB: Final = 5000
_CURSOR_ID: Final = 1
_CURSOR: Final = select(forwarding_cursor_table.c.feed_seq).where(forwarding_cursor_table.c.id == _CURSOR_ID)
_LOCK_CURSOR: Final = _CURSOR.with_for_update(skip_locked=True)
# Parameters not named like columns: SQLAlchemy would add them to the SET clause.
_MOVE_CURSOR: Final = (
    update(forwarding_cursor_table)
    .where(forwarding_cursor_table.c.id == _CURSOR_ID)
    .values(feed_seq=bindparam("position"))
)
_CHANGES: Final = (
    select(
        change_table.c.feed_seq,
        change_table.c.kind,
        change_table.c.study_instance_uid,
        change_table.c.series_instance_uid,
        change_table.c.sop_instance_uid,
        change_table.c.at,
    )
    .where(change_table.c.feed_seq > bindparam("after"))
    .order_by(change_table.c.feed_seq)
    .limit(bindparam("limit"))
)
_STUDY_COLUMNS: Final = (
    study_table.c.referring_physician_name,
    study_table.c.institution_name,
    study_table.c.study_description,
)


@dataclass(frozen=True, slots=True)
class _Change:
    feed_seq: int
    kind: str
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    at: datetime


@dataclass(frozen=True, slots=True)
class _Rule:
    id: int
    name: str
    trigger: str
    conditions: Conditions
    destination: dict[str, str | None]


class RuleEngine:
    """Matches the change feed to the enabled rules and queues a job per match.

    `source_ae(study, series, instance)` returns an instance's Source AE Title; it is called only
    for rules with a `calling_ae` condition (it reads the stored file's meta information).
    """

    def __init__(self, engine: Engine, feed: ChangeFeed, source_ae: Callable[[str, str, str], str]) -> None:
        """Work on `engine`, following `feed`."""
        self._engine = engine
        self._feed = feed
        self._source_ae = source_ae

    def step(self, limit: int = 500) -> int:
        """Match up to `limit` changes after the cursor; return how many were consumed (0: none, or busy).

        The matching (which may read stored files) happens before the write transaction, so the
        lock is held only to check that the cursor has not moved meanwhile and to queue the jobs;
        when it has moved (another worker matched these changes) or is locked, nothing is queued
        and 0 is returned.
        """
        self._feed.publish()  # number what committed since, so the cursor only ever moves forward
        with self._engine.connect() as connection:
            position = connection.execute(_CURSOR).scalar_one()
            changes = [_Change(*row) for row in connection.execute(_CHANGES, {"after": position, "limit": limit})]
            if not changes:
                return 0
            rules = self._rules(connection)
            matches = [(rule, change) for change in changes for rule in self._matching(connection, rules, change)]
        with write_transaction(self._engine) as connection:
            if connection.execute(_LOCK_CURSOR).scalar_one_or_none() != position:
                return 0
            for rule, change in matches:
                if change.kind == "stored":
                    _add_instance(connection, rule, change)
                else:
                    _insert_job(connection, rule, change.study_instance_uid, [])
            connection.execute(_MOVE_CURSOR, {"position": changes[-1].feed_seq})
        return len(changes)

    @staticmethod
    def _rules(connection: Connection) -> list[_Rule]:
        rows = connection.execute(
            select(forwarding_rule_table).where(forwarding_rule_table.c.enabled.is_(True))
        ).mappings()
        return [
            _Rule(
                id=row["id"],
                name=row["name"],
                trigger=row["trigger"],
                conditions=Conditions.from_mapping(json.loads(row["conditions"])),
                destination={
                    key: row[key] for key in ("ae_title", "dicomweb_url", "dicomweb_token", "transfer_syntax")
                },
            )
            for row in rows
        ]

    def _matching(self, connection: Connection, rules: Iterable[_Rule], change: _Change) -> list[_Rule]:
        """The rules `change` matches."""
        candidates = [rule for rule in rules if rule.trigger == change.kind]
        if not candidates:
            return []
        subject = (
            self._instance_subject(connection, change)
            if change.kind == "stored"
            else self._study_subject(connection, change.study_instance_uid)
        )
        if subject is None:
            return []  # deleted since
        return [rule for rule in candidates if rule.conditions.matches(subject, change.at)]

    def _instance_subject(self, connection: Connection, change: _Change) -> Subject | None:
        row = connection.execute(
            select(*_STUDY_COLUMNS, series_table.c.modality, instance_table.c.transfer_syntax_uid)
            .select_from(
                instance_table.join(series_table, series_table.c.id == instance_table.c.series_id).join(
                    study_table, study_table.c.id == instance_table.c.study_id
                )
            )
            .where(instance_table.c.sop_instance_uid == change.sop_instance_uid)
        ).first()
        if row is None:
            return None
        uids = (change.study_instance_uid, change.series_instance_uid, change.sop_instance_uid)
        return Subject(
            modalities=(row.modality,),
            referring_physician=row.referring_physician_name,
            institution=row.institution_name,
            study_description=row.study_description,
            transfer_syntaxes=(row.transfer_syntax_uid,),
            calling_ae=lambda: self._source_ae(*uids),
        )

    def _study_subject(self, connection: Connection, study_uid: str) -> Subject | None:
        study = connection.execute(
            select(study_table.c.id, *_STUDY_COLUMNS).where(study_table.c.study_instance_uid == study_uid)
        ).first()
        if study is None:
            return None
        modalities = connection.execute(
            select(study_modality_table.c.modality).where(study_modality_table.c.study_id == study.id)
        ).scalars()
        syntaxes = connection.execute(
            select(instance_table.c.transfer_syntax_uid).where(instance_table.c.study_id == study.id).distinct()
        ).scalars()
        first = connection.execute(
            select(series_table.c.series_instance_uid, instance_table.c.sop_instance_uid)
            .join(series_table, series_table.c.id == instance_table.c.series_id)
            .where(instance_table.c.study_id == study.id)
            .order_by(instance_table.c.id)
            .limit(1)
        ).first()
        return Subject(
            modalities=tuple(modalities),
            referring_physician=study.referring_physician_name,
            institution=study.institution_name,
            study_description=study.study_description,
            transfer_syntaxes=tuple(syntaxes),
            # A study's calling AE: the one that sent its first instance.
            calling_ae=lambda: self._source_ae(study_uid, *first) if first is not None else "",
        )


def _insert_job(connection: Connection, rule: _Rule, study_uid: str, instance_uids: list[str]) -> None:
    now = _now()
    connection.execute(
        forwarding_job_table.insert().values(
            rule_id=rule.id,
            requested_by=f"rule {rule.name}"[:200],
            study_instance_uid=study_uid,
            series_instance_uid="",
            sop_instance_uids=json.dumps(instance_uids),
            state=JobState.PENDING.value,
            attempts=0,
            last_error="",
            next_attempt_at=now,
            instances_total=0,
            instances_sent=0,
            created_at=now,
            updated_at=now,
            **rule.destination,
        )
    )


def _add_instance(connection: Connection, rule: _Rule, change: _Change) -> None:
    """Add the instance to the rule's pending job for its study, or start a new job."""
    job = forwarding_job_table.c
    pending = connection.execute(
        select(job.id, job.sop_instance_uids)
        .where(
            job.rule_id == rule.id,
            job.study_instance_uid == change.study_instance_uid,
            job.state == JobState.PENDING.value,
            job.sop_instance_uids != "[]",
        )
        .order_by(job.id.desc())
        .limit(1)
    ).first()
    if pending is not None:
        uids: list[str] = json.loads(pending.sop_instance_uids)
        if change.sop_instance_uid in uids:
            return
        if len(uids) < _MAX_INSTANCES_PER_JOB:
            uids.append(change.sop_instance_uid)
            # Still pending? A bridge may have claimed it meanwhile (PostgreSQL re-checks the
            # condition after the claim commits); then the instance starts a new job.
            added = connection.execute(
                update(forwarding_job_table)
                .where(job.id == pending.id, job.state == JobState.PENDING.value)
                .values(sop_instance_uids=json.dumps(uids), updated_at=_now())
            )
            if added.rowcount == 1:
                return
    _insert_job(connection, rule, change.study_instance_uid, [change.sop_instance_uid])


def _now() -> datetime:
    return datetime.now(UTC)
