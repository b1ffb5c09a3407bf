"""Forwarding: rules, the durable job queue, and the rule engine's cursor on the change feed.

Revision ID: 0005_forwarding
Revises: 0004_access_control
Create Date: 2026-11-26

- `forwarding_rule`: what to match (conditions as JSON) and where to send it (a registered AE title
  or a DICOMweb STOW-RS URL with an optional bearer token kept server-side), optionally transcoded.
- `forwarding_job`: one row per (rule or manual request, study / series / instances, destination),
  with its state, attempts, last error, next attempt time, the lease of the bridge delivering it,
  and progress. `ix_forwarding_job_due` serves the bridge's claim (due jobs by time).
- `forwarding_cursor`: one row, the change-feed position up to which the rule engine has matched,
  locked by the engine that advances it so several workers never enqueue a change twice. It starts
  at the feed's current end: rules apply to what arrives after the upgrade, not to the history.

A frozen copy of the tables (not imported from storage/forwarding.py), so this revision means the
same thing forever.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_forwarding"
down_revision = "0004_access_control"
branch_labels = None
depends_on = None


def _id() -> sa.types.TypeEngine[int]:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _text() -> sa.types.TypeEngine[str]:
    return sa.String().with_variant(sa.String(collation="C"), "postgresql")


def _time(name: str, *, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _destination() -> list[sa.Column[object]]:
    """Where to send: an AE title (C-STORE by the bridge) or a STOW-RS URL, and the transfer syntax."""
    return [
        sa.Column("ae_title", sa.String(length=16), nullable=True),
        sa.Column("dicomweb_url", sa.String(length=2048), nullable=True),
        sa.Column("dicomweb_token", sa.Text(), nullable=True),
        sa.Column("transfer_syntax", sa.String(length=64), nullable=True),
    ]


def _count(name: str) -> sa.Column[int]:
    return sa.Column(name, sa.Integer(), server_default=sa.text("0"), nullable=False)


def upgrade() -> None:
    """Create the rule, job and cursor tables."""
    op.create_table(
        "forwarding_rule",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("enabled", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("trigger", sa.String(length=16), nullable=False),
        sa.Column("conditions", sa.Text(), server_default="{}", nullable=False),
        *_destination(),
        _time("created_at"),
        _time("updated_at"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name", name="uq_forwarding_rule_name"),
    )
    op.create_table(
        "forwarding_job",
        sa.Column("id", _id(), autoincrement=True, nullable=False),
        sa.Column("rule_id", sa.Integer(), nullable=True),
        sa.Column("requested_by", sa.String(length=200), server_default="", nullable=False),
        sa.Column("study_instance_uid", _text(), nullable=False),
        sa.Column("series_instance_uid", _text(), server_default="", nullable=False),
        sa.Column("sop_instance_uids", sa.Text(), server_default="[]", nullable=False),
        *_destination(),
        sa.Column("state", sa.String(length=16), nullable=False),
        _count("attempts"),
        sa.Column("last_error", sa.Text(), server_default="", nullable=False),
        _time("next_attempt_at"),
        sa.Column("lease_owner", sa.String(length=64), nullable=True),
        _time("lease_until", nullable=True),
        _count("instances_total"),
        _count("instances_sent"),
        _time("created_at"),
        _time("updated_at"),
        _time("finished_at", nullable=True),
        sa.ForeignKeyConstraint(
            ["rule_id"], ["forwarding_rule.id"], name="fk_forwarding_job_rule_id_forwarding_rule", ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_forwarding_job_due", "forwarding_job", ["state", "next_attempt_at"])
    op.create_index("ix_forwarding_job_study", "forwarding_job", ["study_instance_uid"])
    op.create_index("ix_forwarding_job_rule", "forwarding_job", ["rule_id", "state"])
    op.create_table(
        "forwarding_cursor",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("feed_seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.execute("INSERT INTO forwarding_cursor (id, feed_seq) SELECT 1, COALESCE(MAX(feed_seq), 0) FROM change")


def downgrade() -> None:
    """Drop the tables (their indexes go with them)."""
    for table in ("forwarding_cursor", "forwarding_job", "forwarding_rule"):
        op.drop_table(table)
