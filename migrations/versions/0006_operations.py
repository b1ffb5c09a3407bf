"""Operations: retention policies, the studies flagged "keep", the integrity check's cursor.

Revision ID: 0006_operations
Revises: 0005_forwarding
Create Date: 2026-11-26

- `retention_policy`: delete studies older than `max_age_days` (by StudyDate or by the time the
  archive received them), for one modality or any (storage/retention.py).
- `study_keep`: studies no retention policy may delete; the row goes with its study.
- `verify_cursor`: one row per interrupted `webpacs verify`: the last instance id checked and the
  problems found so far, so `--resume` carries on where it stopped (storage/integrity.py).

A frozen copy of the tables (not imported from storage/), so this revision means the same thing forever.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_operations"
down_revision = "0005_forwarding"
branch_labels = None
depends_on = None


def _id() -> sa.types.TypeEngine[int]:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _time(name: str, *, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _count(name: str) -> sa.Column[int]:
    return sa.Column(name, sa.Integer(), server_default=sa.text("0"), nullable=False)


def upgrade() -> None:
    """Create the policy, keep-flag and verify-cursor tables."""
    op.create_table(
        "retention_policy",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("modality", sa.String(length=16), server_default="", nullable=False),
        sa.Column("max_age_days", sa.Integer(), nullable=False),
        sa.Column("age_basis", sa.String(length=16), nullable=False),
        sa.Column("enabled", sa.Boolean(), server_default=sa.true(), nullable=False),
        _time("created_at"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name", name="uq_retention_policy_name"),
    )
    op.create_table(
        "study_keep",
        sa.Column("study_id", _id(), nullable=False),
        sa.Column("set_by", sa.String(length=200), server_default="", nullable=False),
        sa.Column("reason", sa.Text(), server_default="", nullable=False),
        _time("set_at"),
        sa.ForeignKeyConstraint(["study_id"], ["study.id"], name="fk_study_keep_study_id", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("study_id"),
    )
    op.create_table(
        "verify_cursor",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("last_instance_id", sa.BigInteger(), nullable=False),
        _count("checked"),
        _count("missing"),
        _count("corrupt"),
        _time("started_at"),
        _time("updated_at"),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    """Drop the tables."""
    for table in ("verify_cursor", "study_keep", "retention_policy"):
        op.drop_table(table)
