"""Alembic migrations of the index database (SQLite and PostgreSQL); run by `storage.index.database.migrate`."""
