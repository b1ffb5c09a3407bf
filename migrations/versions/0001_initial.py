"""Initial schema: the index tables and auth's api_token.

Revision ID: 0001_initial
Revises:
Create Date: 2026-11-25

A frozen copy of the schema (not imported from the models), so this revision means the same thing
forever. Text columns that are matched or sorted use the "C" collation on PostgreSQL (see
storage/index/models.py).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_initial"
down_revision = None
branch_labels = None
depends_on = None


def _id() -> sa.types.TypeEngine[int]:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _text() -> sa.types.TypeEngine[str]:
    return sa.String().with_variant(sa.String(collation="C"), "postgresql")


def _key(name: str) -> sa.Column[str]:
    """A matching-key column: '' when the attribute is absent."""
    return sa.Column(name, _text(), server_default="", nullable=False)


def _count(name: str) -> sa.Column[int]:
    return sa.Column(name, sa.Integer(), server_default=sa.text("0"), nullable=False)


def _time(name: str, *, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _study_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(["study_id"], ["study.id"], name=f"fk_{table}_study_id_study", ondelete="CASCADE")


def upgrade() -> None:
    """Create every table and index."""
    op.create_table(
        "api_token",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("role", sa.String(length=32), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        _time("created_at"),
        _time("expires_at", nullable=True),
        _time("last_used_at", nullable=True),
        _time("revoked_at", nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_api_token_token_hash", "api_token", ["token_hash"], unique=True)

    op.create_table(
        "study",
        sa.Column("id", _id(), autoincrement=True, nullable=False),
        sa.Column("study_instance_uid", _text(), nullable=False),
        _key("patient_id"),
        _key("patient_name"),
        _key("patient_name_norm"),
        _key("patient_birth_date"),
        _key("patient_sex"),
        _key("study_date"),
        _key("study_time"),
        _key("accession_number"),
        _key("study_id"),
        _key("study_description"),
        _key("referring_physician_name"),
        _key("referring_physician_name_norm"),
        _key("institution_name"),
        _count("num_series"),
        _count("num_instances"),
        sa.Column("json", sa.Text(), nullable=False),
        _time("created_at"),
        _time("updated_at"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("study_instance_uid", name="uq_study_study_instance_uid"),
    )
    op.create_index("ix_study_patient_id", "study", ["patient_id"])
    op.create_index("ix_study_patient_name_norm", "study", ["patient_name_norm"])
    op.create_index("ix_study_date_time", "study", ["study_date", "study_time", "id"])
    op.create_index("ix_study_accession_number", "study", ["accession_number"])
    op.create_index("ix_study_study_id", "study", ["study_id"])
    op.create_index("ix_study_referring_physician_name_norm", "study", ["referring_physician_name_norm"])

    op.create_table(
        "study_modality",
        sa.Column("study_id", _id(), nullable=False),
        sa.Column("modality", _text(), nullable=False),
        _study_fk("study_modality"),
        sa.PrimaryKeyConstraint("study_id", "modality"),
    )
    op.create_index("ix_study_modality_modality", "study_modality", ["modality", "study_id"])

    op.create_table(
        "study_sop_class",
        sa.Column("study_id", _id(), nullable=False),
        sa.Column("sop_class_uid", _text(), nullable=False),
        _study_fk("study_sop_class"),
        sa.PrimaryKeyConstraint("study_id", "sop_class_uid"),
    )
    op.create_index("ix_study_sop_class_sop_class_uid", "study_sop_class", ["sop_class_uid", "study_id"])

    op.create_table(
        "series",
        sa.Column("id", _id(), autoincrement=True, nullable=False),
        sa.Column("study_id", _id(), nullable=False),
        sa.Column("series_instance_uid", _text(), nullable=False),
        _key("modality"),
        sa.Column("series_number", sa.Integer(), nullable=True),
        _key("series_description"),
        _key("body_part_examined"),
        _key("pps_start_date"),
        _key("pps_start_time"),
        _count("num_instances"),
        sa.Column("json", sa.Text(), nullable=False),
        _time("created_at"),
        _study_fk("series"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("series_instance_uid", name="uq_series_series_instance_uid"),
    )
    op.create_index("ix_series_study_order", "series", ["study_id", "series_number", "id"])
    op.create_index("ix_series_order", "series", ["series_number", "id"])
    op.create_index("ix_series_modality", "series", ["modality"])

    op.create_table(
        "instance",
        sa.Column("id", _id(), autoincrement=True, nullable=False),
        sa.Column("series_id", _id(), nullable=False),
        sa.Column("study_id", _id(), nullable=False),
        sa.Column("sop_instance_uid", _text(), nullable=False),
        _key("sop_class_uid"),
        sa.Column("instance_number", sa.Integer(), nullable=True),
        _key("transfer_syntax_uid"),
        sa.Column("rows", sa.Integer(), nullable=True),
        sa.Column("columns", sa.Integer(), nullable=True),
        sa.Column("bits_allocated", sa.Integer(), nullable=True),
        _count("number_of_frames"),
        sa.Column("json", sa.Text(), nullable=False),
        sa.Column("metadata", sa.LargeBinary(), nullable=False),
        sa.Column("frames", sa.Text(), nullable=True),
        sa.Column("blob_key", _text(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        _time("created_at"),
        sa.ForeignKeyConstraint(["series_id"], ["series.id"], name="fk_instance_series_id_series", ondelete="CASCADE"),
        _study_fk("instance"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("sop_instance_uid", name="uq_instance_sop_instance_uid"),
    )
    op.create_index("ix_instance_series_order", "instance", ["series_id", "instance_number", "id"])
    op.create_index("ix_instance_study_id", "instance", ["study_id"])
    op.create_index("ix_instance_sop_class_uid", "instance", ["sop_class_uid"])
    op.create_index("ix_instance_blob_key", "instance", ["blob_key"])

    op.create_table(
        "change",
        sa.Column("seq", _id(), autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("study_instance_uid", _text(), nullable=False),
        sa.Column("series_instance_uid", _text(), nullable=False),
        sa.Column("sop_instance_uid", _text(), nullable=False),
        _time("at"),
        sa.PrimaryKeyConstraint("seq"),
        sqlite_autoincrement=True,
    )


def downgrade() -> None:
    """Drop every table (their indexes go with them)."""
    for table in (
        "change",
        "instance",
        "series",
        "study_sop_class",
        "study_modality",
        "study",
        "api_token",
    ):
        op.drop_table(table)
