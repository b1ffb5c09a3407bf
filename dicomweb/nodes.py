"""Management API of the AE registry: `/api/dicom-nodes` (admin only).

The DIMSE bridge reads this list to decide who may associate and where a C-MOVE goes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Final

import anyio.to_thread
from litestar import Router, delete, get, post, put
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, KwargDefinition
from sqlalchemy.engine import Engine

from auth.principals import Permission
from dicomweb.openapi import problems
from dicomweb.security import admin_only, require
from storage.index.nodes import (
    AE_TITLE_PATTERN,
    HOST_PATTERN,
    MAX_DESCRIPTION,
    NodeFields,
    create_node,
    delete_node,
    get_node,
    list_nodes,
    update_node,
)

if TYPE_CHECKING:
    from storage.index.nodes import DicomNode

__all__ = ["DICOM_NODES_ROUTER", "DicomNodeIn", "DicomNodeOut"]


@dataclass(frozen=True)
class DicomNodeIn:
    """A remote DICOM node to register, or its new fields (PUT replaces them all).

    `ae_title`: 1-16 characters (PS3.5 §6.2); `host`/`port`: where the bridge sends C-MOVE results;
    `allow_*`: whether this AE may store, query (C-FIND), and retrieve (C-MOVE / C-GET).
    """

    # The constraints are documented here and checked by storage.index.nodes, whose messages say more.
    ae_title: Annotated[str, KwargDefinition(pattern=AE_TITLE_PATTERN)]
    host: Annotated[str, KwargDefinition(pattern=HOST_PATTERN)]
    port: Annotated[int, KwargDefinition(ge=1, le=65535)]
    description: Annotated[str, KwargDefinition(max_length=MAX_DESCRIPTION)] = ""
    allow_store: bool = True
    allow_find: bool = True
    allow_move: bool = True


@dataclass(frozen=True)
class DicomNodeOut:
    """A registered remote DICOM node."""

    ae_title: str
    host: str
    port: int
    description: str
    allow_store: bool
    allow_find: bool
    allow_move: bool
    created_at: datetime


def _out(node: DicomNode) -> DicomNodeOut:
    return DicomNodeOut(
        ae_title=node.ae_title,
        host=node.host,
        port=node.port,
        description=node.description,
        allow_store=node.allow_store,
        allow_find=node.allow_find,
        allow_move=node.allow_move,
        created_at=node.created_at,
    )


def _fields(data: DicomNodeIn) -> NodeFields:
    return NodeFields(
        ae_title=data.ae_title,
        host=data.host,
        port=data.port,
        description=data.description,
        allow_store=data.allow_store,
        allow_find=data.allow_find,
        allow_move=data.allow_move,
    )


@get(
    "/",
    operation_id="ListDicomNodes",
    summary="List DICOM nodes",
    responses=problems(401, 403),
    guards=[require(Permission.READ_NODES)],
)
async def list_dicom_nodes(engine: NamedDependency[Engine]) -> list[DicomNodeOut]:
    """Every registered remote DICOM node, by AE title."""
    nodes = await anyio.to_thread.run_sync(list_nodes, engine)
    return [_out(node) for node in nodes]


@post(
    "/",
    operation_id="CreateDicomNode",
    summary="Register a DICOM node",
    responses=problems(400, 401, 403, 409),
    guards=[admin_only],
)
async def create_dicom_node(engine: NamedDependency[Engine], data: JSONBody[DicomNodeIn]) -> DicomNodeOut:
    """Register a remote DICOM node (201); 400 for a bad field or a taken AE title."""
    node = await anyio.to_thread.run_sync(create_node, engine, _fields(data))
    return _out(node)


@get(
    "/{ae_title:str}",
    operation_id="GetDicomNode",
    summary="Get a DICOM node",
    responses=problems(400, 401, 403, 404),
    guards=[require(Permission.READ_NODES)],
)
async def get_dicom_node(engine: NamedDependency[Engine], ae_title: FromPath[str]) -> DicomNodeOut:
    """One registered node; 404 when no node has that AE title."""
    node = await anyio.to_thread.run_sync(get_node, engine, ae_title)
    return _out(node)


@put(
    "/{ae_title:str}",
    operation_id="UpdateDicomNode",
    guards=[admin_only],
    summary="Replace a DICOM node's fields",
    responses=problems(400, 401, 403, 404, 409),
)
async def update_dicom_node(
    engine: NamedDependency[Engine], ae_title: FromPath[str], data: JSONBody[DicomNodeIn]
) -> DicomNodeOut:
    """Replace a node's fields (the AE title may change); 404 when unknown."""
    node = await anyio.to_thread.run_sync(update_node, engine, ae_title, _fields(data))
    return _out(node)


@delete(
    "/{ae_title:str}",
    operation_id="DeleteDicomNode",
    guards=[admin_only],
    summary="Remove a DICOM node",
    responses=problems(400, 401, 403, 404),
)
async def delete_dicom_node(engine: NamedDependency[Engine], ae_title: FromPath[str]) -> None:
    """Remove a node (204); 404 when unknown."""
    await anyio.to_thread.run_sync(delete_node, engine, ae_title)


DICOM_NODES_ROUTER: Final = Router(
    path="/api/dicom-nodes",
    route_handlers=[list_dicom_nodes, create_dicom_node, get_dicom_node, update_dicom_node, delete_dicom_node],
    tags=["admin"],
)
