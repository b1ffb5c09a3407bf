"""THE table of media types and transfer syntaxes, Accept parsing and content negotiation (PS3.18 §8.7).

`TRANSFER_SYNTAXES` is the one place that says which transfer syntaxes the archive stores and which
media type carries each one's frames and bulk data; everything else here is derived from it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.message import Message
from email.utils import collapse_rfc2231_value
from types import MappingProxyType
from typing import TYPE_CHECKING, Final, Literal
from urllib.request import parse_http_list

from pydicom.uid import UID

from storage.errors import InvalidMediaType, NotAcceptable

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence

__all__ = [
    "APPLICATION_DICOM",
    "APPLICATION_OCTET_STREAM",
    "APPLICATION_ZIP",
    "EXPLICIT_VR_LITTLE_ENDIAN",
    "RENDERED_MEDIA_TYPES",
    "TRANSFER_SYNTAXES",
    "AcceptableMediaType",
    "Resource",
    "SelectedMediaType",
    "TransferSyntax",
    "is_known_transfer_syntax",
    "negotiate",
    "negotiate_rendered",
    "parse_accept",
    "parse_content_type",
    "prefers_zip",
]

APPLICATION_DICOM: Final = "application/dicom"
APPLICATION_OCTET_STREAM: Final = "application/octet-stream"
EXPLICIT_VR_LITTLE_ENDIAN: Final = "1.2.840.10008.1.2.1"
# PS3.18 §8.7.3.1 (Table 8.7.3-1): a study or series as one zip of Part-10 files, for bulk download.
APPLICATION_ZIP: Final = "application/zip"
# PS3.18 Table 8.7.4-1: rendered media types offered, the default (image/jpeg) first.
RENDERED_MEDIA_TYPES: Final = ("image/jpeg", "image/png", "image/gif")

Resource = Literal["instance", "frame", "bulkdata"]
"""What is retrieved: a Part-10 instance, or pixel frames / bulk data cut out of one."""


@dataclass(frozen=True, slots=True)
class TransferSyntax:
    """One row of THE table: a storable transfer syntax and how its pixel data travels on the web.

    Attributes:
        uid: the Transfer Syntax UID (PS3.6 Table A-1).
        bulk_media_type: the media type of its frames and pixel bulk data (PS3.18 Table 8.7.3-4
            for native syntaxes, Table 8.7.3-5 for compressed ones).
        default: it is the default (D) transfer syntax of `bulk_media_type` for RESTful services.
        lossy: its pixel data may be lossy compressed, which PS3.18 §8.7.3 exempts from decoding to
            the default Explicit VR Little Endian.
    """

    uid: str
    bulk_media_type: str
    default: bool = False
    lossy: bool = False

    @property
    def name(self) -> str:
        """The name from pydicom's UID dictionary, e.g. "JPEG 2000 Image Compression (Lossless Only)"."""
        return UID(self.uid).name

    @property
    def native(self) -> bool:
        """Pixel data is not encapsulated: frames are plain little-endian octets once decoded."""
        return self.bulk_media_type == APPLICATION_OCTET_STREAM


_OCTETS = APPLICATION_OCTET_STREAM

# THE table. Every syntax here is accepted on STOW-RS and served as application/dicom in any syntax
# the instance can be given (PS3.18 Table 8.7.3-2). Frames and bulk data use `bulk_media_type`
# (Table 8.7.3-4 native, Table 8.7.3-5 compressed; the default D row of each media type first).
# JPIP-referenced and SMPTE ST 2110 syntaxes are left out: their objects carry no pixel data to serve.
TRANSFER_SYNTAXES: Final[Mapping[str, TransferSyntax]] = MappingProxyType(
    {
        row.uid: row
        for row in (
            TransferSyntax("1.2.840.10008.1.2.1", _OCTETS, default=True),
            # Implicit VR LE is what modalities send over DIMSE, relayed as received by the bridge; big
            # endian is retired but still found in old archives. Both are stored, never served (§8.7.3).
            TransferSyntax("1.2.840.10008.1.2", _OCTETS),
            TransferSyntax("1.2.840.10008.1.2.1.99", _OCTETS),
            TransferSyntax("1.2.840.10008.1.2.2", _OCTETS),
            TransferSyntax("1.2.840.10008.1.2.4.70", "image/jpeg", default=True),
            TransferSyntax("1.2.840.10008.1.2.4.50", "image/jpeg", lossy=True),
            TransferSyntax("1.2.840.10008.1.2.4.51", "image/jpeg", lossy=True),
            TransferSyntax("1.2.840.10008.1.2.4.57", "image/jpeg"),
            TransferSyntax("1.2.840.10008.1.2.5", "image/dicom-rle", default=True),
            TransferSyntax("1.2.840.10008.1.2.4.80", "image/jls", default=True),
            TransferSyntax("1.2.840.10008.1.2.4.81", "image/jls", lossy=True),
            TransferSyntax("1.2.840.10008.1.2.4.90", "image/jp2", default=True),
            TransferSyntax("1.2.840.10008.1.2.4.91", "image/jp2", lossy=True),
            TransferSyntax("1.2.840.10008.1.2.4.92", "image/jpx", default=True),
            TransferSyntax("1.2.840.10008.1.2.4.93", "image/jpx", lossy=True),
            TransferSyntax("1.2.840.10008.1.2.4.201", "image/jphc", default=True),
            TransferSyntax("1.2.840.10008.1.2.4.202", "image/jphc"),
            TransferSyntax("1.2.840.10008.1.2.4.203", "image/jphc", lossy=True),
            TransferSyntax("1.2.840.10008.1.2.4.100", "video/mpeg", default=True, lossy=True),
            TransferSyntax("1.2.840.10008.1.2.4.100.1", "video/mpeg", lossy=True),
            TransferSyntax("1.2.840.10008.1.2.4.101", "video/mpeg", lossy=True),
            TransferSyntax("1.2.840.10008.1.2.4.101.1", "video/mpeg", lossy=True),
            TransferSyntax("1.2.840.10008.1.2.4.102", "video/mp4", default=True, lossy=True),
            TransferSyntax("1.2.840.10008.1.2.4.102.1", "video/mp4", lossy=True),
            TransferSyntax("1.2.840.10008.1.2.4.103", "video/mp4", lossy=True),
            TransferSyntax("1.2.840.10008.1.2.4.103.1", "video/mp4", lossy=True),
            TransferSyntax("1.2.840.10008.1.2.4.104", "video/mp4", lossy=True),
            TransferSyntax("1.2.840.10008.1.2.4.104.1", "video/mp4", lossy=True),
            TransferSyntax("1.2.840.10008.1.2.4.105", "video/mp4", lossy=True),
            TransferSyntax("1.2.840.10008.1.2.4.105.1", "video/mp4", lossy=True),
            TransferSyntax("1.2.840.10008.1.2.4.106", "video/mp4", lossy=True),
            TransferSyntax("1.2.840.10008.1.2.4.106.1", "video/mp4", lossy=True),
            TransferSyntax("1.2.840.10008.1.2.4.107", "video/H265", default=True, lossy=True),
            TransferSyntax("1.2.840.10008.1.2.4.108", "video/H265", lossy=True),
        )
    }
)

# PS3.18 §8.7.3: "Implicit VR Little Endian and Explicit VR Big Endian shall not be used with Web Services".
_NOT_FOR_WEB_SERVICES: Final = frozenset({"1.2.840.10008.1.2", "1.2.840.10008.1.2.2"})

# Compressed bulk data media type -> its transfer syntaxes, the default first (Table 8.7.3-5).
_COMPRESSED_SYNTAXES: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType(
    {
        media_type: tuple(
            row.uid
            for row in sorted(TRANSFER_SYNTAXES.values(), key=lambda row: not row.default)
            if row.bulk_media_type == media_type
        )
        for media_type in dict.fromkeys(row.bulk_media_type for row in TRANSFER_SYNTAXES.values())
        if media_type != _OCTETS
    }
)

# Names used before PS3.18 registered the media types, still sent by dicomweb-client and older viewers.
_MEDIA_TYPE_ALIASES: Final = MappingProxyType(
    {
        "image/x-dicom-rle": "image/dicom-rle",
        "image/x-jls": "image/jls",
        "video/mpeg2": "video/mpeg",
    }
)

_TCHARS = r"[!#$%&'*+.^_`|~0-9a-z-]+"
_MEDIA_TYPE = re.compile(rf"{_TCHARS}/{_TCHARS}")
# The Content-Type values clients send, split without email.message (several times faster; STOW
# parses one per part): a media type, then name=value parameters, plain or quoted without escapes.
# Anything else (RFC 2231 names*, escaped quotes, <...> which email unwraps, stray semicolons) takes
# the email parser, so both ways give the same answer.
_PLAIN_PARAMETER = r'\s*;\s*([!#$%&\'+.^_`|~0-9a-z-]+)\s*=\s*(?:"([^"\\<>]*)"|([^\s;"\\<>]*))'
_PLAIN_PARAMETERS = re.compile(_PLAIN_PARAMETER, re.ASCII | re.IGNORECASE)
_PLAIN_CONTENT_TYPE = re.compile(rf"\s*({_TCHARS}/{_TCHARS})((?:{_PLAIN_PARAMETER})*)\s*", re.ASCII | re.IGNORECASE)
_QVALUE = re.compile(r"0(\.[0-9]{0,3})?|1(\.0{0,3})?")  # RFC 9110 §12.4.2
_ANY = "*"


def is_known_transfer_syntax(transfer_syntax_uid: str) -> bool:
    """Whether the archive stores instances in this transfer syntax (STOW-RS, PS3.18 §10.5)."""
    return transfer_syntax_uid in TRANSFER_SYNTAXES


def parse_content_type(value: str) -> tuple[str, dict[str, str]]:
    """Split a Content-Type (or one Accept element) into its media type and parameters.

    The media type and parameter names are lower-cased; quoted values are unquoted. Unquoted values
    holding a "/" (`type=application/dicom`, sent by most DICOMweb clients) are accepted.

    Raises:
        InvalidMediaType: the value does not start with a `type/subtype` media type.
    """
    plain = _PLAIN_CONTENT_TYPE.fullmatch(value)
    if plain is not None:
        return plain[1].lower(), {
            name.lower(): (quoted or bare).strip() for name, quoted, bare in _PLAIN_PARAMETERS.findall(plain[2])
        }
    message = Message()
    message["content-type"] = value
    try:
        first, *rest = message.get_params(failobj=[("", "")], header="content-type")
    except (TypeError, ValueError):
        # The email parser trips over some malformed RFC 2231 parameters ("x*; x*0=v").
        first, rest = ("", ""), []
    media_type = first[0].strip().lower()
    if not _MEDIA_TYPE.fullmatch(media_type):
        raise InvalidMediaType(
            f"{value!r} is not a media type: expected type/subtype[; name=value...], "
            'e.g. multipart/related; type="application/dicom"'
        )
    return media_type, {name: collapse_rfc2231_value(raw).strip() for name, raw in rest if name}


@dataclass(frozen=True, slots=True)
class AcceptableMediaType:
    """One media range of an Accept header (an Acceptable Media Type, PS3.18 §8.7.5).

    Attributes:
        media_type: lower-case `type/subtype` or range (`image/*`, `*/*`); for
            `multipart/related` the value of its `type` parameter.
        transfer_syntax: a Transfer Syntax UID, "*" (any: as stored), or None (the media
            type's default, PS3.18 §8.7.3.5.2).
        q: the weight, 0 < q <= 1 (RFC 9110 §12.4.2).
        multipart: asked inside `multipart/related`.
    """

    media_type: str
    transfer_syntax: str | None = None
    q: float = 1.0
    multipart: bool = False

    def __str__(self) -> str:
        """The range as a client would write it, for messages."""
        text = f'multipart/related; type="{self.media_type}"' if self.multipart else self.media_type
        return text if self.transfer_syntax is None else f"{text}; transfer-syntax={self.transfer_syntax}"


@dataclass(frozen=True, slots=True)
class SelectedMediaType:
    """The representation chosen for a response part (Selected Media Type and Transfer Syntax, §8.7.8).

    Attributes:
        media_type: concrete `type/subtype` of the part, e.g. "application/dicom" or "image/jp2".
        transfer_syntax_uid: the transfer syntax the part is encoded in.
        multipart: the winning range was asked inside `multipart/related`; a single part answer is
            only allowed when False and the target is a single item (PS3.18 §10.4.4).
    """

    media_type: str
    transfer_syntax_uid: str
    multipart: bool


def parse_accept(values: str | Iterable[str]) -> list[AcceptableMediaType]:
    """Parse one or several Accept header values into acceptable media types, most preferred first.

    Ranges are ordered by weight, ties keeping the order the client wrote them (RFC 9110 §12.5.1).
    Ranges with q=0 ("not acceptable") are dropped. An empty result means "anything" to `negotiate`.

    Raises:
        InvalidMediaType: an element is not a media range, or its q value is malformed.
    """
    headers = [values] if isinstance(values, str) else values
    acceptable: list[AcceptableMediaType] = []
    for header in headers:
        for element in parse_http_list(header):
            media_type, params = parse_content_type(element)
            q = _weight(params.get("q", "1"), element)
            if q == 0:
                continue
            multipart = media_type == "multipart/related"
            if multipart:
                # RFC 2387 makes `type` required; a bare multipart/related is read as "any part type".
                media_type = params.get("type", "*/*").lower()
                if not _MEDIA_TYPE.fullmatch(media_type):
                    raise InvalidMediaType(f"{element!r}: type={media_type!r} is not a media type")
            media_type = _MEDIA_TYPE_ALIASES.get(media_type, media_type)
            transfer_syntax = params.get("transfer-syntax") or None
            acceptable.append(AcceptableMediaType(media_type, transfer_syntax, q, multipart))
    acceptable.sort(key=lambda choice: -choice.q)
    return acceptable


def negotiate(
    acceptable: Sequence[AcceptableMediaType],
    stored_transfer_syntax: str,
    resource: Resource,
    can_transcode: Callable[[str, str], bool],
) -> SelectedMediaType:
    """Choose the media type and transfer syntax of a retrieved resource (PS3.18 §8.7.8).

    Ranges are tried in order; the first one the archive can serve wins. `transfer-syntax=*` keeps the
    stored syntax (no decoding). A range without transfer syntax asks for its media type's default:
    Explicit VR Little Endian for application/dicom and application/octet-stream, when the stored
    syntax is native or `can_transcode` says so; for a compressed media type (image/jp2...) the stored
    syntax when it is one of that type's, else the type's default. Native stored syntaxes (implicit
    VR, big endian, deflated) are always re-encoded to Explicit VR Little Endian, which the caller
    must be able to do without a codec.

    Args:
        acceptable: from `parse_accept`; empty means any media type (no Accept header).
        stored_transfer_syntax: the Transfer Syntax UID the instance is stored in.
        resource: "instance" for application/dicom; "frame" or "bulkdata" for pixel data.
        can_transcode: whether the server can turn pixel data from the first syntax into the second.

    Raises:
        NotAcceptable: no range can be served; the message names the stored syntax and what to ask for.
    """
    stored = stored_transfer_syntax
    choices = acceptable or (AcceptableMediaType("*/*"),)
    for choice in choices:
        for media_type in _offered_media_types(resource, stored, choice.transfer_syntax):
            if not _in_range(media_type, choice.media_type):
                continue
            transfer_syntax = _transfer_syntax_for(media_type, choice.transfer_syntax, stored, can_transcode)
            if transfer_syntax is not None:
                return SelectedMediaType(media_type, transfer_syntax, choice.multipart)
    asked = ", ".join(str(choice) for choice in choices)
    raise NotAcceptable(
        f"cannot serve this {resource} as {asked}: it is stored as {_describe(stored)}; "
        f"ask with transfer-syntax=* or {_hint(resource, stored)}"
    )


def prefers_zip(acceptable: Sequence[AcceptableMediaType]) -> bool:
    """Whether the most preferred range that names a type the archive offers is application/zip.

    Only an explicit application/zip counts: wildcards keep the multipart/related default.
    """
    for choice in acceptable:
        if choice.media_type == APPLICATION_ZIP and not choice.multipart:
            return True
        if _in_range(APPLICATION_DICOM, choice.media_type):
            return False
    return False


def negotiate_rendered(acceptable: Sequence[AcceptableMediaType], *, single: bool) -> tuple[str, bool]:
    """The rendered media type to answer with, and whether the answer is multipart/related (§8.7.4).

    Args:
        acceptable: from `parse_accept`; empty means image/jpeg.
        single: the target is one image (an instance or one frame); a study or series always
            answers multipart/related.

    Raises:
        NotAcceptable: no range names a rendered media type.
    """
    for choice in acceptable or (AcceptableMediaType("*/*"),):
        for media_type in RENDERED_MEDIA_TYPES:
            if _in_range(media_type, choice.media_type):
                return media_type, choice.multipart or not single
    asked = ", ".join(str(choice) for choice in acceptable)
    raise NotAcceptable(f"rendered images are offered as {', '.join(RENDERED_MEDIA_TYPES)}, not as {asked}")


def _weight(value: str, element: str) -> float:
    if not _QVALUE.fullmatch(value):
        raise InvalidMediaType(f"{element!r}: q={value!r} is not a weight between 0 and 1 (RFC 9110 §12.4.2)")
    return float(value)


def _in_range(media_type: str, media_range: str) -> bool:
    concrete = media_type.lower()  # the table spells "video/H265" as PS3.18 does; ranges are lower-cased
    if media_range in ("*/*", concrete):
        return True
    kind, _, subtype = media_range.partition("/")
    return subtype == _ANY and concrete.startswith(kind + "/")


def _offered_media_types(resource: Resource, stored: str, requested: str | None) -> tuple[str, ...]:
    """The media types the resource can be served as, the server's preference first."""
    if resource == "instance":
        return (APPLICATION_DICOM,)
    row = TRANSFER_SYNTAXES.get(stored)
    stored_media_type = row.bulk_media_type if row is not None else _OCTETS
    # "*" asks for no decoding, so the stored data's own media type comes first; otherwise the
    # uncompressed default of Table 8.7.3-4 does.
    first = (stored_media_type, _OCTETS) if requested == _ANY else (_OCTETS, stored_media_type)
    return tuple(dict.fromkeys((*first, *_COMPRESSED_SYNTAXES)))


def _transfer_syntax_for(
    media_type: str, requested: str | None, stored: str, can_transcode: Callable[[str, str], bool]
) -> str | None:
    """The transfer syntax to serve `media_type` in for the requested one, or None when impossible."""
    native = _is_native(stored)

    def producible(target: str) -> bool:
        return target == stored or (target == EXPLICIT_VR_LITTLE_ENDIAN and native) or can_transcode(stored, target)

    if media_type == APPLICATION_DICOM:
        if requested == _ANY:
            return EXPLICIT_VR_LITTLE_ENDIAN if stored in _NOT_FOR_WEB_SERVICES else stored
        if requested is None:
            if producible(EXPLICIT_VR_LITTLE_ENDIAN):
                return EXPLICIT_VR_LITTLE_ENDIAN
            # PS3.18 §8.7.3: the default does not apply when only lossy compressed pixel data exists.
            return stored if _is_lossy(stored) else None
        return requested if requested not in _NOT_FOR_WEB_SERVICES and producible(requested) else None
    if media_type == _OCTETS:
        if requested == _ANY:
            return EXPLICIT_VR_LITTLE_ENDIAN if native else stored
        if requested in (None, EXPLICIT_VR_LITTLE_ENDIAN):
            return EXPLICIT_VR_LITTLE_ENDIAN if producible(EXPLICIT_VR_LITTLE_ENDIAN) else None
        return requested if requested == stored else None
    syntaxes = _COMPRESSED_SYNTAXES[media_type]
    if requested is None or requested == _ANY:
        if stored in syntaxes:
            return stored
        targets = syntaxes if requested == _ANY else syntaxes[:1]
        return next((target for target in targets if can_transcode(stored, target)), None)
    return requested if requested in syntaxes and producible(requested) else None


def _is_native(transfer_syntax_uid: str) -> bool:
    row = TRANSFER_SYNTAXES.get(transfer_syntax_uid)
    return row is not None and row.native


def _is_lossy(transfer_syntax_uid: str) -> bool:
    row = TRANSFER_SYNTAXES.get(transfer_syntax_uid)
    return row is not None and row.lossy


def _describe(transfer_syntax_uid: str) -> str:
    name = UID(transfer_syntax_uid).name
    return transfer_syntax_uid if name == transfer_syntax_uid else f"{name} ({transfer_syntax_uid})"


def _hint(resource: Resource, stored: str) -> str:
    """What to ask for to get the stored data as it is."""
    row = TRANSFER_SYNTAXES.get(stored)
    if row is not None and row.native:
        return f"transfer-syntax={EXPLICIT_VR_LITTLE_ENDIAN}"
    if resource == "instance" or row is None:
        return f"transfer-syntax={stored}"
    return row.bulk_media_type
