"""Index fixtures: every index test runs on SQLite (a temporary file) and on PostgreSQL.

PostgreSQL must answer at 127.0.0.1:5432 (user postgres, trust auth): when it does not, the
PostgreSQL variants fail; they never skip.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import psycopg
import pytest

from storage.index import Index
from storage.index.database import migrate, open_engine

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from sqlalchemy.engine import Engine

PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/{name}"


def _admin() -> psycopg.Connection[tuple[object, ...]]:
    try:
        return psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL at 127.0.0.1:5432 is unreachable (start it): {exc}")


def create_database(kind: str, tmp_path: Path) -> str:
    """A new empty database of `kind` (sqlite | postgresql); its URL."""
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'index.sqlite3'}"
    name = f"webpacs_test_{uuid.uuid4().hex[:12]}"
    with _admin() as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    return PG_URL.format(name=name)


def drop_database(url: str) -> None:
    """Drop a PostgreSQL database made by create_database (SQLite files go with tmp_path)."""
    if url.startswith("postgresql"):
        name = url.rsplit("/", 1)[1]
        with _admin() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database (not migrated)."""
    url = create_database(request.param, tmp_path)
    yield url
    drop_database(url)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """An engine on a migrated, empty index."""
    migrate(database_url)
    engine = open_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def index(engine: Engine) -> Index:
    """An empty index."""
    return Index(engine)
