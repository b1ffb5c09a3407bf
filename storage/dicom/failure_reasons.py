"""Failure and warning reason codes of the Store Instances response (PS3.18 §10.5.3, PS3.4 Annex B.2.3)."""

from __future__ import annotations

from typing import Final

__all__ = [
    "CANNOT_UNDERSTAND",
    "DATA_SET_DOES_NOT_MATCH_SOP_CLASS",
    "ERROR_PROCESSING",
    "NOT_AUTHORIZED",
    "OUT_OF_RESOURCES",
    "SOP_CLASS_NOT_SUPPORTED",
    "TRANSFER_SYNTAX_NOT_SUPPORTED",
    "WARNING_COERCION",
]

ERROR_PROCESSING: Final = 0x0110  # Processing failure
SOP_CLASS_NOT_SUPPORTED: Final = 0x0122  # Referenced SOP Class not supported
NOT_AUTHORIZED: Final = 0x0124  # Refused: not authorized
OUT_OF_RESOURCES: Final = 0xA700  # Refused: out of resources
DATA_SET_DOES_NOT_MATCH_SOP_CLASS: Final = 0xA900  # Error: data set does not match SOP Class
CANNOT_UNDERSTAND: Final = 0xC000  # Error: cannot understand
TRANSFER_SYNTAX_NOT_SUPPORTED: Final = 0xC122  # Referenced Transfer Syntax not supported
WARNING_COERCION: Final = 0xB000  # Coercion of data elements
