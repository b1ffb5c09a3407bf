"""Change feed in commit order, stable-study detection, and the pending-blob journal.

Revision ID: 0003_change_feed
Revises: 0002_dicom_nodes
Create Date: 2026-11-26

- `change.feed_seq`: the number a reader of `/api/changes` sees. `change.seq` is handed out when a
  row is inserted, but transactions commit in another order, so a reader following `seq` could
  skip a row that commits later under a smaller number. The feed publisher numbers rows after
  they committed, one publisher at a time, so `feed_seq` only ever grows in visibility order.
  Existing rows keep their `seq` as their feed number.
- `feed_state`: one row, the publisher's lock and the point up to which quiet studies were
  announced as stable.
- `ix_study_updated_at`: the publisher finds the studies that went quiet by a range scan.
- `blob_journal`: a row per blob being written, committed before the blob is put and removed in
  the index transaction that references it; the orphan sweep spares blobs still journaled by
  another host.

A frozen copy of the tables (not imported from the models), so this revision means the same thing
forever.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_change_feed"
down_revision = "0002_dicom_nodes"
branch_labels = None
depends_on = None


def _text() -> sa.types.TypeEngine[str]:
    return sa.String().with_variant(sa.String(collation="C"), "postgresql")


def upgrade() -> None:
    """Add the feed number, the feed state, the study activity index and the blob journal."""
    op.add_column("change", sa.Column("feed_seq", sa.BigInteger(), nullable=True))
    op.execute("UPDATE change SET feed_seq = seq")
    op.create_index("ix_change_feed_seq", "change", ["feed_seq"], unique=True)
    unpublished = sa.text("feed_seq IS NULL")
    op.create_index("ix_change_unpublished", "change", ["seq"], sqlite_where=unpublished, postgresql_where=unpublished)
    op.create_table(
        "feed_state",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("stable_until", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.execute("INSERT INTO feed_state (id, stable_until) VALUES (1, NULL)")
    op.create_index("ix_study_updated_at", "study", ["updated_at"])
    op.create_table(
        "blob_journal",
        sa.Column("blob_key", _text(), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("blob_key"),
    )


def downgrade() -> None:
    """Drop what upgrade added."""
    op.drop_table("blob_journal")
    op.drop_index("ix_study_updated_at", table_name="study")
    op.drop_table("feed_state")
    op.drop_index("ix_change_unpublished", table_name="change")
    op.drop_index("ix_change_feed_seq", table_name="change")
    with op.batch_alter_table("change") as batch:
        batch.drop_column("feed_seq")
