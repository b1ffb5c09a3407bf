"""The form of blob keys, the same for every adapter: what `put_file` accepts and `keys` can list."""

from __future__ import annotations

import re
from typing import Final

from storage.errors import InvalidBlobKey

__all__ = ["MAX_KEY", "check_key", "check_prefix", "check_range"]

# Segments may not start with "." so that no key can name a staging folder or a temporary file,
# and "." / ".." can never appear; lengths fit S3 (1024-byte keys) and NAME_MAX (255).
_SEGMENT: Final = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")
_PARTIAL_SEGMENT: Final = re.compile(r"([A-Za-z0-9_-][A-Za-z0-9._-]*)?")
MAX_KEY: Final = 1024
_MAX_SEGMENT: Final = 255


def check_key(key: str) -> list[str]:
    """Return the '/'-separated segments of `key`.

    Raises:
        InvalidBlobKey: `key` is not of the allowed form.
    """
    segments = key.split("/")
    if len(key) > MAX_KEY or not all(
        len(segment) <= _MAX_SEGMENT and _SEGMENT.fullmatch(segment) for segment in segments
    ):
        raise InvalidBlobKey(
            f"blob key {key!r} is not allowed: use '/'-separated segments of A-Z a-z 0-9 . _ - "
            f"that do not start with '.', {MAX_KEY} characters at most"
        )
    return segments


def check_prefix(prefix: str) -> None:
    """Refuse a prefix that no allowed key can start with.

    Raises:
        InvalidBlobKey: `prefix` could not start any allowed key.
    """
    *folders, last = prefix.split("/")
    if not (
        len(prefix) <= MAX_KEY
        and all(_SEGMENT.fullmatch(folder) for folder in folders)
        and _PARTIAL_SEGMENT.fullmatch(last)
    ):
        raise InvalidBlobKey(f"blob key prefix {prefix!r} cannot start any allowed key")


def check_range(start: int, length: int | None) -> None:
    """Refuse a negative start or length.

    Raises:
        ValueError: naming the range.
    """
    if start < 0 or (length is not None and length < 0):
        raise ValueError(f"invalid byte range: start={start}, length={length}")
