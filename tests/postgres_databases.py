"""Throw-away PostgreSQL databases for tests, on the server at 127.0.0.1:5432 (trust auth)."""

from __future__ import annotations

import uuid

import psycopg
import pytest

__all__ = ["create_postgres_database", "drop_postgres_database"]

_PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/{name}"


def create_postgres_database() -> str:
    """A new, empty PostgreSQL database at 127.0.0.1:5432; its URL. Fails (never skips) when unreachable."""
    name = f"webpacs_test_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(_PG_ADMIN, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL at 127.0.0.1:5432 is unreachable (start it): {exc}")
    return _PG_URL.format(name=name)


def drop_postgres_database(url: str) -> None:
    """Drop a database made by create_postgres_database."""
    with psycopg.connect(_PG_ADMIN, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
