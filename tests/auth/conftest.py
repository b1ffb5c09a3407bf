"""Auth fixtures: the services run over a migrated database, SQLite and PostgreSQL alike."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from postgres_databases import create_postgres_database, drop_postgres_database

from storage.index.database import migrate, open_engine

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from sqlalchemy.engine import Engine


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """An engine on a freshly migrated, empty database."""
    url = f"sqlite:///{tmp_path / 'auth.sqlite3'}" if request.param == "sqlite" else create_postgres_database()
    migrate(url)
    engine = open_engine(url)
    yield engine
    engine.dispose()
    if request.param == "postgresql":
        drop_postgres_database(url)
