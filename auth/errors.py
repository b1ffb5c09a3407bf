"""Auth's exception hierarchy."""

from __future__ import annotations

__all__ = ["AuthError", "InvalidToken", "UnknownRole"]


class AuthError(Exception):
    """Base of every error auth raises on purpose."""


class InvalidToken(AuthError):
    """The bearer token is unknown, revoked or expired."""


class UnknownRole(AuthError):
    """A role name is not one of the defined roles."""
