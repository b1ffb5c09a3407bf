"""Password and second-factor hashing: argon2id through argon2-cffi, with its current parameters."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

__all__ = ["MIN_PASSWORD_LENGTH", "hash_secret", "needs_rehash", "verify_secret"]

MIN_PASSWORD_LENGTH = 10

_hasher = PasswordHasher()  # RFC 9106 low-memory profile: argon2id, 64 MiB, 3 passes


def hash_secret(secret: str) -> str:
    """An argon2id hash of a password, PIN or birth date (salted; never reversible)."""
    return _hasher.hash(secret)


def verify_secret(stored_hash: str, secret: str) -> bool:
    """Whether `secret` matches `stored_hash` (constant-time inside argon2)."""
    try:
        return _hasher.verify(stored_hash, secret)
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(stored_hash: str) -> bool:
    """Whether a hash was made with weaker parameters than today's (rehash at the next login)."""
    return _hasher.check_needs_rehash(stored_hash)
