"""Study management: the recycle bin.

Revision ID: 0007_study_management
Revises: 0006_operations
Create Date: 2026-11-26

- `study_recycle`: studies deleted while WEBPACS_RECYCLE_DAYS > 0, hidden from QIDO-RS and WADO-RS
  until restored or purged; the row goes with its study (storage/index/edits.py).

A frozen copy of the table (not imported from storage/), so this revision means the same thing forever.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_study_management"
down_revision = "0006_operations"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the recycle bin table."""
    op.create_table(
        "study_recycle",
        sa.Column("study_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("recycled_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recycled_by", sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(["study_id"], ["study.id"], name="fk_study_recycle_study_id", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("study_id"),
    )
    op.create_index("ix_study_recycle_recycled_at", "study_recycle", ["recycled_at"])


def downgrade() -> None:
    """Drop the table."""
    op.drop_index("ix_study_recycle_recycled_at", table_name="study_recycle")
    op.drop_table("study_recycle")
