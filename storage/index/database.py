"""The index database: engine set-up for SQLite and PostgreSQL, Alembic migrations, readiness check."""

from __future__ import annotations

import functools
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import String, column, create_engine, event, inspect, select, table, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from storage.errors import IndexUnavailable

if TYPE_CHECKING:
    from collections.abc import Iterator

    from sqlalchemy import Select
    from sqlalchemy.engine import Connection, Engine

__all__ = [
    "MIGRATIONS_DIR",
    "check",
    "migrate",
    "open_engine",
    "write_transaction",
]

# The Alembic scripts sit beside the `storage` package: the repo root in a checkout or an editable
# install, site-packages when the wheel ships `migrations` as a package of its own.
MIGRATIONS_DIR: Final = Path(__file__).resolve().parents[2] / "migrations"

_SQLITE_BUSY_TIMEOUT_MS: Final = 30_000
_SQLITE_PRAGMAS: Final = (
    # WAL: readers never block the writer nor each other; NORMAL is durable across application
    # crashes and loses at most the last commits on power loss, the usual WAL trade-off.
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    f"PRAGMA busy_timeout={_SQLITE_BUSY_TIMEOUT_MS}",
    "PRAGMA foreign_keys=ON",
    "PRAGMA temp_store=MEMORY",
    "PRAGMA cache_size=-65536",  # 64 MiB page cache per connection
    "PRAGMA mmap_size=268435456",
)
# The execution option `write_transaction` sets so that SQLite begins with BEGIN IMMEDIATE.
_BEGIN_MODE: Final = "webpacs_sqlite_begin"
# Alembic's table of applied revisions (its default name, which migrations/env.py keeps).
_VERSION_TABLE: Final = "alembic_version"
_SELECT_VERSIONS: Final[Select[str]] = select(column("version_num", String)).select_from(table(_VERSION_TABLE))
# Key of the PostgreSQL advisory lock that serialises concurrent `migrate` calls (workers starting).
_MIGRATION_LOCK_KEY: Final = 0x7765627061637301


def open_engine(url: str, *, pool_size: int = 20, max_overflow: int = 20) -> Engine:
    """Create the engine for an index URL (`sqlite:///path` or `postgresql+psycopg://...`).

    SQLite connections run in WAL mode with foreign keys on; SQLAlchemy, not the sqlite3 driver,
    emits BEGIN, so reads are real transactions and savepoints work; `write_transaction` begins
    with BEGIN IMMEDIATE so concurrent writers queue on the busy timeout instead of failing with
    "database is locked" when a read transaction tries to upgrade. PostgreSQL gets a pool sized for
    a threaded server (anyio's default of 40 worker threads = pool_size + max_overflow).

    Raises:
        IndexUnavailable: the URL names neither SQLite nor PostgreSQL.
    """
    sa_url = make_url(url)
    backend = sa_url.get_backend_name()
    if backend == "sqlite":
        engine = create_engine(
            sa_url,
            pool_size=pool_size,
            max_overflow=max_overflow,
            connect_args={"check_same_thread": False, "timeout": _SQLITE_BUSY_TIMEOUT_MS / 1000},
        )
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
        return engine
    if backend == "postgresql":
        return create_engine(sa_url, pool_size=pool_size, max_overflow=max_overflow, pool_pre_ping=True)
    msg = f"index URL {sa_url.render_as_string()!r}: use sqlite:///PATH or postgresql+psycopg://..."
    raise IndexUnavailable(msg)


def _sqlite_on_connect(dbapi_connection: Any, _record: object) -> None:
    # isolation_level None stops the sqlite3 driver's own implicit BEGIN (see _sqlite_on_begin).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        for pragma in _SQLITE_PRAGMAS:
            cursor.execute(pragma)
    finally:
        cursor.close()


def _sqlite_on_begin(connection: Connection) -> None:
    mode = connection.get_execution_options().get(_BEGIN_MODE, "DEFERRED")
    connection.exec_driver_sql(f"BEGIN {mode}")


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A connection in a transaction meant to write: committed on exit, rolled back on error.

    On SQLite it starts with BEGIN IMMEDIATE (the write lock is taken up front, so two writers never
    deadlock on a lock upgrade); on PostgreSQL it is an ordinary READ COMMITTED transaction.
    """
    with engine.connect() as connection:
        connection.execution_options(**{_BEGIN_MODE: "IMMEDIATE"})
        with connection.begin():
            yield connection


def _alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    return config


def migrate(url: str) -> None:
    """Bring the index schema at `url` to the newest revision (`alembic upgrade head`).

    Safe to call from several workers starting at once: on PostgreSQL an advisory lock serialises
    them; on SQLite BEGIN IMMEDIATE does.

    Raises:
        IndexUnavailable: the database cannot be reached.
    """
    engine = open_engine(url, pool_size=1, max_overflow=0)
    config = _alembic_config()
    try:
        with write_transaction(engine) as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY})
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    except SQLAlchemyError as exc:
        msg = f"cannot migrate the index at {make_url(url).render_as_string()}: {exc}"
        raise IndexUnavailable(msg) from exc
    finally:
        engine.dispose()


@functools.cache
def _head_revision() -> str | None:
    """The newest migration's revision: read from the scripts once, they do not change meanwhile."""
    return ScriptDirectory.from_config(_alembic_config()).get_current_head()


def _current_revisions(connection: Connection) -> list[str]:
    """The revisions recorded in the database; none when it was never migrated.

    Read directly, not through Alembic's MigrationContext, which logs two INFO lines per call:
    noise in a readiness probe polled every few seconds.
    """
    if not inspect(connection).has_table(_VERSION_TABLE):
        return []
    return list(connection.execute(_SELECT_VERSIONS).scalars())


def check(engine: Engine) -> None:
    """Readiness probe: the database answers and its schema is at the newest migration.

    Raises:
        IndexUnavailable: the database is unreachable, or not migrated (run `migrate`).
    """
    head = _head_revision()
    try:
        with engine.connect() as connection:
            current = _current_revisions(connection)
    except SQLAlchemyError as exc:
        msg = f"index database unreachable: {exc}"
        raise IndexUnavailable(msg) from exc
    if current != [head]:
        at = ", ".join(current) if current else None
        msg = f"index schema is at revision {at}, the code expects {head}: run the migrations"
        raise IndexUnavailable(msg)
