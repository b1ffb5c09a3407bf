"""User management for admins (`/api/users`): accounts, roles and study filters."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Final

import anyio.to_thread
import msgspec
from litestar import Request, Router, delete, get, patch, post
from litestar.params import KwargDefinition

from auth.principals import Role
from dicomweb.context import app_context
from dicomweb.openapi import problems
from dicomweb.security import admin_only

if TYPE_CHECKING:
    from auth.users import UserInfo

__all__ = ["USERS_ROUTER"]

_USERNAME: Final = r"^[A-Za-z0-9._@-]{1,128}$"
_Username = Annotated[str, msgspec.Meta(pattern=_USERNAME), KwargDefinition(pattern=_USERNAME)]
_Password = Annotated[
    str, msgspec.Meta(min_length=10, max_length=1024), KwargDefinition(min_length=10, max_length=1024)
]
StudyFilterBody = dict[str, list[str]]


@dataclass(frozen=True)
class UserIn:
    """A new user.

    `study_filter` restricts them to studies matching every key given (one of its values, wildcards
    allowed); keys: ReferringPhysicianName, InstitutionName, StudyDescription, ModalitiesInStudy.
    Without a password the account can log in only through the identity provider (OIDC).
    """

    username: _Username
    role: Role
    password: _Password | None = None
    study_filter: StudyFilterBody = field(default_factory=dict)


@dataclass(frozen=True)
class UserChange:
    """What to change; absent fields stay as they are."""

    role: Role | None = None
    password: _Password | None = None
    study_filter: StudyFilterBody | None = None
    disabled: bool | None = None


@dataclass(frozen=True)
class UserOut:
    """A user's public facts (never the password hash)."""

    username: str
    role: Role
    study_filter: StudyFilterBody
    created_at: datetime
    disabled: bool
    last_login_at: datetime | None


def _out(info: UserInfo) -> UserOut:
    return UserOut(info.username, info.role, info.study_filter, info.created_at, info.disabled, info.last_login_at)


@get("/", operation_id="ListUsers", summary="List users", responses=problems(401, 403))
async def list_users(request: Request[Any, Any, Any]) -> list[UserOut]:
    """Every local user, by name."""
    return [_out(info) for info in await anyio.to_thread.run_sync(app_context(request).access.users.list)]


@post("/", operation_id="CreateUser", summary="Create a user", responses=problems(400, 401, 403, 409))
async def create_user(request: Request[Any, Any, Any], data: UserIn) -> UserOut:
    """Add a local user with a role and an optional study filter."""
    users = app_context(request).access.users
    info = await anyio.to_thread.run_sync(
        lambda: users.create(data.username, data.password, data.role.value, data.study_filter)
    )
    return _out(info)


@get("/{username:str}", operation_id="GetUser", summary="Get a user", responses=problems(400, 401, 403, 404))
async def get_user(request: Request[Any, Any, Any], username: str) -> UserOut:
    """One user's public facts."""
    return _out(await anyio.to_thread.run_sync(app_context(request).access.users.get, username))


@patch("/{username:str}", operation_id="UpdateUser", summary="Change a user", responses=problems(400, 401, 403, 404))
async def update_user(request: Request[Any, Any, Any], username: str, data: UserChange) -> UserOut:
    """Change a user's role, password, study filter or disabled state (effective within seconds)."""
    users = app_context(request).access.users
    info = await anyio.to_thread.run_sync(
        lambda: users.update(
            username,
            password=data.password,
            role=None if data.role is None else data.role.value,
            study_filter=data.study_filter,
            disabled=data.disabled,
        )
    )
    return _out(info)


@delete("/{username:str}", operation_id="DeleteUser", summary="Delete a user", responses=problems(400, 401, 403, 404))
async def delete_user(request: Request[Any, Any, Any], username: str) -> None:
    """Remove a user with their sessions and personal tokens."""
    await anyio.to_thread.run_sync(app_context(request).access.users.delete, username)


USERS_ROUTER: Final = Router(
    path="/api/users",
    route_handlers=[list_users, create_user, get_user, update_user, delete_user],
    guards=[admin_only],
    tags=["users"],
)
