"""WADO-RS: retrieve studies, series, instances, metadata, frames and bulk data (PS3.18 §10.4)."""

from __future__ import annotations

import asyncio
import json
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import anyio.to_thread
from litestar import Request, Response, get
from litestar.exceptions import HTTPException
from litestar.response import Stream
from pydicom import dcmread
from pydicom.pixels.decoders.base import get_decoder

from auth.principals import Permission
from dicomweb.context import app_context, dicomweb_base
from dicomweb.media import DICOM_XML, negotiate_metadata, xml_multipart
from dicomweb.openapi import MetadataOperation, binary, dicom_json, multipart, problems
from dicomweb.security import require
from storage.dicom.media_types import (
    EXPLICIT_VR_LITTLE_ENDIAN,
    SelectedMediaType,
    negotiate,
    parse_accept,
)
from storage.dicom.multipart import MultipartWriter
from storage.dicom.pixels import decode_frame, to_explicit_little_endian
from storage.dicom.records import BULK_BASE
from storage.errors import InvalidQuery, NotAcceptable, NotFound
from storage.index import StoredInstance

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from storage.archive import Archive
    from storage.dicom.media_types import Resource

__all__ = ["WADO_HANDLERS", "can_transcode", "instance_body", "stored_instances"]

_PIXEL_DATA: Final = 0x7FE00010
_OCTETS: Final = "application/octet-stream"
# Parts loaded ahead of the one being sent, and the largest instance loaded whole (memory bound:
# _READ_AHEAD x _WHOLE_READ_LIMIT per response); larger ones are streamed in chunks.
_READ_AHEAD: Final = 4
_WHOLE_READ_LIMIT: Final = 8 * 1024 * 1024
_IMPLICIT_VR_LITTLE_ENDIAN: Final = "1.2.840.10008.1.2"


@dataclass(frozen=True, slots=True)
class _Planned:
    """One part of a retrieve response: what is sent, and in which representation."""

    stored: StoredInstance
    selected: SelectedMediaType
    frame: int | None = None  # 0-based frame index, for frame and pixel bulk data parts


def can_transcode(source: str, target: str) -> bool:
    """Whether pixel data in `source` can be turned into `target` here (decoding only, for now)."""
    if target != EXPLICIT_VR_LITTLE_ENDIAN:
        return False
    try:
        return bool(get_decoder(source).is_available)
    except NotImplementedError:
        return False


def _accepted(request: Request[Any, Any, Any]) -> list[Any]:
    return parse_accept(request.headers.getall("accept", []))


async def stored_instances(
    archive: Archive, study: str, series: str | None = None, instance: str | None = None
) -> list[StoredInstance]:
    """The stored instances of a study, series or one instance (NotFound when there are none)."""
    return await anyio.to_thread.run_sync(lambda: archive.instances(study, series, instance))


async def _retrieve(
    request: Request[Any, Any, Any], study: str, series: str | None = None, instance: str | None = None
) -> Stream:
    archive = app_context(request).archive
    accepted = _accepted(request)
    stored = await stored_instances(archive, study, series, instance)
    plan = [_Planned(item, negotiate(accepted, item.transfer_syntax_uid, "instance", can_transcode)) for item in stored]
    base = dicomweb_base(request)
    writer = MultipartWriter()
    headers = _part_headers(writer, plan, lambda p: _instance_url(base, p.stored))
    closing = writer.closing_delimiter()
    length = None
    if all(p.selected.transfer_syntax_uid == p.stored.transfer_syntax_uid for p in plan):
        # Stored bytes only: the length is known, so clients see progress and no chunked encoding.
        length = sum(map(len, headers)) + sum(p.stored.size for p in plan) + len(closing)
    return Stream(
        _multipart_body(archive, plan, headers, closing),
        media_type=writer.content_type("application/dicom"),
        headers={"Content-Length": str(length)} if length is not None else None,
    )


def _part_headers(writer: MultipartWriter, plan: list[_Planned], location: Any) -> list[bytes]:
    return [
        writer.part_header(
            planned.selected.media_type,
            transfer_syntax=planned.selected.transfer_syntax_uid,
            content_location=location(planned),
        )
        for planned in plan
    ]


async def _multipart_body(
    archive: Archive, plan: list[_Planned], headers: list[bytes], closing: bytes
) -> AsyncIterator[bytes]:
    """The parts of `plan`, each loaded in a worker thread a few parts ahead of the one being sent."""
    loop = asyncio.get_running_loop()
    upcoming = iter(plan)
    window: deque[tuple[_Planned, asyncio.Future[bytes | None]]] = deque()

    def load_next() -> None:
        planned = next(upcoming, None)
        if planned is not None:
            window.append((planned, loop.run_in_executor(None, _load, archive, planned)))

    for _ in range(_READ_AHEAD):
        load_next()
    for header in headers:
        planned, loaded = window.popleft()
        yield header
        body = await loaded
        load_next()
        if body is None:
            async for chunk in _blob_chunks(archive, planned.stored.blob_key):
                yield chunk
        else:
            yield body
    yield closing


def _load(archive: Archive, planned: _Planned) -> bytes | None:
    """A part's bytes, or None for a large stored instance that is streamed chunk by chunk instead."""
    stored, target = planned.stored, planned.selected.transfer_syntax_uid
    if planned.frame is not None:
        return _frame_bytes(archive, stored, planned.frame, target)
    if target != stored.transfer_syntax_uid:
        return _decompressed(archive, stored)
    if stored.size > _WHOLE_READ_LIMIT:
        return None
    return archive.blobs.read_range(stored.blob_key, 0, stored.size)


async def instance_body(archive: Archive, stored: StoredInstance, transfer_syntax: str) -> AsyncIterator[bytes]:
    """The instance's Part-10 bytes: streamed as stored, or re-encoded when another syntax is asked."""
    if transfer_syntax == stored.transfer_syntax_uid:
        async for chunk in _blob_chunks(archive, stored.blob_key):
            yield chunk
        return

    yield await anyio.to_thread.run_sync(_decompressed, archive, stored)


def _decompressed(archive: Archive, stored: StoredInstance) -> bytes:
    """The instance re-encoded as Explicit VR Little Endian (the only conversion offered so far)."""
    with archive.local_file(stored) as path:
        return to_explicit_little_endian(path)


async def _blob_chunks(archive: Archive, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
    chunks: Iterator[bytes] = archive.blobs.open_range(key, start, end)
    while (chunk := await anyio.to_thread.run_sync(next, chunks, None)) is not None:
        yield chunk


def _frame_bytes(archive: Archive, stored: StoredInstance, index: int, target: str) -> bytes:
    """One frame cut with the offsets computed at ingest when served as stored, else decoded."""
    if stored.frames is not None and _same_pixel_bytes(stored.transfer_syntax_uid, target):
        fragments = stored.frames[index].fragments
        return b"".join(archive.blobs.read_range(stored.blob_key, offset, length) for offset, length in fragments)
    with archive.local_file(stored) as path:
        return decode_frame(path, index)


def _same_pixel_bytes(stored: str, target: str) -> bool:
    # Native pixel data of implicit VR little endian is byte for byte that of explicit VR.
    return target == stored or (target == EXPLICIT_VR_LITTLE_ENDIAN and stored == _IMPLICIT_VR_LITTLE_ENDIAN)


def _instance_url(base: str, stored: StoredInstance) -> str:
    series = f"{base}/studies/{stored.study_instance_uid}/series/{stored.series_instance_uid}"
    return f"{series}/instances/{stored.sop_instance_uid}"


def _parse_frame_numbers(frames: str, count: int) -> list[int]:
    """0-based indexes from a PS3.18 frame list ("1,3,5"); 1-based, each within 1..count.

    Raises:
        InvalidQuery: not a comma-separated list of positive whole numbers.
        NotFound: a frame number beyond the instance's frames.
    """
    try:
        numbers = [int(item) for item in frames.split(",")]
    except ValueError as exc:
        raise InvalidQuery(f"frame list {frames!r} must be positive whole numbers separated by commas") from exc
    if any(number < 1 for number in numbers):
        raise InvalidQuery(f"frame list {frames!r}: frame numbers start at 1")
    beyond = [number for number in numbers if number > count]
    if beyond:
        raise NotFound(f"the instance has {count} frame(s); no frame {', '.join(map(str, beyond))}")
    return [number - 1 for number in numbers]


async def _metadata(
    request: Request[Any, Any, Any], study: str, series: str | None = None, instance: str | None = None
) -> Response[bytes]:
    media_type = negotiate_metadata(request.headers.getall("accept", []))
    archive = app_context(request).archive
    items = await anyio.to_thread.run_sync(lambda: archive.index.metadata(study, series, instance))
    placeholder, base = BULK_BASE.encode(), dicomweb_base(request).encode()
    if media_type == DICOM_XML:
        # Only the XML answer parses the stored JSON; the JSON answer sends it as stored.
        objects = (json.loads(item.replace(placeholder, base)) for item in items)
        body, content_type = await anyio.to_thread.run_sync(xml_multipart, objects)
        return Response(content=body, media_type=content_type)
    body = b"[" + b",".join(items) + b"]"
    return Response(content=body.replace(placeholder, base), media_type=media_type)


async def _pixel_parts(
    request: Request[Any, Any, Any], study: str, series: str, instance: str, frames: str | None, resource: Resource
) -> Stream:
    archive = app_context(request).archive
    (stored,) = await stored_instances(archive, study, series, instance)
    if stored.number_of_frames == 0:
        raise NotFound(f"instance {instance} has no pixel data")
    indexes = _parse_frame_numbers(frames, stored.number_of_frames) if frames else list(range(stored.number_of_frames))
    selected = negotiate(_accepted(request), stored.transfer_syntax_uid, resource, can_transcode)
    plan = [_Planned(stored, selected, index) for index in indexes]
    writer = MultipartWriter()
    headers = _part_headers(writer, plan, lambda _: None)
    return Stream(
        _multipart_body(archive, plan, headers, writer.closing_delimiter()),
        media_type=writer.content_type(selected.media_type),
    )


_read = require(Permission.READ)
_common: Final[dict[str, Any]] = {"guards": [_read], "tags": ["WADO-RS"]}
# PS3.18 §8.7.3.5: the Accept header picks the transfer syntax; transfer-syntax=* asks for the stored one.
_INSTANCES_ANSWERS: Final = {
    200: multipart(
        "application/dicom",
        "One Part-10 instance per part, each with Content-Location; as stored or in the transfer syntax "
        "the Accept header asks for.",
    ),
    **problems(400, 401, 403, 404, 406, 503),
}
_METADATA_DOCS: Final[dict[str, Any]] = {
    "operation_class": MetadataOperation,
    "responses": {
        200: dicom_json("One DICOM JSON object per instance, binary values as BulkDataURIs."),
        **problems(400, 401, 403, 404, 406),
    },
}
_STUDY = "/dicomweb/studies/{study:str}"
_SERIES = _STUDY + "/series/{series:str}"
_INSTANCE = _SERIES + "/instances/{instance:str}"


@get(
    _STUDY,
    operation_id="RetrieveStudy",
    summary="Retrieve a study's instances",
    responses=_INSTANCES_ANSWERS,
    **_common,
)
async def retrieve_study(request: Request[Any, Any, Any], study: str) -> Stream:
    """Every instance of the study, as multipart/related application/dicom."""
    return await _retrieve(request, study)


@get(
    _SERIES,
    operation_id="RetrieveSeries",
    summary="Retrieve a series' instances",
    responses=_INSTANCES_ANSWERS,
    **_common,
)
async def retrieve_series(request: Request[Any, Any, Any], study: str, series: str) -> Stream:
    """Every instance of the series."""
    return await _retrieve(request, study, series)


@get(
    _INSTANCE, operation_id="RetrieveInstance", summary="Retrieve an instance", responses=_INSTANCES_ANSWERS, **_common
)
async def retrieve_instance(request: Request[Any, Any, Any], study: str, series: str, instance: str) -> Stream:
    """One instance."""
    return await _retrieve(request, study, series, instance)


@get(
    _STUDY + "/metadata",
    operation_id="RetrieveStudyMetadata",
    summary="A study's metadata",
    media_type="application/dicom+json",
    **_METADATA_DOCS,
    **_common,
)
async def retrieve_study_metadata(request: Request[Any, Any, Any], study: str) -> Response[bytes]:
    """DICOM JSON of every instance of the study, bulk data as BulkDataURIs (computed at ingest)."""
    return await _metadata(request, study)


@get(
    _SERIES + "/metadata",
    operation_id="RetrieveSeriesMetadata",
    summary="A series' metadata",
    media_type="application/dicom+json",
    **_METADATA_DOCS,
    **_common,
)
async def retrieve_series_metadata(request: Request[Any, Any, Any], study: str, series: str) -> Response[bytes]:
    """DICOM JSON of every instance of the series."""
    return await _metadata(request, study, series)


@get(
    _INSTANCE + "/metadata",
    operation_id="RetrieveInstanceMetadata",
    summary="An instance's metadata",
    media_type="application/dicom+json",
    **_METADATA_DOCS,
    **_common,
)
async def retrieve_instance_metadata(
    request: Request[Any, Any, Any], study: str, series: str, instance: str
) -> Response[bytes]:
    """DICOM JSON of one instance."""
    return await _metadata(request, study, series, instance)


@get(
    _INSTANCE + "/frames/{frames:str}",
    operation_id="RetrieveFrames",
    summary="Retrieve frames",
    responses={
        200: multipart(
            _OCTETS,
            "One frame per part, in the order asked: native pixels (application/octet-stream), or the stored "
            "compressed bitstream (e.g. image/jls, image/jp2) when Accept allows it.",
        ),
        **problems(400, 401, 403, 404, 406, 503),
    },
    **_common,
)
async def retrieve_frames(
    request: Request[Any, Any, Any], study: str, series: str, instance: str, frames: str
) -> Stream:
    """Frames by number ("1" or "1,3,5"): native pixels (application/octet-stream) or as stored."""
    return await _pixel_parts(request, study, series, instance, frames, "frame")


@get(
    _INSTANCE + "/bulk/{tag:str}",
    operation_id="RetrieveBulkData",
    summary="Retrieve bulk data",
    responses={
        200: multipart(_OCTETS, "The value in one part (pixel data: one part per frame)."),
        206: binary(_OCTETS, "The byte range asked for with a Range header (RFC 9110 §14), unwrapped."),
        **problems(400, 401, 403, 404, 406, 416, 503),
    },
    **_common,
)
async def retrieve_bulk_data(
    request: Request[Any, Any, Any], study: str, series: str, instance: str, tag: str
) -> Stream | Response[bytes]:
    """The value of a top-level binary attribute named by a metadata BulkDataURI."""
    try:
        number = int(tag, 16)
    except ValueError as exc:
        raise InvalidQuery(f"bulk data tag {tag!r} must be 8 hexadecimal digits, e.g. 7FE00010") from exc
    byte_range = request.headers.get("range")
    if number == _PIXEL_DATA and byte_range is None:
        return await _pixel_parts(request, study, series, instance, None, "bulkdata")
    archive = app_context(request).archive
    (stored,) = await stored_instances(archive, study, series, instance)
    if byte_range is not None:
        return await _ranged_bulk_data(archive, stored, number, byte_range)
    value = await anyio.to_thread.run_sync(_element_value, archive, stored, number)
    writer = MultipartWriter()
    body = writer.part_header(_OCTETS) + value + writer.closing_delimiter()
    return Response(content=body, media_type=writer.content_type(_OCTETS))


async def _ranged_bulk_data(archive: Archive, stored: StoredInstance, tag: int, header: str) -> Response[bytes]:
    """RFC 9110 §14: one byte range of the value, as 206 application/octet-stream.

    Native pixel data is read straight from the stored file (it may be gigabytes); other values
    are small enough to read whole.
    """
    if tag == _PIXEL_DATA:
        if stored.frames is None or not _same_pixel_bytes(stored.transfer_syntax_uid, EXPLICIT_VR_LITTLE_ENDIAN):
            raise NotAcceptable("byte ranges are offered on uncompressed little-endian pixel data only")
        value_start = stored.frames[0].fragments[0][0]
        total = sum(length for frame in stored.frames for _, length in frame.fragments)
        start, end = _parse_range(header, total)
        body = await anyio.to_thread.run_sync(
            archive.blobs.read_range, stored.blob_key, value_start + start, end - start + 1
        )
    else:
        value = await anyio.to_thread.run_sync(_element_value, archive, stored, tag)
        total = len(value)
        start, end = _parse_range(header, total)
        body = value[start : end + 1]
    return Response(
        content=body,
        status_code=206,
        media_type=_OCTETS,
        headers={"Content-Range": f"bytes {start}-{end}/{total}", "Accept-Ranges": "bytes"},
    )


def _parse_range(header: str, total: int) -> tuple[int, int]:
    """(first, last) byte of a single `bytes=` range (RFC 9110 §14.1.2); 416 when unsatisfiable."""
    unit, _, spec = header.partition("=")
    first, _, last = spec.strip().partition("-")
    try:
        if unit.strip().lower() != "bytes" or "," in spec:
            raise ValueError(header)
        if not first:  # suffix range: the last N bytes
            start, end = max(0, total - int(last)), total - 1
        else:
            start, end = int(first), min(int(last), total - 1) if last else total - 1
    except ValueError as exc:
        raise HTTPException(status_code=416, detail=f"Range {header!r}: give one range, e.g. bytes=0-1023") from exc
    if start > end or start >= total:
        raise HTTPException(
            status_code=416,
            detail=f"Range {header!r} is outside the {total}-byte value",
            headers={"Content-Range": f"bytes */{total}"},
        )
    return start, end


def _element_value(archive: Archive, stored: StoredInstance, tag: int) -> bytes:
    with archive.local_file(stored) as path:
        dataset = dcmread(path, stop_before_pixels=True)
    element = dataset.get(tag)
    if element is None or not isinstance(element.value, bytes | bytearray):
        raise NotFound(
            f"instance {stored.sop_instance_uid} has no bulk data attribute ({tag >> 16:04X},{tag & 0xFFFF:04X})"
        )
    return bytes(element.value)


WADO_HANDLERS: Final = [
    retrieve_study,
    retrieve_series,
    retrieve_instance,
    retrieve_study_metadata,
    retrieve_series_metadata,
    retrieve_instance_metadata,
    retrieve_frames,
    retrieve_bulk_data,
]
