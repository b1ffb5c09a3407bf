"""WADO-URI: one instance by query parameters (PS3.18 §9, requestType=WADO), as DICOM or rendered."""

from __future__ import annotations

import math
from typing import Any, Final

import anyio.to_thread
from litestar import Request, Response, get
from litestar.params import Parameter
from litestar.response import Stream

from dicomweb.context import app_context
from dicomweb.openapi import binary, problems
from dicomweb.rendered import render_stored
from dicomweb.wado import WADO_GUARDS, instance_body, primed, stored_instances, transcoder
from storage.dicom.media_types import (
    APPLICATION_DICOM,
    RENDERED_MEDIA_TYPES,
    AcceptableMediaType,
    negotiate,
)
from storage.dicom.render import RenderOptions, Viewport, Window, parse_annotation, parse_quality
from storage.errors import InvalidQuery, NotAcceptable, NotFound

__all__ = ["WADO_URI_HANDLERS"]

_DICOM_CONTENT_TYPES: Final = frozenset({APPLICATION_DICOM, "application/*", "*/*"})


def _content_type(text: str) -> str:
    """The first offered media type of the contentType list (PS3.18 §9.1.2.1.5), in the client's order.

    Raises:
        NotAcceptable: none of the listed types is offered.
    """
    for item in text.split(","):
        wanted = item.split(";")[0].strip().lower()
        if wanted in _DICOM_CONTENT_TYPES:
            return APPLICATION_DICOM
        if wanted in RENDERED_MEDIA_TYPES:
            return wanted
        if wanted == "image/*":
            return RENDERED_MEDIA_TYPES[0]
    offered = ", ".join((APPLICATION_DICOM, *RENDERED_MEDIA_TYPES))
    raise NotAcceptable(f"contentType={text!r} is not offered; use one of {offered}")


def _number(name: str, text: str | None) -> float | None:
    if text is None or text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise InvalidQuery(f"{name}={text!r} must be a number")
    return value


def _render_options(
    media_type: str,
    *,
    window_center: str | None,
    window_width: str | None,
    rows: str | None,
    columns: str | None,
    region: str | None,
    annotation: str | None,
    image_quality: str | None,
    size: tuple[int, int],
) -> RenderOptions:
    """PS3.18 §9.1.2.1: windowCenter/Width, rows/columns, region and imageQuality as render options.

    Raises:
        InvalidQuery: a value is malformed, or only one of windowCenter and windowWidth is given.
    """
    center, width = _number("windowCenter", window_center), _number("windowWidth", window_width)
    if (center is None) != (width is None):
        raise InvalidQuery("give windowCenter and windowWidth together (PS3.18 §9.1.2.1.13)")
    if width is not None and width < 1:
        raise InvalidQuery(f"windowWidth={window_width!r} must be at least 1")
    window = Window(center, width) if center is not None and width is not None else None
    source_rows, source_columns = size
    wanted_rows = _number("rows", rows)
    wanted_columns = _number("columns", columns)
    crop: tuple[float, float, float, float] | None = None
    if region:
        corners = [_number("region", part) for part in region.split(",")]
        if len(corners) != 4 or any(c is None or not 0 <= c <= 1 for c in corners):
            raise InvalidQuery(f"region={region!r} must be x1,y1,x2,y2 as fractions 0.0-1.0 (PS3.18 §9.1.2.1.9)")
        x1, y1, x2, y2 = (float(c or 0) for c in corners)
        if x2 <= x1 or y2 <= y1:
            raise InvalidQuery(f"region={region!r}: the second corner must lie right of and below the first")
        crop = (x1 * source_columns, y1 * source_rows, (x2 - x1) * source_columns, (y2 - y1) * source_rows)
    viewport = None
    if wanted_rows or wanted_columns or crop:
        shown_columns = crop[2] if crop else source_columns
        shown_rows = crop[3] if crop else source_rows
        viewport = Viewport(
            max(1, int(wanted_columns or (wanted_rows or shown_rows) * shown_columns / shown_rows)),
            max(1, int(wanted_rows or (wanted_columns or shown_columns) * shown_rows / shown_columns)),
            crop,
        )
    return RenderOptions(
        media_type,
        quality=parse_quality(image_quality),
        window=window,
        viewport=viewport,
        annotation=parse_annotation(annotation or ""),
    )


@get(
    "/wado",
    guards=WADO_GUARDS,
    tags=["WADO-URI"],
    operation_id="WadoUri",
    summary="Retrieve an instance by WADO-URI",
    responses={
        200: binary(
            APPLICATION_DICOM,
            "The Part-10 instance (contentType=application/dicom), or a rendered image/jpeg, image/png or "
            "image/gif of one frame.",
        ),
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
        description="application/dicom, or image/jpeg, image/png, image/gif for a rendered frame.",
    ),
    transfer_syntax: str | None = Parameter(
        query="transferSyntax", required=False, description="Default: Explicit VR Little Endian."
    ),
    frame_number: int | None = Parameter(query="frameNumber", required=False, ge=1, description="Rendered: 1-based."),
    window_center: str | None = Parameter(query="windowCenter", required=False),
    window_width: str | None = Parameter(query="windowWidth", required=False),
    rows: str | None = Parameter(query="rows", required=False, description="Rendered height in pixels."),
    columns: str | None = Parameter(query="columns", required=False, description="Rendered width in pixels."),
    region: str | None = Parameter(query="region", required=False, description="x1,y1,x2,y2 fractions."),
    annotation: str | None = Parameter(query="annotation", required=False, description="patient,technique"),
    image_quality: str | None = Parameter(query="imageQuality", required=False, description="1-100 (JPEG)."),
) -> Stream | Response[bytes]:
    """The instance as application/dicom (Explicit VR Little Endian unless transferSyntax says otherwise).

    With contentType=image/jpeg (png, gif) one frame is rendered instead (PS3.18 §9.1.2.1).
    """
    if request_type != "WADO":
        raise InvalidQuery(f"requestType={request_type!r}: only requestType=WADO is defined (PS3.18 §9.1.2.1)")
    wanted = _content_type(content_type)
    archive = app_context(request).archive
    (stored,) = await stored_instances(archive, study_uid, series_uid, object_uid)
    if wanted != APPLICATION_DICOM:
        if stored.number_of_frames == 0:
            raise NotFound(f"instance {object_uid} has no image to render; ask for contentType=application/dicom")
        frame = (frame_number or 1) - 1
        if frame >= stored.number_of_frames:
            raise NotFound(f"the instance has {stored.number_of_frames} frame(s); no frame {frame + 1}")
        options = _render_options(
            wanted,
            window_center=window_center,
            window_width=window_width,
            rows=rows,
            columns=columns,
            region=region,
            annotation=annotation,
            image_quality=image_quality,
            size=(stored.rows or 1, stored.columns or 1),
        )
        body = await anyio.to_thread.run_sync(render_stored, archive, stored, [frame], options)
        return Response(content=body, media_type=wanted)
    selected = negotiate(
        [AcceptableMediaType(APPLICATION_DICOM, transfer_syntax)],
        stored.transfer_syntax_uid,
        "instance",
        transcoder(stored),
    )
    body_chunks = instance_body(archive, stored, selected.transfer_syntax_uid)
    if selected.transfer_syntax_uid != stored.transfer_syntax_uid:
        body_chunks = await primed(body_chunks)
    return Stream(body_chunks, media_type=APPLICATION_DICOM)


WADO_URI_HANDLERS: Final = [wado_uri]
