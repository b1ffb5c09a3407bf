"""The AE registry: the `dicom_node` table (SQLite and PostgreSQL) and its `/api/dicom-nodes` routes."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from litestar import Litestar
from litestar.di import Provide
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult, DefineMiddleware
from litestar.testing import TestClient

from auth.principals import Principal, Role
from dicomweb.errors import EXCEPTION_HANDLERS
from dicomweb.nodes import DICOM_NODES_ROUTER
from storage.errors import NotFound
from storage.index.database import MIGRATIONS_DIR, migrate, open_engine, write_transaction
from storage.index.nodes import (
    DuplicateNode,
    InvalidNode,
    NodeFields,
    create_node,
    delete_node,
    get_node,
    list_nodes,
    update_node,
)

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from litestar.connection import ASGIConnection
    from sqlalchemy.engine import Engine

_PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'index.db'}"
        migrate(url)
        engine = open_engine(url)
        yield engine
        engine.dispose()
        return
    name = f"nodes_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(_PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = _PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        migrate(url)
        engine = open_engine(url)
        yield engine
        engine.dispose()
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


class TestNodeTable:
    def test_created_node_is_listed_with_padding_stripped_and_utc_time(self, engine: Engine) -> None:
        create_node(engine, NodeFields(" STORESCP ", "127.0.0.1", 11113, "viewer", allow_store=False))
        [node] = list_nodes(engine)
        assert (node.ae_title, node.host, node.port, node.description) == ("STORESCP", "127.0.0.1", 11113, "viewer")
        assert (node.allow_store, node.allow_find, node.allow_move) == (False, True, True)
        assert node.created_at.utcoffset() is not None
        assert node.created_at.utcoffset().total_seconds() == 0  # type: ignore[union-attr]

    def test_second_node_with_same_ae_title_is_refused(self, engine: Engine) -> None:
        create_node(engine, NodeFields("CT1", "10.0.0.1", 104))
        with pytest.raises(DuplicateNode, match="CT1"):
            create_node(engine, NodeFields("CT1", "10.0.0.2", 104))
        assert len(list_nodes(engine)) == 1

    @pytest.mark.parametrize(
        ("fields", "message"),
        [
            (NodeFields("", "h", 104), "AE title"),
            (NodeFields("A" * 17, "h", 104), "AE title"),
            (NodeFields("BAD\\AE", "h", 104), "AE title"),
            (NodeFields("OK", "", 104), "host"),
            (NodeFields("OK", "h", 0), "port"),
            (NodeFields("OK", "h", 65536), "port"),
        ],
    )
    def test_invalid_fields_are_refused_with_their_name(self, engine: Engine, fields: NodeFields, message: str) -> None:
        with pytest.raises(InvalidNode, match=message):
            create_node(engine, fields)

    def test_update_replaces_every_field_including_the_ae_title(self, engine: Engine) -> None:
        create_node(engine, NodeFields("OLD", "h1", 1))
        update_node(engine, "OLD", NodeFields("NEW", "h2", 2, "d", allow_move=False))
        node = get_node(engine, "NEW")
        assert (node.host, node.port, node.description, node.allow_move) == ("h2", 2, "d", False)
        with pytest.raises(NotFound):
            get_node(engine, "OLD")

    def test_deleted_node_is_gone_and_deleting_again_is_not_found(self, engine: Engine) -> None:
        create_node(engine, NodeFields("GONE", "h", 1))
        delete_node(engine, "GONE")
        assert list_nodes(engine) == []
        with pytest.raises(NotFound, match="GONE"):
            delete_node(engine, "GONE")


class TestMigration:
    def test_downgrade_drops_the_table_and_upgrade_brings_it_back(self, engine: Engine) -> None:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        config.set_main_option("path_separator", "os")
        with write_transaction(engine) as connection:
            config.attributes["connection"] = connection
            command.downgrade(config, "0001_initial")
        assert "dicom_node" not in sa.inspect(engine).get_table_names()
        with write_transaction(engine) as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "0002_dicom_nodes")
        assert list_nodes(engine) == []


class _AsRole(AbstractAuthenticationMiddleware):
    role = Role.ADMIN

    async def authenticate_request(self, connection: ASGIConnection[Any, Any, Any, Any]) -> AuthenticationResult:
        role = Role(connection.headers.get("x-test-role", "admin"))
        return AuthenticationResult(user=Principal(name="test", role=role), auth=None)


@pytest.fixture
def api(tmp_path: Path) -> Iterator[TestClient[Litestar]]:
    url = f"sqlite:///{tmp_path / 'index.db'}"
    migrate(url)
    engine = open_engine(url)
    app = Litestar(
        route_handlers=[DICOM_NODES_ROUTER],
        dependencies={"engine": Provide(lambda: engine, sync_to_thread=False)},
        middleware=[DefineMiddleware(_AsRole)],
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
    )
    with TestClient(app) as client:
        yield client
    engine.dispose()


class TestDicomNodesApi:
    def test_created_node_is_listed_and_fetched_by_ae_title(self, api: TestClient[Litestar]) -> None:
        created = api.post("/api/dicom-nodes", json={"ae_title": "STORESCP", "host": "127.0.0.1", "port": 11113})
        assert created.status_code == 201
        assert created.json()["allow_move"] is True
        listed = api.get("/api/dicom-nodes").json()
        assert [n["ae_title"] for n in listed] == ["STORESCP"]
        assert api.get("/api/dicom-nodes/STORESCP").json()["port"] == 11113

    def test_put_replaces_and_delete_removes(self, api: TestClient[Litestar]) -> None:
        api.post("/api/dicom-nodes", json={"ae_title": "A", "host": "h", "port": 1})
        replaced = api.put("/api/dicom-nodes/A", json={"ae_title": "A", "host": "h2", "port": 2, "allow_store": False})
        assert replaced.status_code == 200
        assert (replaced.json()["host"], replaced.json()["allow_store"]) == ("h2", False)
        assert api.delete("/api/dicom-nodes/A").status_code == 204
        assert api.get("/api/dicom-nodes/A").status_code == 404

    def test_bad_port_and_taken_title_are_client_errors_with_a_reason(self, api: TestClient[Litestar]) -> None:
        bad = api.post("/api/dicom-nodes", json={"ae_title": "A", "host": "h", "port": 70000})
        assert bad.status_code == 400
        assert "port" in bad.json()["detail"]
        api.post("/api/dicom-nodes", json={"ae_title": "A", "host": "h", "port": 1})
        taken = api.post("/api/dicom-nodes", json={"ae_title": "A", "host": "h", "port": 1})
        assert taken.status_code in (400, 409)
        assert "already registered" in taken.json()["detail"]

    def test_non_admin_is_forbidden(self, api: TestClient[Litestar]) -> None:
        response = api.get("/api/dicom-nodes", headers={"x-test-role": "viewer"})
        assert response.status_code == 403

    def test_routes_are_in_the_openapi_spec(self, api: TestClient[Litestar]) -> None:
        spec = api.app.openapi_schema.to_schema()
        assert {"get", "post"} <= set(spec["paths"]["/api/dicom-nodes"])
        assert {"get", "put", "delete"} <= set(spec["paths"]["/api/dicom-nodes/{ae_title}"])
        assert "DicomNodeIn" in spec["components"]["schemas"]
