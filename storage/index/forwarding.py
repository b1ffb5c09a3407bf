"""The forwarding tables: rules, the durable job queue, and the rule engine's cursor on the change feed.

Schema only (revision 0005_forwarding creates it); what the rows mean and the operations on them
live in storage/forwarding.py.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar, Final

from sqlalchemy import BigInteger, Boolean, Column, ForeignKey, Index, Integer, String, Text, UniqueConstraint, text
from sqlmodel import Field, SQLModel

from storage.index.models import UtcDateTime, id_type, text_type

__all__ = [
    "MAX_AE_TITLE",
    "MAX_URL",
    "ForwardingCursor",
    "ForwardingJob",
    "ForwardingRule",
    "forwarding_cursor_table",
    "forwarding_job_table",
    "forwarding_rule_table",
]

MAX_AE_TITLE: Final = 16  # PS3.5 §6.2, VR AE
MAX_URL: Final = 2048


def _now() -> datetime:
    return datetime.now(UTC)


def _time(name: str, *, nullable: bool = False) -> Any:
    if nullable:
        return Field(default=None, sa_column=Column(name, UtcDateTime(), nullable=True))
    return Field(default_factory=_now, sa_column=Column(name, UtcDateTime(), nullable=False))


def _optional(name: str, length: int | None = None) -> Any:
    kind = Text() if length is None else String(length)
    return Field(default=None, sa_column=Column(name, kind, nullable=True))


def _count(name: str) -> Any:
    return Field(default=0, sa_column=Column(name, Integer(), nullable=False, server_default=text("0")))


class ForwardingRule(SQLModel, table=True):
    """What to forward (trigger + JSON conditions) and where (an AE title or a STOW-RS URL)."""

    __tablename__ = "forwarding_rule"
    __table_args__ = (UniqueConstraint("name", name="uq_forwarding_rule_name"),)

    id: int | None = Field(default=None, sa_column=Column("id", Integer(), primary_key=True, autoincrement=True))
    name: str = Field(sa_column=Column("name", String(200), nullable=False))
    enabled: bool = Field(
        default=True, sa_column=Column("enabled", Boolean(), nullable=False, server_default=text("true"))
    )
    trigger: str = Field(sa_column=Column("trigger", String(16), nullable=False))
    conditions: str = Field(default="{}", sa_column=Column("conditions", Text(), nullable=False, server_default="{}"))
    ae_title: str | None = _optional("ae_title", MAX_AE_TITLE)
    dicomweb_url: str | None = _optional("dicomweb_url", MAX_URL)
    dicomweb_token: str | None = _optional("dicomweb_token")
    transfer_syntax: str | None = _optional("transfer_syntax", 64)
    created_at: datetime = _time("created_at")
    updated_at: datetime = _time("updated_at")


class ForwardingJob(SQLModel, table=True):
    """One delivery: a study (or some of its instances) to one destination, with its state and history."""

    __tablename__ = "forwarding_job"
    __table_args__: ClassVar[Any] = (
        Index("ix_forwarding_job_due", "state", "next_attempt_at"),
        Index("ix_forwarding_job_study", "study_instance_uid"),
        Index("ix_forwarding_job_rule", "rule_id", "state"),
    )

    id: int | None = Field(default=None, sa_column=Column("id", id_type(), primary_key=True, autoincrement=True))
    rule_id: int | None = Field(
        default=None,
        sa_column=Column(
            "rule_id",
            Integer(),
            ForeignKey("forwarding_rule.id", ondelete="SET NULL", name="fk_forwarding_job_rule_id_forwarding_rule"),
            nullable=True,
        ),
    )
    requested_by: str = Field(
        default="", sa_column=Column("requested_by", String(200), nullable=False, server_default="")
    )
    study_instance_uid: str = Field(sa_column=Column("study_instance_uid", text_type(), nullable=False))
    series_instance_uid: str = Field(
        default="", sa_column=Column("series_instance_uid", text_type(), nullable=False, server_default="")
    )
    # A JSON list of SOP Instance UIDs; empty: the whole study (or series).
    sop_instance_uids: str = Field(
        default="[]", sa_column=Column("sop_instance_uids", Text(), nullable=False, server_default="[]")
    )
    ae_title: str | None = _optional("ae_title", MAX_AE_TITLE)
    dicomweb_url: str | None = _optional("dicomweb_url", MAX_URL)
    dicomweb_token: str | None = _optional("dicomweb_token")
    transfer_syntax: str | None = _optional("transfer_syntax", 64)
    state: str = Field(sa_column=Column("state", String(16), nullable=False))
    attempts: int = _count("attempts")
    last_error: str = Field(default="", sa_column=Column("last_error", Text(), nullable=False, server_default=""))
    next_attempt_at: datetime = _time("next_attempt_at")
    lease_owner: str | None = _optional("lease_owner", 64)
    lease_until: datetime | None = _time("lease_until", nullable=True)
    instances_total: int = _count("instances_total")
    instances_sent: int = _count("instances_sent")
    created_at: datetime = _time("created_at")
    updated_at: datetime = _time("updated_at")
    finished_at: datetime | None = _time("finished_at", nullable=True)


class ForwardingCursor(SQLModel, table=True):
    """The rule engine's single row: the feed position matched so far, and its lock."""

    __tablename__ = "forwarding_cursor"

    id: int = Field(sa_column=Column("id", Integer(), primary_key=True, autoincrement=False))
    feed_seq: int = Field(sa_column=Column("feed_seq", BigInteger(), nullable=False))


forwarding_rule_table: Final = SQLModel.metadata.tables["forwarding_rule"]
forwarding_job_table: Final = SQLModel.metadata.tables["forwarding_job"]
forwarding_cursor_table: Final = SQLModel.metadata.tables["forwarding_cursor"]
