"""Media types of the HTTP edge that are not about pixel data: DICOM JSON or XML answers (PS3.18 §8.7.3.2).

A search result or metadata answer is DICOM JSON (one array) or DICOM XML: a multipart/related body
with one `application/dicom+xml` part per result or instance, each a Native DICOM Model document
(PS3.19 Annex A).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final
from urllib.request import parse_http_list

from storage.dicom.dicom_xml import native_dicom_model
from storage.dicom.media_types import parse_content_type
from storage.dicom.multipart import MultipartWriter
from storage.errors import InvalidMediaType, NotAcceptable

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["DICOM_JSON", "DICOM_XML", "JSON", "negotiate_metadata", "xml_multipart"]

DICOM_JSON: Final = "application/dicom+json"
DICOM_XML: Final = "application/dicom+xml"
JSON: Final = "application/json"
_MULTIPART: Final = "multipart/related"
_XML_ANSWER: Final = f'{_MULTIPART}; type="{DICOM_XML}"'


@dataclass(frozen=True, slots=True)
class _Offer:
    """A representation the server can answer with, and the media ranges that name it.

    `ranges` maps (media type, asked inside multipart/related) to how specific that range is
    (RFC 9110 §12.5.1: a more specific range overrides a less specific one).
    """

    media_type: str
    ranges: Mapping[tuple[str, bool], int]


# The server's preference first: DICOM JSON is the default (PS3.18 §8.7.3.2); plain application/json is
# offered only when named. XML is always sent as multipart/related (PS3.18 §8.7.3.2), also when asked as a
# bare application/dicom+xml; multipart/related without a type names it too (the only multipart offered).
_OFFERS: Final = (
    _Offer(DICOM_JSON, {(DICOM_JSON, False): 3, ("application/*", False): 1, ("*/*", False): 0}),
    _Offer(
        DICOM_XML,
        {
            (DICOM_XML, True): 3,
            (DICOM_XML, False): 3,
            ("application/*", True): 2,
            ("*/*", True): 2,
            ("multipart/*", False): 1,
            ("*/*", False): 0,
        },
    ),
    _Offer(JSON, {(JSON, False): 3}),
)


@dataclass(frozen=True, slots=True)
class _Range:
    media_type: str
    multipart: bool
    q: float
    position: int


def negotiate_metadata(accept_headers: list[str]) -> str:
    """The media type to answer a QIDO or metadata request with: DICOM_JSON, JSON or DICOM_XML.

    Each representation takes the weight of the most specific range that names it; the heaviest wins,
    then the one named most specifically, then the one the client wrote first, then the server's
    preference. No Accept header means DICOM JSON. DICOM_XML is answered with `xml_multipart`.

    Raises:
        NotAcceptable: the client accepts none of them.
        InvalidMediaType: an Accept element is not a media range or its q value is malformed.
    """
    ranges = _parse(accept_headers)
    if not ranges:
        return DICOM_JSON
    candidates = [
        (rank, offer.media_type)
        for preference, offer in enumerate(_OFFERS)
        if (rank := _rank(offer, preference, ranges)) is not None
    ]
    if not candidates:
        asked = ", ".join(_describe(item) for item in ranges)
        raise NotAcceptable(
            f"cannot answer in {asked}; this resource is available as {DICOM_JSON} (the default), "
            f"{JSON} or {_XML_ANSWER}"
        )
    return max(candidates)[1]


def xml_multipart(objects: Iterable[Mapping[str, Any]]) -> tuple[bytes, str]:
    """A multipart/related body of one Native DICOM Model part per DICOM JSON object, and its Content-Type.

    Blocking (it builds every document): run it in a worker thread.
    """
    writer = MultipartWriter()
    chunks = [writer.part_header(DICOM_XML) + native_dicom_model(item) for item in objects]
    chunks.append(writer.closing_delimiter())
    return b"".join(chunks), writer.content_type(DICOM_XML)


def _parse(accept_headers: list[str]) -> list[_Range]:
    ranges: list[_Range] = []
    for header in accept_headers:
        for element in parse_http_list(header):
            if not element.strip():
                continue
            media_type, params = parse_content_type(element)
            multipart = media_type == _MULTIPART
            if multipart:
                media_type = params.get("type", "*/*").lower()
            ranges.append(_Range(media_type, multipart, _weight(params.get("q", "1"), element), len(ranges)))
    return ranges


def _rank(offer: _Offer, preference: int, ranges: list[_Range]) -> tuple[float, int, int, int] | None:
    """How much the client wants `offer`; None when no range names it or the most specific one says q=0."""
    named = [(offer.ranges[key], item) for item in ranges if (key := (item.media_type, item.multipart)) in offer.ranges]
    if not named:
        return None
    specificity, item = max(named, key=lambda pair: (pair[0], -pair[1].position))
    return None if item.q == 0 else (item.q, specificity, -item.position, -preference)


def _weight(value: str, element: str) -> float:
    try:
        q = float(value)
    except ValueError:
        q = -1.0
    if not 0 <= q <= 1:
        raise InvalidMediaType(f"{element!r}: q={value!r} is not a weight between 0 and 1 (RFC 9110 §12.4.2)")
    return q


def _describe(item: _Range) -> str:
    text = f'{_MULTIPART}; type="{item.media_type}"' if item.multipart else item.media_type
    return text if item.q == 1 else f"{text}; q={item.q:g}"
