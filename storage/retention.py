"""Retention: delete studies older than a policy allows, except those flagged "keep".

A policy names an age in days, what the age is measured from (the StudyDate, or the time the
archive received the study) and optionally a modality (a study matches when its ModalitiesInStudy
holds it). Policies live in the database (`retention_policy`), so every worker and the CLI apply
the same ones and an admin changes them over the API without a restart. A study flagged "keep"
(`study_keep`, gone with its study) is never deleted by a policy.

A dry run and a real run compute the same plan (`expired_studies`); the real run then deletes each
study through the archive (index first, then bytes), skipping one flagged "keep" since the plan.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Final, Literal, get_args

from sqlalchemy import Boolean, Column, ForeignKey, Integer, String, Text, UniqueConstraint, exists, select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, SQLModel

from storage.errors import ArchiveError, NotFound
from storage.index.database import write_transaction
from storage.index.edits import not_recycled
from storage.index.models import UtcDateTime, id_type, study_modality_table, study_table

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from storage.archive import Archive

__all__ = [
    "MAX_AGE_DAYS",
    "AgeBasis",
    "DuplicatePolicy",
    "ExpiredStudy",
    "InvalidPolicy",
    "PolicyFields",
    "RetentionPolicy",
    "RetentionPolicyRow",
    "RetentionReport",
    "StudyKeep",
    "apply_retention",
    "create_policy",
    "delete_policy",
    "expired_studies",
    "is_kept",
    "list_policies",
    "set_keep",
]

AgeBasis = Literal["study_date", "received"]
_AGE_BASES: Final = get_args(AgeBasis)
MAX_AGE_DAYS: Final = 36_500  # a century: beyond any legal retention period
_MODALITY: Final = re.compile(r"[A-Z0-9]{1,16}")  # CS, PS3.5 §6.2


class RetentionPolicyRow(SQLModel, table=True):
    """Delete studies older than `max_age_days` (by StudyDate or reception), of one modality or any."""

    __tablename__ = "retention_policy"
    __table_args__: ClassVar[Any] = (UniqueConstraint("name", name="uq_retention_policy_name"),)

    id: int | None = Field(default=None, sa_column=Column("id", Integer(), primary_key=True, autoincrement=True))
    name: str = Field(sa_column=Column("name", String(200), nullable=False))
    modality: str = Field(default="", sa_column=Column("modality", String(16), nullable=False, server_default=""))
    max_age_days: int = Field(sa_column=Column("max_age_days", Integer(), nullable=False))
    age_basis: str = Field(sa_column=Column("age_basis", String(16), nullable=False))
    enabled: bool = Field(default=True, sa_column=Column("enabled", Boolean(), nullable=False))
    created_at: datetime = Field(sa_column=Column("created_at", UtcDateTime(), nullable=False))


class StudyKeep(SQLModel, table=True):
    """A study no retention policy may delete."""

    __tablename__ = "study_keep"

    study_id: int = Field(
        sa_column=Column(
            "study_id",
            id_type(),
            ForeignKey("study.id", ondelete="CASCADE", name="fk_study_keep_study_id"),
            primary_key=True,
        )
    )
    set_by: str = Field(default="", sa_column=Column("set_by", String(200), nullable=False))
    reason: str = Field(default="", sa_column=Column("reason", Text(), nullable=False))
    set_at: datetime = Field(sa_column=Column("set_at", UtcDateTime(), nullable=False))


_policy_table: Final = SQLModel.metadata.tables["retention_policy"]
_keep_table: Final = SQLModel.metadata.tables["study_keep"]


class InvalidPolicy(ArchiveError):
    """A retention policy's fields are out of range or malformed."""


class DuplicatePolicy(ArchiveError):
    """A retention policy of that name exists already."""


@dataclass(frozen=True)
class PolicyFields:
    """What an admin gives to create a policy."""

    name: str
    max_age_days: int
    age_basis: AgeBasis = "study_date"
    modality: str = ""  # empty: every study
    enabled: bool = True

    def validated(self) -> PolicyFields:
        """These fields, the modality upper-cased.

        Raises:
            InvalidPolicy: naming the bad field and what is allowed.
        """
        if not 1 <= len(self.name) <= 200:
            raise InvalidPolicy(f"policy name {self.name!r}: use 1 to 200 characters")
        if not 1 <= self.max_age_days <= MAX_AGE_DAYS:
            raise InvalidPolicy(f"max_age_days={self.max_age_days}: use 1 to {MAX_AGE_DAYS} (10 years = 3653)")
        if self.age_basis not in _AGE_BASES:
            raise InvalidPolicy(f"age_basis={self.age_basis!r}: use one of {', '.join(_AGE_BASES)}")
        modality = self.modality.upper()
        if modality and not _MODALITY.fullmatch(modality):
            raise InvalidPolicy(f"modality={self.modality!r} is not a DICOM modality code such as CT or MR")
        return PolicyFields(self.name, self.max_age_days, self.age_basis, modality, self.enabled)


@dataclass(frozen=True)
class RetentionPolicy:
    """A stored retention policy."""

    id: int
    name: str
    max_age_days: int
    age_basis: str
    modality: str
    enabled: bool
    created_at: datetime


@dataclass(frozen=True)
class ExpiredStudy:
    """A study a policy deletes, and why."""

    study_uid: str
    policy: str
    study_date: str
    received_at: datetime


@dataclass
class RetentionReport:
    """A run's plan (dry run) or what it deleted."""

    dry_run: bool
    as_of: datetime
    studies: list[ExpiredStudy] = field(default_factory=list)
    deleted_instances: int = 0
    skipped: list[str] = field(default_factory=list)  # flagged "keep" or deleted by someone else meanwhile


def list_policies(engine: Engine) -> list[RetentionPolicy]:
    """Every policy, oldest first."""
    with engine.connect() as connection:
        rows = connection.execute(select(_policy_table).order_by(_policy_table.c.id)).all()
    return [
        RetentionPolicy(row.id, row.name, row.max_age_days, row.age_basis, row.modality, row.enabled, row.created_at)
        for row in rows
    ]


def create_policy(engine: Engine, fields: PolicyFields) -> RetentionPolicy:
    """Store a new policy; it applies from the next run.

    Raises:
        InvalidPolicy: a field is out of range.
        DuplicatePolicy: the name is taken.
    """
    fields = fields.validated()
    values = {
        "name": fields.name,
        "max_age_days": fields.max_age_days,
        "age_basis": fields.age_basis,
        "modality": fields.modality,
        "enabled": fields.enabled,
        "created_at": datetime.now(UTC),
    }
    try:
        with write_transaction(engine) as connection:
            new_id = connection.execute(_policy_table.insert().returning(_policy_table.c.id), values).scalar_one()
    except IntegrityError as exc:
        raise DuplicatePolicy(f"a retention policy named {fields.name!r} exists: pick another name") from exc
    return RetentionPolicy(id=new_id, **values)  # type: ignore[arg-type]


def delete_policy(engine: Engine, policy_id: int) -> None:
    """Remove a policy.

    Raises:
        NotFound: there is no policy with that id.
    """
    with write_transaction(engine) as connection:
        removed = connection.execute(_policy_table.delete().where(_policy_table.c.id == policy_id)).rowcount
    if not removed:
        raise NotFound(f"there is no retention policy {policy_id}; GET /api/retention-policies lists them")


def set_keep(engine: Engine, study_uid: str, *, keep: bool, by: str = "", reason: str = "") -> None:
    """Flag a study "keep" (no policy deletes it) or clear the flag; both are idempotent.

    Raises:
        NotFound: the study is not in the archive.
    """
    with write_transaction(engine) as connection:
        study_id = connection.execute(
            select(study_table.c.id).where(study_table.c.study_instance_uid == study_uid)
        ).scalar_one_or_none()
        if study_id is None:
            raise NotFound(f"study {study_uid} is not in the archive")
        connection.execute(_keep_table.delete().where(_keep_table.c.study_id == study_id))
        if keep:
            connection.execute(
                _keep_table.insert(),
                {"study_id": study_id, "set_by": by[:200], "reason": reason, "set_at": datetime.now(UTC)},
            )


def is_kept(engine: Engine, study_uid: str) -> bool:
    """Whether the study is flagged "keep".

    Raises:
        NotFound: the study is not in the archive.
    """
    with engine.connect() as connection:
        row = connection.execute(
            select(study_table.c.id, _keep_table.c.study_id)
            .outerjoin(_keep_table, _keep_table.c.study_id == study_table.c.id)
            .where(study_table.c.study_instance_uid == study_uid)
        ).first()
    if row is None:
        raise NotFound(f"study {study_uid} is not in the archive")
    return row.study_id is not None


def expired_studies(engine: Engine, *, as_of: datetime) -> list[ExpiredStudy]:
    """The studies the enabled policies delete at `as_of`, in arrival order (each once, for its first policy)."""
    found: dict[int, ExpiredStudy] = {}
    with engine.connect() as connection:
        for policy in list_policies(engine):
            if not policy.enabled:
                continue
            for row in connection.execute(_expired(policy, as_of)):
                found.setdefault(
                    row.id, ExpiredStudy(row.study_instance_uid, policy.name, row.study_date, row.created_at)
                )
    return [found[study_id] for study_id in sorted(found)]


def _expired(policy: RetentionPolicy, as_of: datetime) -> Any:
    study = study_table
    cutoff = as_of - timedelta(days=policy.max_age_days)
    # Studies in the recycle bin are left to its own purge (their restore window stays intact).
    statement = select(study.c.id, study.c.study_instance_uid, study.c.study_date, study.c.created_at).where(
        ~exists().where(_keep_table.c.study_id == study.c.id), not_recycled(study.c.id)
    )
    if policy.modality:
        statement = statement.where(
            exists().where(
                study_modality_table.c.study_id == study.c.id, study_modality_table.c.modality == policy.modality
            )
        )
    if policy.age_basis == "received":
        return statement.where(study.c.created_at < cutoff)
    # DA values (YYYYMMDD, PS3.5 §6.2) order as strings; a study without a StudyDate has no age by it.
    return statement.where(study.c.study_date != "", study.c.study_date < cutoff.strftime("%Y%m%d"))


def apply_retention(
    engine: Engine, archive: Archive, *, dry_run: bool, as_of: datetime | None = None
) -> RetentionReport:
    """Plan, and unless `dry_run` delete, the studies the policies no longer keep.

    Args:
        engine: the index database (the archive's).
        archive: deletes go through it (index first, then bytes).
        dry_run: only list what a real run at `as_of` deletes.
        as_of: the moment ages are measured at (default now).

    Raises:
        IndexUnavailable, BlobError: the database or the store failed (run again: it carries on).
    """
    as_of = as_of or datetime.now(UTC)
    report = RetentionReport(dry_run=dry_run, as_of=as_of)
    for study in expired_studies(engine, as_of=as_of):
        if dry_run:
            report.studies.append(study)
            continue
        try:
            if is_kept(engine, study.study_uid):  # flagged since the plan was made
                report.skipped.append(study.study_uid)
                continue
            report.deleted_instances += archive.delete(study.study_uid)
        except NotFound:
            report.skipped.append(study.study_uid)  # deleted meanwhile, by someone else
            continue
        report.studies.append(study)
    return report
