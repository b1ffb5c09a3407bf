"""Index fixtures: every index test runs on SQLite (a temporary file) and on PostgreSQL.

PostgreSQL must answer at 127.0.0.1:5432 (user postgres, trust auth): when it does not, the
PostgreSQL variants fail; they never skip.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from index_samples import create_database, drop_database

from storage.index import Index
from storage.index.database import migrate, open_engine

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from sqlalchemy.engine import Engine


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
