"""The DICOM JSON tags of the Store Instances response (PS3.18 §10.5.3, Table 10.5.3-2).

Shared by the server that writes the response and the clients (import, bridge) that read it.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "ERROR_COMMENT",
    "FAILED_SOP_SEQUENCE",
    "FAILURE_REASON",
    "REFERENCED_SOP_CLASS_UID",
    "REFERENCED_SOP_INSTANCE_UID",
    "REFERENCED_SOP_SEQUENCE",
    "RETRIEVE_URL",
    "WARNING_REASON",
]

RETRIEVE_URL: Final = "00081190"
FAILED_SOP_SEQUENCE: Final = "00081198"
REFERENCED_SOP_SEQUENCE: Final = "00081199"
REFERENCED_SOP_CLASS_UID: Final = "00081150"
REFERENCED_SOP_INSTANCE_UID: Final = "00081155"
FAILURE_REASON: Final = "00081197"
WARNING_REASON: Final = "00081196"
# Not a PS3.18 attribute of the response, but where webpacs says why in words (the DIMSE Error
# Comment's tag), which is what clients show a person.
ERROR_COMMENT: Final = "00000902"
