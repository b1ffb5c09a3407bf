"""Auth's exception hierarchy."""

from __future__ import annotations

__all__ = [
    "AuthError",
    "DuplicateUser",
    "IdentityProviderUnavailable",
    "InvalidCredentials",
    "InvalidToken",
    "InvalidUser",
    "TooManyAttempts",
    "UnknownRole",
    "UnknownShareLink",
    "UnknownUser",
]


class AuthError(Exception):
    """Base of every error auth raises on purpose."""


class InvalidToken(AuthError):
    """The bearer token is unknown, revoked or expired."""


class IdentityProviderUnavailable(AuthError):
    """The OpenID Connect provider's discovery document or key set could not be fetched or used."""


class UnknownRole(AuthError):
    """A role name is not one of the defined roles."""


class InvalidCredentials(AuthError):
    """A login, refresh token, share link or second factor was not accepted."""


class InvalidUser(AuthError):
    """A user's name, password, role or study filter is not acceptable, or the name is taken."""


class DuplicateUser(InvalidUser):
    """A user of that name exists already."""


class UnknownUser(AuthError):
    """No user has that name."""


class UnknownShareLink(AuthError):
    """No share link has that id."""


class TooManyAttempts(AuthError):
    """Too many failed attempts from one account or address; the message says when to retry.

    Attributes:
        retry_after: seconds until another attempt is allowed.
    """

    def __init__(self, message: str, retry_after: int) -> None:
        """Keep the retry delay for the Retry-After header."""
        super().__init__(message)
        self.retry_after = retry_after
