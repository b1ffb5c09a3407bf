"""Principals, roles and what each role may do."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final

__all__ = ["ROLE_PERMISSIONS", "Permission", "Principal", "PrincipalKind", "Role", "StudyFilter"]


class Permission(StrEnum):
    """An action on the archive."""

    READ = "read"  # search and retrieve
    STORE = "store"  # STOW-RS, import, C-STORE through the bridge
    DELETE = "delete"
    EDIT = "edit"  # change patient/study attributes, merge patients, move series (storage/study_edits.py)
    SHARE = "share"  # create and revoke share links
    READ_NODES = "read-nodes"  # read the DICOM node registry (the bridge checks callers against it)
    SEND = "send"  # send studies to other nodes; list and retry forwarding jobs
    DELIVER = "deliver"  # claim forwarding jobs and report their outcome (the bridge delivers them)
    METRICS = "metrics"  # read /metrics (a Prometheus scraper's token)
    ADMINISTER = "administer"  # users, tokens, DICOM nodes, audit log, settings


class Role(StrEnum):
    """What a user, token or identity-provider account is allowed to do (see ROLE_PERMISSIONS)."""

    ADMIN = "admin"
    MANAGER = "manager"
    RADIOLOGIST = "radiologist"
    REFERRING = "referring"  # a referring physician: reads (usually filtered to their patients), shares
    VIEWER = "viewer"
    UPLOADER = "uploader"
    SERVICE = "service"  # machine accounts such as the DIMSE bridge
    MONITORING = "monitoring"  # a metrics scraper: /metrics and nothing else


ROLE_PERMISSIONS: Final[dict[Role, frozenset[Permission]]] = {
    Role.ADMIN: frozenset(Permission),
    Role.MANAGER: frozenset(
        {
            Permission.READ,
            Permission.STORE,
            Permission.DELETE,
            Permission.EDIT,
            Permission.SHARE,
            Permission.SEND,
            Permission.READ_NODES,  # to pick where to send a study
        }
    ),
    Role.RADIOLOGIST: frozenset({Permission.READ, Permission.STORE, Permission.SHARE}),
    Role.REFERRING: frozenset({Permission.READ, Permission.SHARE}),
    Role.VIEWER: frozenset({Permission.READ}),
    Role.UPLOADER: frozenset({Permission.READ, Permission.STORE}),
    Role.SERVICE: frozenset({Permission.READ, Permission.STORE, Permission.READ_NODES, Permission.DELIVER}),
    Role.MONITORING: frozenset({Permission.METRICS}),
}


class PrincipalKind(StrEnum):
    """How a principal proved who it is."""

    TOKEN = "token"  # noqa: S105 - a kind of credential, not one; an API token (a user's personal one or a standalone machine token)
    USER = "user"  # a local user's login session
    OIDC = "oidc"  # a token from the configured identity provider
    SHARE = "share"  # a redeemed share link


StudyFilter = tuple[tuple[str, tuple[str, ...]], ...]
"""(study-level DICOM keyword, allowed values) pairs, ANDed: the studies a principal may see."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is making a request, as the handlers see it.

    Attributes:
        name: the user name, token name or share-link label, for logs and the audit trail.
        role: what the principal may do.
        kind: how it authenticated.
        token_id: the API token's id, for tokens.
        user_id: the local user's id, for users and their personal tokens.
        share_link_id: the share link's id, for share-link sessions.
        study_filter: the user's restriction; empty means every study.
        study_uid: the one study a share-link session may read; None means no such limit.
    """

    name: str
    role: Role
    kind: PrincipalKind = PrincipalKind.TOKEN
    token_id: int | None = None
    user_id: int | None = None
    share_link_id: int | None = None
    study_filter: StudyFilter = ()
    study_uid: str | None = None

    def may(self, permission: Permission) -> bool:
        """Whether this principal's role grants `permission`."""
        return permission in ROLE_PERMISSIONS[self.role]

    @property
    def restricted(self) -> bool:
        """Whether this principal sees only some studies."""
        return bool(self.study_filter) or self.study_uid is not None
