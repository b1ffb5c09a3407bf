"""Alembic environment: runs revisions on the connection `migrate` hands over, or on a URL.

From the command line: `alembic -x url=postgresql+psycopg://... upgrade head` (else
WEBPACS_DATABASE_URL, else `sqlalchemy.url` of alembic.ini).
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy.engine import Connection
from sqlmodel import SQLModel

# The imports register every table of the shared database in SQLModel.metadata, for
# `alembic revision --autogenerate` and `alembic check`.
import auth.models  # noqa: F401
import storage.index.forwarding
import storage.index.models
import storage.index.nodes
import storage.integrity
import storage.retention  # noqa: F401
from storage.index.database import open_engine, write_transaction

target_metadata = SQLModel.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things: later revisions use batch mode (copy and move) there.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url") or os.environ.get("WEBPACS_DATABASE_URL")
    if url:
        return url
    configured = context.config.get_main_option("sqlalchemy.url")
    if not configured:
        msg = "no database: pass -x url=..., set WEBPACS_DATABASE_URL or sqlalchemy.url"
        raise SystemExit(msg)
    return configured


given = context.config.attributes.get("connection")
if isinstance(given, Connection):
    _run(given)
else:
    engine = open_engine(_url(), pool_size=1, max_overflow=0)
    try:
        with write_transaction(engine) as connection:
            _run(connection)
    finally:
        engine.dispose()
