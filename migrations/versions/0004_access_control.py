"""Access control: users, personal tokens, refresh tokens, share links, the audit log, server secrets.

Revision ID: 0004_access_control
Revises: 0003_change_feed
Create Date: 2026-11-26

A frozen copy of the tables (not imported from auth/models.py), so this revision means the same
thing forever. The audit log is append-only in the database itself: triggers refuse UPDATE and
DELETE, so not even a bug in the server can rewrite history.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_access_control"
down_revision = "0003_change_feed"
branch_labels = None
depends_on = None


def _time(name: str, *, nullable: bool = True) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _hash_column(name: str = "token_hash") -> sa.Column[str]:
    return sa.Column(name, sa.String(length=64), nullable=False)


_APPEND_ONLY_SQLITE = """
CREATE TRIGGER audit_event_append_only_{verb} BEFORE {verb} ON audit_event
BEGIN SELECT RAISE(ABORT, 'audit_event is append-only'); END
"""
_APPEND_ONLY_POSTGRESQL = """
CREATE FUNCTION audit_event_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'audit_event is append-only'; END $$;
CREATE TRIGGER audit_event_append_only BEFORE UPDATE OR DELETE ON audit_event
FOR EACH ROW EXECUTE FUNCTION audit_event_append_only();
"""


def upgrade() -> None:
    """Create the access-control tables and link API tokens to users."""
    op.create_table(
        "app_user",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("username", sa.String(length=128), nullable=False),
        sa.Column("password_hash", sa.String(length=256), nullable=True),
        sa.Column("role", sa.String(length=32), nullable=False),
        sa.Column("study_filter", sa.Text(), nullable=False, server_default="{}"),
        _time("created_at", nullable=False),
        _time("disabled_at"),
        _time("last_login_at"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_app_user_username", "app_user", ["username"], unique=True)

    with op.batch_alter_table("api_token") as table:
        table.add_column(sa.Column("user_id", sa.Integer(), nullable=True))
        table.create_foreign_key("fk_api_token_user", "app_user", ["user_id"], ["id"], ondelete="CASCADE")
        table.create_index("ix_api_token_user_id", ["user_id"])

    op.create_table(
        "refresh_token",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("app_user.id", ondelete="CASCADE"), nullable=False),
        _hash_column(),
        _time("created_at", nullable=False),
        _time("expires_at", nullable=False),
        _time("revoked_at"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_refresh_token_token_hash", "refresh_token", ["token_hash"], unique=True)
    op.create_index("ix_refresh_token_user_id", "refresh_token", ["user_id"])

    op.create_table(
        "share_link",
        sa.Column("id", sa.Integer(), nullable=False),
        _hash_column(),
        sa.Column("study_uid", sa.String(length=64), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        _time("created_at", nullable=False),
        _time("expires_at"),
        _time("revoked_at"),
        sa.Column("pin_hash", sa.String(length=256), nullable=True),
        sa.Column("birth_date_hash", sa.String(length=256), nullable=True),
        _time("last_used_at"),
        sa.Column("uses", sa.Integer(), nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_share_link_token_hash", "share_link", ["token_hash"], unique=True)
    op.create_index("ix_share_link_study_uid", "share_link", ["study_uid"])

    op.create_table(
        "audit_event",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        _time("at", nullable=False),
        sa.Column("actor_kind", sa.String(length=16), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("study_uid", sa.String(length=64), nullable=True),
        sa.Column("source", sa.String(length=200), nullable=False, server_default=""),
        sa.Column("detail", sa.Text(), nullable=False, server_default=""),
        sa.PrimaryKeyConstraint("id"),
    )
    for column in ("at", "actor", "action", "study_uid"):
        op.create_index(f"ix_audit_event_{column}", "audit_event", [column])
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_APPEND_ONLY_POSTGRESQL)
    else:
        for verb in ("UPDATE", "DELETE"):
            op.execute(_APPEND_ONLY_SQLITE.format(verb=verb))

    op.create_table(
        "server_secret",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.String(length=256), nullable=False),
        _time("created_at", nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade() -> None:
    """Drop the access-control tables."""
    op.drop_table("server_secret")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_event_append_only ON audit_event")
        op.execute("DROP FUNCTION IF EXISTS audit_event_append_only()")
    op.drop_table("audit_event")
    op.drop_table("share_link")
    op.drop_table("refresh_token")
    with op.batch_alter_table("api_token") as table:
        table.drop_index("ix_api_token_user_id")
        table.drop_constraint("fk_api_token_user", type_="foreignkey")
        table.drop_column("user_id")
    op.drop_table("app_user")
