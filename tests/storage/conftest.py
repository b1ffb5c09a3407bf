"""Fixtures of the operations tests (integrity, retention): an archive on either index backend."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from operations_archive import OperationsArchive, open_archive

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def ops(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OperationsArchive]:
    """An empty archive on SQLite or PostgreSQL, its blobs in a folder."""
    archive = open_archive(request.param, tmp_path)
    yield archive
    archive.close()
