"""Access control as one object: every kind of bearer credential in, one Principal out."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import TYPE_CHECKING, Final, TypeVar

from auth.audit import AuditLog
from auth.errors import InvalidCredentials, InvalidToken
from auth.oidc import OidcVerifier
from auth.principals import Principal, PrincipalKind, Role
from auth.rate_limit import FailureLimiter
from auth.sessions import SessionService
from auth.share_links import ShareLinkService
from auth.tokens import TOKEN_PREFIX, TokenService
from auth.users import UserService

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlalchemy import Engine

    from auth.share_links import ShareLinkGrant

__all__ = ["SHARE_SESSION_LIFETIME", "AccessControl"]

T = TypeVar("T")

# A share-link session is short (the page can redeem again while the link lives).
SHARE_SESSION_LIFETIME: Final = timedelta(hours=4)


@dataclass
class AccessControl:
    """The services behind authentication, built once per process over the shared database."""

    tokens: TokenService
    users: UserService
    sessions: SessionService
    share_links: ShareLinkService
    audit: AuditLog
    oidc: OidcVerifier | None = None
    # Failed logins and share-link second factors: few per account or link, more per client address
    # (a hospital's NAT puts many honest users behind one address).
    account_failures: FailureLimiter = field(default_factory=lambda: FailureLimiter(max_failures=5))
    address_failures: FailureLimiter = field(default_factory=lambda: FailureLimiter(max_failures=50))

    @classmethod
    def open(cls, engine: Engine, oidc: OidcVerifier | None = None) -> AccessControl:
        """The services over `engine`'s tables (the schema must be migrated)."""
        return cls(
            tokens=TokenService(engine),
            users=UserService(engine),
            sessions=SessionService(engine),
            share_links=ShareLinkService(engine),
            audit=AuditLog(engine),
            oidc=oidc,
        )

    def authenticate(self, bearer: str) -> Principal:
        """The principal a bearer credential stands for.

        The credential is an API token, one of our session tokens (a login or a redeemed share
        link), or a token of the configured identity provider.

        Raises:
            InvalidToken: the credential is not valid (the message says why and what to do).
            IdentityProviderUnavailable: the identity provider could not be reached to check it.
        """
        if bearer.startswith(TOKEN_PREFIX):
            principal = self.tokens.verify(bearer)
            if principal.user_id is None:
                return principal
            owner = self._user(principal.user_id, PrincipalKind.TOKEN)
            return replace(owner, token_id=principal.token_id)
        if self.oidc is not None and self.oidc.looks_like_issuer_token(bearer):
            identity = self.oidc.verify(bearer)
            try:
                return self.users.principal_by_name(identity.username, Role(identity.role), PrincipalKind.OIDC)
            except InvalidCredentials as exc:
                raise InvalidToken(str(exc)) from exc
        claims = self.sessions.verify(bearer)
        if claims.kind == "share":
            if claims.study_uid is None or not self.share_links.is_active(claims.subject):
                raise InvalidToken("the share link behind this session was revoked or has expired")
            return Principal(
                name=f"share-link-{claims.subject}",
                role=Role.VIEWER,
                kind=PrincipalKind.SHARE,
                share_link_id=claims.subject,
                study_uid=claims.study_uid,
            )
        return self._user(claims.subject, PrincipalKind.USER)

    def cached(self, bearer: str) -> Principal | None:
        """The principal of an API token `authenticate` accepted moments ago, from memory alone.

        None when the answer needs the database or the identity provider: then call `authenticate`
        (blocking). Every request of a script or of the DIMSE bridge carries the same token, so
        this spares them a worker thread each.
        """
        if not bearer.startswith(TOKEN_PREFIX):
            return None
        principal = self.tokens.cached(bearer)
        if principal is None or principal.user_id is None:
            return principal
        owner = self.users.cached(principal.user_id, PrincipalKind.TOKEN)
        return None if owner is None else replace(owner, token_id=principal.token_id)

    def attempt(self, key: str, address: str, check: Callable[[], T]) -> T:
        """Run a credential check (a password, a share link and its factor) under brute-force limits.

        Failures count against `key` (the account or link) and the client `address`; a success
        clears the key.

        Raises:
            TooManyAttempts: the key or the address is locked out for now.
            InvalidCredentials: `check` refused the credentials.
        """
        self.account_failures.check(key)
        self.address_failures.check(address)
        try:
            result = check()
        except InvalidCredentials:
            self.account_failures.fail(key)
            self.address_failures.fail(address)
            raise
        self.account_failures.succeed(key)
        return result

    def share_session(self, grant: ShareLinkGrant) -> tuple[str, int]:
        """An access token for a redeemed link: (token, seconds it lives)."""
        lifetime = SHARE_SESSION_LIFETIME
        return self.sessions.issue_access("share", grant.link_id, study_uid=grant.study_uid, lifetime=lifetime), int(
            lifetime.total_seconds()
        )

    def _user(self, user_id: int, kind: PrincipalKind) -> Principal:
        try:
            return self.users.principal(user_id, kind)
        except InvalidCredentials as exc:
            raise InvalidToken(str(exc)) from exc
