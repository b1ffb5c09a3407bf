"""The AE registry: remote DICOM nodes the bridge may accept associations from and send C-MOVEs to.

A small table beside the index (`dicom_node`), with blocking CRUD functions over an Engine; the
HTTP edge (`dicomweb/nodes.py`) runs them in worker threads, the bridge reads them through the API.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import Boolean, Column, Integer, String, UniqueConstraint, text
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, Session, SQLModel, col, select

from storage.errors import ArchiveError, NotFound
from storage.index.database import write_transaction
from storage.index.models import UtcDateTime, id_type

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

__all__ = [
    "AE_TITLE_PATTERN",
    "HOST_PATTERN",
    "MAX_DESCRIPTION",
    "DicomNode",
    "DuplicateNode",
    "InvalidNode",
    "NodeFields",
    "create_node",
    "delete_node",
    "get_node",
    "list_nodes",
    "normalize_ae_title",
    "update_node",
]

# PS3.5 §6.2 (VR AE): 1-16 characters of the default repertoire without backslash or control
# characters; leading and trailing spaces are padding, not part of the title.
AE_TITLE_PATTERN: Final = r"^[\x20-\x5b\x5d-\x7e]{1,16}$"
HOST_PATTERN: Final = r"^[A-Za-z0-9._:\-\[\]]{1,253}$"
MAX_DESCRIPTION: Final = 1024
_AE_TITLE: Final = re.compile(AE_TITLE_PATTERN)
_HOST: Final = re.compile(HOST_PATTERN)


class InvalidNode(ArchiveError):
    """A node's AE title, host, port or description is not acceptable."""


class DuplicateNode(InvalidNode):
    """A node with that AE title is already registered (AE titles are unique)."""


class DicomNode(SQLModel, table=True):
    """One remote DICOM node and what it may do through the bridge."""

    __tablename__ = "dicom_node"
    __table_args__ = (UniqueConstraint("ae_title", name="uq_dicom_node_ae_title"),)

    id: int | None = Field(default=None, sa_column=Column("id", id_type(), primary_key=True, autoincrement=True))
    ae_title: str = Field(sa_column=Column("ae_title", String(16), nullable=False))
    host: str = Field(sa_column=Column("host", String(253), nullable=False))
    port: int = Field(sa_column=Column("port", Integer(), nullable=False))
    description: str = Field(
        default="", sa_column=Column("description", String(MAX_DESCRIPTION), nullable=False, server_default="")
    )
    allow_store: bool = Field(
        default=True, sa_column=Column("allow_store", Boolean(), nullable=False, server_default=text("true"))
    )
    allow_find: bool = Field(
        default=True, sa_column=Column("allow_find", Boolean(), nullable=False, server_default=text("true"))
    )
    allow_move: bool = Field(
        default=True, sa_column=Column("allow_move", Boolean(), nullable=False, server_default=text("true"))
    )
    created_at: datetime = Field(
        default_factory=lambda: datetime.now(UTC), sa_column=Column("created_at", UtcDateTime(), nullable=False)
    )


@dataclass(frozen=True, slots=True)
class NodeFields:
    """The writable fields of a node (create, or replace with PUT)."""

    ae_title: str
    host: str
    port: int
    description: str = ""
    allow_store: bool = True
    allow_find: bool = True
    allow_move: bool = True


def normalize_ae_title(value: str) -> str:
    """The AE title without padding.

    Raises:
        InvalidNode: not a valid AE title (PS3.5 §6.2).
    """
    stripped = value.strip()
    if not _AE_TITLE.match(stripped):
        msg = f"AE title {value!r} is not valid: use 1 to 16 printable ASCII characters, no backslash"
        raise InvalidNode(msg)
    return stripped


def _validated(fields: NodeFields) -> dict[str, Any]:
    if not _HOST.match(fields.host):
        msg = f"host {fields.host!r} is not a host name or IP address"
        raise InvalidNode(msg)
    if not 0 < fields.port < 65536:
        msg = f"port {fields.port} is out of range: use 1 to 65535"
        raise InvalidNode(msg)
    if len(fields.description) > MAX_DESCRIPTION:
        msg = f"description is {len(fields.description)} characters long: at most {MAX_DESCRIPTION}"
        raise InvalidNode(msg)
    if "\x00" in fields.description:  # PostgreSQL text cannot hold NUL
        msg = "description holds a NUL character; remove it"
        raise InvalidNode(msg)
    return {
        "ae_title": normalize_ae_title(fields.ae_title),
        "host": fields.host,
        "port": fields.port,
        "description": fields.description,
        "allow_store": fields.allow_store,
        "allow_find": fields.allow_find,
        "allow_move": fields.allow_move,
    }


def _find(session: Session, ae_title: str) -> DicomNode:
    node = session.exec(select(DicomNode).where(col(DicomNode.ae_title) == normalize_ae_title(ae_title))).first()
    if node is None:
        msg = f"no DICOM node with AE title {ae_title.strip()!r} is registered"
        raise NotFound(msg)
    return node


def list_nodes(engine: Engine) -> list[DicomNode]:
    """Every registered node, by AE title."""
    with Session(engine, expire_on_commit=False) as session:
        return list(session.exec(select(DicomNode).order_by(col(DicomNode.ae_title))).all())


def get_node(engine: Engine, ae_title: str) -> DicomNode:
    """The node with that AE title.

    Raises:
        InvalidNode: `ae_title` is not a valid AE title.
        NotFound: no such node.
    """
    with Session(engine, expire_on_commit=False) as session:
        return _find(session, ae_title)


def create_node(engine: Engine, fields: NodeFields) -> DicomNode:
    """Register a node.

    Raises:
        InvalidNode: a field is not acceptable.
        DuplicateNode: the AE title is taken.
    """
    node = DicomNode(**_validated(fields))
    with Session(engine, expire_on_commit=False) as session:
        session.add(node)
        try:
            session.commit()
        except IntegrityError as exc:
            msg = f"a DICOM node with AE title {node.ae_title!r} is already registered: update or delete it"
            raise DuplicateNode(msg) from exc
        session.refresh(node)
        return node


def update_node(engine: Engine, ae_title: str, fields: NodeFields) -> DicomNode:
    """Replace a node's fields (its AE title may change too).

    Raises:
        InvalidNode: a field is not acceptable.
        NotFound: no node has `ae_title`.
        DuplicateNode: the new AE title belongs to another node.
    """
    values = _validated(fields)
    # Read, then write: in one write transaction, so SQLite takes its write lock up front.
    try:
        with write_transaction(engine) as connection, Session(connection, expire_on_commit=False) as session:
            node = _find(session, ae_title)
            for name, value in values.items():
                setattr(node, name, value)
            session.flush()
            session.refresh(node)
    except IntegrityError as exc:
        msg = f"a DICOM node with AE title {values['ae_title']!r} is already registered"
        raise DuplicateNode(msg) from exc
    return node


def delete_node(engine: Engine, ae_title: str) -> None:
    """Remove a node.

    Raises:
        InvalidNode: `ae_title` is not a valid AE title.
        NotFound: no such node.
    """
    with write_transaction(engine) as connection, Session(connection) as session:
        session.delete(_find(session, ae_title))
        session.flush()
