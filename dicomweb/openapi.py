"""What the generated OpenAPI spec cannot learn from handler signatures (issue #3).

DICOMweb handlers build their responses by hand (DICOM JSON bytes, multipart streams) and STOW-RS
reads its body as a raw stream, so Litestar alone would describe them as JSON strings. The decorators
name the real media types with the helpers here; the security scheme and the error body are declared
once, as OpenAPI components.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Final, TypedDict

from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.openapi.spec import (
    Components,
    OpenAPIFormat,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    RequestBody,
    Schema,
    SecurityScheme,
)
from litestar.params import KwargDefinition

from dicomweb.errors import PROBLEM_JSON, Problem
from dicomweb.media import DICOM_JSON, DICOM_XML, JSON

__all__ = [
    "BEARER",
    "DicomAttribute",
    "MetadataOperation",
    "PublicOperation",
    "StoreOperation",
    "binary",
    "dicom_json",
    "multipart",
    "openapi_config",
    "problems",
]

BEARER: Final = "bearerAuth"
MULTIPART_DICOM: Final = 'multipart/related; type="application/dicom"'

# A byte stream (a Part-10 file, a multipart body, pixel data): `format: binary` tells generators
# to hand the raw bytes to the caller instead of decoding text.
_Binary = Annotated[bytes, KwargDefinition(format=OpenAPIFormat.BINARY.value)]
_BINARY_SCHEMA: Final = Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.BINARY)


class _VR(TypedDict):
    vr: str


class DicomAttribute(_VR, total=False):
    """One attribute of a DICOM JSON object (PS3.18 §F.2.2), keyed by its tag as 8 hexadecimal digits.

    `Value` holds the values (person names as {"Alphabetic": ...}, sequence items as nested DICOM JSON
    objects); a binary value is a `BulkDataURI` to retrieve or `InlineBinary` (base64).
    """

    # total=False rather than NotRequired: postponed annotations hide NotRequired from TypedDict.
    Value: list[Any]
    BulkDataURI: str
    InlineBinary: str


# When each problem status is answered; the handlers' docstrings say what is specific to them.
_PROBLEM_WHEN: Final = {
    400: "Bad request: an unknown or malformed matching key, UID, date, frame list or body field.",
    401: "No bearer token, or one that is unknown, expired or revoked; or wrong credentials.",
    403: "The token's role lacks the permission this operation needs.",
    404: "What the path names does not exist, or is outside what this principal may see.",
    406: "None of the media types in Accept can be served.",
    409: "The request conflicts with what is stored (e.g. an AE title already registered).",
    413: "The body is larger than this server accepts.",
    415: 'The body is not multipart/related; type="application/dicom".',
    416: "The Range lies outside the value, or is not one bytes= range.",
    429: "Too many failed attempts from this account or address; Retry-After says when to try again.",
    503: "The blob store or the database does not answer; try again later.",
}


def problems(*codes: int) -> dict[int, ResponseSpec]:
    """Error responses for `codes`, each an RFC 9457 problem (application/problem+json)."""
    return {
        code: ResponseSpec(Problem, description=_PROBLEM_WHEN[code], media_type=PROBLEM_JSON, generate_examples=False)
        for code in codes
    }


def dicom_json(description: str, *, array: bool = True) -> ResponseSpec:
    """A DICOM JSON response (PS3.18 §F.2): an array of objects, or one object when not `array`."""
    container: Any = list[dict[str, DicomAttribute]] if array else dict[str, DicomAttribute]
    return ResponseSpec(container, description=description, media_type=DICOM_JSON, generate_examples=False)


def multipart(part_type: str, description: str) -> ResponseSpec:
    """A multipart/related response whose parts are `part_type` (PS3.18 §8.7.3.3.1)."""
    return binary(f'multipart/related; type="{part_type}"', description)


def binary(media_type: str, description: str) -> ResponseSpec:
    """A response of raw bytes in `media_type`."""
    return ResponseSpec(_Binary, description=description, media_type=media_type, generate_examples=False)


@dataclass
class PublicOperation(Operation):
    """An operation reachable without a token: `security: []` lifts the global bearer requirement."""

    def __post_init__(self) -> None:
        self.security = []


@dataclass
class MetadataOperation(Operation):
    """QIDO-RS and metadata answers (PS3.18 §8.7.3.2): DICOM JSON, or plain JSON or DICOM XML when asked.

    DICOM XML comes as multipart/related, one Native DICOM Model document (PS3.19 Annex A) per part.
    """

    def __post_init__(self) -> None:
        answered = (self.responses or {}).get("200")
        if isinstance(answered, OpenAPIResponse) and answered.content and DICOM_JSON in answered.content:
            answered.content[JSON] = answered.content[DICOM_JSON]
            answered.content[f'multipart/related; type="{DICOM_XML}"'] = OpenAPIMediaType(schema=_BINARY_SCHEMA)


@dataclass
class StoreOperation(Operation):
    """STOW-RS (PS3.18 §10.5): the request body and the 400 answer, which Litestar cannot infer.

    The handler reads the body as a stream, so no `data` parameter describes it; a 400 is a Store
    Instances response (DICOM JSON) when some parts were read before the body broke, else a problem.
    """

    def __post_init__(self) -> None:
        self.request_body = RequestBody(
            required=True,
            description="Part-10 instances, one per part. The boundary parameter is required; parts may be "
            "of any transfer syntax, and each succeeds or fails on its own.",
            content={MULTIPART_DICOM: OpenAPIMediaType(schema=_BINARY_SCHEMA)},
        )
        responses = self.responses or {}
        stored, rejected = responses.get("200"), responses.get("400")
        if isinstance(stored, OpenAPIResponse) and isinstance(rejected, OpenAPIResponse):
            rejected.content = {**(rejected.content or {}), **(stored.content or {})}


def openapi_config(version: str) -> OpenAPIConfig:
    """The spec's frame: title, bearer security for every operation (public ones opt out), docstrings."""
    return OpenAPIConfig(
        title="webpacs",
        version=version,
        description="DICOMweb (QIDO-RS, WADO-RS, STOW-RS, WADO-URI) and management API of webpacs.\n\n"
        "Every operation but the public ones needs `Authorization: Bearer <token>`; create a token with "
        "`webpacs token create` or `POST /api/tokens`. Errors are RFC 9457 problems "
        "(application/problem+json); DICOMweb answers use DICOM media types (PS3.18).",
        path="/schema",
        render_plugins=[],
        use_handler_docstrings=True,
        security=[{BEARER: []}],
        components=Components(
            security_schemes={
                BEARER: SecurityScheme(
                    type="http",
                    scheme="bearer",
                    description="An API token of webpacs (opaque; not a JWT). Its role decides what it may do.",
                )
            }
        ),
    )
