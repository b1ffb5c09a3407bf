"""The form of a DICOM UID (PS3.5 §9.1)."""

from __future__ import annotations

import re
from typing import Final

__all__ = ["UID_MAX_LENGTH", "is_valid_uid"]

UID_MAX_LENGTH: Final = 64
# Dot-separated numeric components; a component has no leading zero unless it is "0".
_UID: Final = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")


def is_valid_uid(value: str) -> bool:
    """Whether `value` is a well-formed UID of at most 64 characters."""
    return len(value) <= UID_MAX_LENGTH and _UID.fullmatch(value) is not None
