"""The AE registry: remote DICOM nodes of the DIMSE bridge.

Revision ID: 0002_dicom_nodes
Revises: 0001_initial
Create Date: 2026-11-25

A frozen copy of the table (not imported from storage/index/nodes.py), so this revision means the
same thing forever.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_dicom_nodes"
down_revision = "0001_initial"
branch_labels = None
depends_on = None


def _flag(name: str) -> sa.Column[bool]:
    return sa.Column(name, sa.Boolean(), server_default=sa.text("true"), nullable=False)


def upgrade() -> None:
    """Create `dicom_node`."""
    op.create_table(
        "dicom_node",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("ae_title", sa.String(length=16), nullable=False),
        sa.Column("host", sa.String(length=253), nullable=False),
        sa.Column("port", sa.Integer(), nullable=False),
        sa.Column("description", sa.String(length=1024), server_default="", nullable=False),
        _flag("allow_store"),
        _flag("allow_find"),
        _flag("allow_move"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("ae_title", name="uq_dicom_node_ae_title"),
    )


def downgrade() -> None:
    """Drop `dicom_node`."""
    op.drop_table("dicom_node")
