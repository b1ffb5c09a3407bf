"""Engine set-up, migrations and the readiness check, on SQLite and PostgreSQL."""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import insert, inspect, select, text
from sqlmodel import SQLModel

# These register the tables of later revisions in the metadata: dicom_node (0002), verify_cursor,
# retention_policy and study_keep (0006).
import storage.index.nodes
import storage.integrity
import storage.retention  # noqa: F401
from storage.errors import IndexUnavailable
from storage.index import database
from storage.index.database import MIGRATIONS_DIR, check, migrate, open_engine, write_transaction
from storage.index.models import change_table

if TYPE_CHECKING:
    from pathlib import Path

    from alembic.config import Config
    from sqlalchemy.engine import Engine

# The tables of revision 0001_initial; later revisions add theirs.
TABLES = {"alembic_version", "api_token", "study", "study_modality", "study_sop_class", "series", "instance", "change"}


def change_row(n: int) -> dict[str, object]:
    return {
        "kind": "stored",
        "study_instance_uid": "1",
        "series_instance_uid": "1",
        "sop_instance_uid": str(n),
        "at": datetime.now(UTC),
    }


class TestMigrations:
    def test_upgrade_creates_every_table_and_reaches_head(self, database_url: str) -> None:
        migrate(database_url)
        engine = open_engine(database_url)
        head = ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()
        try:
            assert set(inspect(engine).get_table_names()) >= TABLES
            with engine.connect() as connection:
                assert MigrationContext.configure(connection).get_current_revision() == head
        finally:
            engine.dispose()

    def test_first_revision_is_0001_initial(self) -> None:
        base = ScriptDirectory(str(MIGRATIONS_DIR)).get_base()
        assert base == "0001_initial"

    def test_upgrade_twice_is_harmless(self, database_url: str) -> None:
        migrate(database_url)
        migrate(database_url)

    def test_migrated_schema_matches_the_models(self, engine: Engine) -> None:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, SQLModel.metadata) == []

    def test_concurrent_migrations_both_succeed(self, database_url: str) -> None:
        errors: list[BaseException] = []

        def run() -> None:
            try:
                migrate(database_url)
            except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
                errors.append(exc)

        threads = [threading.Thread(target=run) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []


class TestCheck:
    def test_migrated_index_is_ready(self, engine: Engine) -> None:
        check(engine)

    def test_unmigrated_index_is_not_ready(self, database_url: str) -> None:
        engine = open_engine(database_url)
        try:
            with pytest.raises(IndexUnavailable, match="run the migrations"):
                check(engine)
        finally:
            engine.dispose()

    def test_an_older_revision_is_not_ready(self, engine: Engine) -> None:
        with write_transaction(engine) as connection:
            connection.execute(text("UPDATE alembic_version SET version_num = '0001_initial'"))
        with pytest.raises(IndexUnavailable, match="at revision 0001_initial, the code expects"):
            check(engine)

    def test_the_scripts_are_read_once_and_nothing_is_logged(
        self, engine: Engine, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
    ) -> None:
        reads: list[object] = []
        from_config = ScriptDirectory.from_config

        def counted(config: Config) -> ScriptDirectory:
            reads.append(config)
            return from_config(config)

        monkeypatch.setattr(ScriptDirectory, "from_config", counted)
        database._head_revision.cache_clear()
        try:
            with caplog.at_level(logging.INFO):
                for _ in range(3):
                    check(engine)
        finally:
            database._head_revision.cache_clear()
        assert len(reads) == 1
        assert caplog.records == []

    def test_unreachable_database_is_not_ready(self) -> None:
        engine = open_engine("postgresql+psycopg://postgres@127.0.0.1:1/nothing?connect_timeout=2")
        with pytest.raises(IndexUnavailable, match="unreachable"):
            check(engine)

    def test_unknown_database_kind_is_refused(self) -> None:
        with pytest.raises(IndexUnavailable, match="sqlite:///PATH or postgresql"):
            open_engine("mysql://localhost/x")


class TestSqliteConnection:
    @pytest.fixture
    def sqlite_engine(self, tmp_path: Path) -> Engine:
        url = f"sqlite:///{tmp_path / 'index.sqlite3'}"
        migrate(url)
        return open_engine(url)

    def test_pragmas(self, sqlite_engine: Engine) -> None:
        with sqlite_engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
            assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000

    def test_second_writer_waits_for_the_first(self, sqlite_engine: Engine) -> None:
        done = threading.Event()

        def second() -> None:
            with write_transaction(sqlite_engine) as connection:
                connection.execute(insert(change_table), [change_row(2)])
            done.set()

        with write_transaction(sqlite_engine) as connection:
            connection.execute(insert(change_table), [change_row(1)])
            thread = threading.Thread(target=second)
            thread.start()
            time.sleep(0.3)  # the second writer is blocked on BEGIN IMMEDIATE meanwhile
            assert not done.is_set()
        thread.join(10)
        assert done.is_set()
        with sqlite_engine.connect() as connection:
            assert connection.execute(
                select(change_table.c.sop_instance_uid).order_by(change_table.c.seq)
            ).scalars().all() == ["1", "2"]

    def test_savepoint_rollback_keeps_the_transaction(self, sqlite_engine: Engine) -> None:
        with write_transaction(sqlite_engine) as connection:
            connection.execute(insert(change_table), [change_row(1)])
            nested = connection.begin_nested()
            connection.execute(insert(change_table), [change_row(2)])
            nested.rollback()
        with sqlite_engine.connect() as connection:
            assert connection.execute(select(change_table.c.sop_instance_uid)).scalars().all() == ["1"]

    def test_read_transaction_sees_a_stable_snapshot(self, sqlite_engine: Engine) -> None:
        with sqlite_engine.connect() as reader:
            assert reader.execute(text("SELECT count(*) FROM change")).scalar() == 0
            with write_transaction(sqlite_engine) as writer:
                writer.execute(insert(change_table), [change_row(1)])
            assert reader.execute(text("SELECT count(*) FROM change")).scalar() == 0
