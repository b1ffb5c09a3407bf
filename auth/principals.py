"""Principals, roles and what each role may do."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final

__all__ = ["ROLE_PERMISSIONS", "Permission", "Principal", "Role"]


class Permission(StrEnum):
    """An action on the archive."""

    READ = "read"  # search and retrieve
    STORE = "store"  # STOW-RS, import
    DELETE = "delete"
    ADMINISTER = "administer"  # tokens, DICOM nodes, settings


class Role(StrEnum):
    """A role an API token is minted with (a richer user model comes with access control)."""

    ADMIN = "admin"
    UPLOADER = "uploader"
    VIEWER = "viewer"


ROLE_PERMISSIONS: Final[dict[Role, frozenset[Permission]]] = {
    Role.ADMIN: frozenset(Permission),
    Role.UPLOADER: frozenset({Permission.READ, Permission.STORE}),
    Role.VIEWER: frozenset({Permission.READ}),
}


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is making a request, as the handlers see it."""

    name: str
    role: Role
    token_id: int | None = None

    def may(self, permission: Permission) -> bool:
        """Whether this principal's role grants `permission`."""
        return permission in ROLE_PERMISSIONS[self.role]
