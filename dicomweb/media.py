"""Media types of the HTTP edge that are not about pixel data: DICOM JSON answers (PS3.18 §8.7.3.2)."""

from __future__ import annotations

from typing import Final

from storage.errors import NotAcceptable

__all__ = ["DICOM_JSON", "negotiate_json"]

DICOM_JSON: Final = "application/dicom+json"
_JSON_ALTERNATIVES: Final = {DICOM_JSON: DICOM_JSON, "application/json": "application/json"}
_WILDCARDS: Final = frozenset({"*/*", "application/*"})


def negotiate_json(accept_headers: list[str]) -> str:
    """The media type to answer a QIDO or metadata request with.

    Raises:
        NotAcceptable: the client accepts neither DICOM JSON nor JSON (DICOM XML is not offered).
    """
    offered: list[str] = []
    for header in accept_headers:
        for item in header.split(","):
            media_type = item.split(";", 1)[0].strip().lower()
            if media_type:
                offered.append(media_type)
    if not offered:
        return DICOM_JSON
    for media_type in offered:
        if media_type in _JSON_ALTERNATIVES:
            return _JSON_ALTERNATIVES[media_type]
        if media_type in _WILDCARDS:
            return DICOM_JSON
    raise NotAcceptable(
        f"cannot answer in {', '.join(offered)}; this resource is available as {DICOM_JSON} (or application/json)"
    )
