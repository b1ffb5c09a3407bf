"""WADO-URI: one instance by query parameters (PS3.18 §9, requestType=WADO)."""

from __future__ import annotations

from typing import Any, Final

from litestar import Request, get
from litestar.params import Parameter
from litestar.response import Stream

from auth.principals import Permission
from dicomweb.context import app_context
from dicomweb.openapi import binary, problems
from dicomweb.security import require
from dicomweb.wado import can_transcode, instance_body, stored_instances
from storage.dicom.media_types import APPLICATION_DICOM, AcceptableMediaType, negotiate
from storage.errors import InvalidQuery, NotAcceptable

__all__ = ["WADO_URI_HANDLERS"]

_DICOM_CONTENT_TYPES: Final = frozenset({APPLICATION_DICOM, "application/*", "*/*"})


@get(
    "/wado",
    guards=[require(Permission.READ)],
    tags=["WADO-URI"],
    operation_id="WadoUri",
    summary="Retrieve an instance by WADO-URI",
    responses={
        200: binary(APPLICATION_DICOM, "The Part-10 instance."),
        **problems(400, 401, 403, 404, 406, 503),
    },
)
async def wado_uri(
    request: Request[Any, Any, Any],
    request_type: str = Parameter(query="requestType", description="Must be WADO."),
    study_uid: str = Parameter(query="studyUID"),
    series_uid: str = Parameter(query="seriesUID"),
    object_uid: str = Parameter(query="objectUID"),
    content_type: str = Parameter(
        query="contentType",
        default=APPLICATION_DICOM,
        description="application/dicom (rendered images arrive with transcoding).",
    ),
    transfer_syntax: str | None = Parameter(
        query="transferSyntax", required=False, description="Default: Explicit VR Little Endian."
    ),
) -> Stream:
    """The instance as application/dicom, in Explicit VR Little Endian unless transferSyntax says otherwise."""
    if request_type != "WADO":
        raise InvalidQuery(f"requestType={request_type!r}: only requestType=WADO is defined (PS3.18 §9.1.2.1)")
    wanted = content_type.split(",")[0].split(";")[0].strip().lower()
    if wanted not in _DICOM_CONTENT_TYPES:
        raise NotAcceptable(f"contentType={content_type!r} is not offered yet; use contentType=application/dicom")
    archive = app_context(request).archive
    (stored,) = await stored_instances(archive, study_uid, series_uid, object_uid)
    selected = negotiate(
        [AcceptableMediaType(APPLICATION_DICOM, transfer_syntax)], stored.transfer_syntax_uid, "instance", can_transcode
    )
    return Stream(instance_body(archive, stored, selected.transfer_syntax_uid), media_type=APPLICATION_DICOM)


WADO_URI_HANDLERS: Final = [wado_uri]
