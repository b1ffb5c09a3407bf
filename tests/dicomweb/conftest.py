"""DICOMweb suite fixtures: every test runs against a real server on SQLite and on PostgreSQL.

A PostgreSQL variant fails when PostgreSQL does not answer at 127.0.0.1:5432; it never skips.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from live_pacs import Pacs

if TYPE_CHECKING:
    from collections.abc import Iterator

    from conftest import ServerFactory  # tests/conftest.py

BACKEND_PARAMS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
]


@pytest.fixture(scope="session", params=BACKEND_PARAMS)
def backend(request: pytest.FixtureRequest) -> str:
    """The index backend of the servers under test: sqlite or postgresql."""
    return str(request.param)


@pytest.fixture(scope="session")
def pacs(backend: str, live_servers: ServerFactory) -> Iterator[Pacs]:
    """One server per backend shared by the suite; tests keep to their own studies (fresh UIDs)."""
    server = live_servers.start(backend)
    client = Pacs(server.url, server.token, server.data_dir, backend)
    yield client
    client.close()
    live_servers.stop(server)
