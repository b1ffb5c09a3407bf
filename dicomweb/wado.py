"""WADO-RS: retrieve studies, series, instances, metadata, frames and bulk data (PS3.18 §10.4)."""

from __future__ import annotations

import asyncio
import io
import json
import zipfile
from collections import deque
from contextlib import ExitStack
from dataclasses import dataclass, replace
from datetime import UTC, datetime
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
    APPLICATION_ZIP,
    EXPLICIT_VR_LITTLE_ENDIAN,
    TRANSFER_SYNTAXES,
    SelectedMediaType,
    negotiate,
    parse_accept,
    prefers_zip,
)
from storage.dicom.multipart import MultipartWriter
from storage.dicom.pixels import to_explicit_little_endian
from storage.dicom.records import BULK_BASE
from storage.dicom.transcode import can_encode, transcode_frames, transcode_instance
from storage.errors import InvalidQuery, NotAcceptable, NotFound
from storage.index import StoredInstance

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator
    from pathlib import Path

    from storage.archive import Archive
    from storage.dicom.media_types import Resource

__all__ = [
    "WADO_GUARDS",
    "WADO_HANDLERS",
    "accepted",
    "in_worker",
    "instance_body",
    "parse_frame_numbers",
    "primed",
    "stored_instances",
    "transcoder",
]

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
    body: bytes | None = None  # the part, when made before the answer started


def transcoder(stored: StoredInstance) -> Callable[[str, str], bool]:
    """Whether this instance's pixel data can be turned from one transfer syntax into another here.

    The bit depth decides what the encoders take (JPEG baseline: 8 bits; others: 8 or 16 bits).
    """

    def can_transcode(source: str, target: str) -> bool:
        return _decodable(source) and can_encode(target, stored.bits_allocated)

    return can_transcode


def _decodable(source: str) -> bool:
    row = TRANSFER_SYNTAXES.get(source)
    if row is not None and row.native:
        return True
    try:
        return bool(get_decoder(source).is_available)
    except NotImplementedError:
        return False


def accepted(request: Request[Any, Any, Any]) -> list[Any]:
    """The request's Accept header as acceptable media types, most preferred first."""
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
    acceptable = accepted(request)
    stored = await stored_instances(archive, study, series, instance)
    if prefers_zip(acceptable):
        return _zip_response(archive, stored, instance or series or study)
    plan = [
        _Planned(item, negotiate(acceptable, item.transfer_syntax_uid, "instance", transcoder(item))) for item in stored
    ]
    first: AsyncIterator[bytes] | None = None
    if len(plan) == 1 and plan[0].selected.transfer_syntax_uid != plan[0].stored.transfer_syntax_uid:
        # One re-encoded instance: its first frame is encoded before the answer starts, so a frame
        # the codec refuses still gets a 406 rather than a cut-off body.
        first = await primed(instance_body(archive, plan[0].stored, plan[0].selected.transfer_syntax_uid))
    base = dicomweb_base(request)
    writer = MultipartWriter()
    headers = _part_headers(writer, plan, lambda p: _instance_url(base, p.stored))
    closing = writer.closing_delimiter()
    length = None
    if all(p.selected.transfer_syntax_uid == p.stored.transfer_syntax_uid for p in plan):
        # Stored bytes only: the length is known, so clients see progress and no chunked encoding.
        length = sum(map(len, headers)) + sum(p.stored.size for p in plan) + len(closing)
    return Stream(
        _multipart_body(archive, plan, headers, closing, first),
        media_type=writer.content_type("application/dicom"),
        headers={"Content-Length": str(length)} if length is not None else None,
    )


async def primed(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """`chunks` with its first chunk already produced: its errors raise here, before a response starts."""
    first = await anext(chunks, b"")

    async def replay() -> AsyncIterator[bytes]:
        yield first
        async for chunk in chunks:
            yield chunk

    return replay()


class _ZipSink(io.RawIOBase):
    """A write-only, non-seekable file for zipfile: what it writes is taken out chunk by chunk."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        data = b"".join(self._parts)
        self._parts.clear()
        return data


def _zip_response(archive: Archive, stored: list[StoredInstance], name: str) -> Stream:
    """PS3.18 §8.7.3.1: the instances as one zip of Part-10 files, as stored, streamed."""
    return Stream(
        _zip_body(archive, stored),
        media_type=APPLICATION_ZIP,
        headers={"Content-Disposition": f'attachment; filename="{name}.zip"'},
    )


async def _zip_body(archive: Archive, stored: list[StoredInstance]) -> AsyncIterator[bytes]:
    # Stored, not deflated: compressed pixel data gains nothing, and the archive's CPU is shared.
    # zipfile writes data descriptors on a non-seekable file, so nothing is held back or seeked.
    sink = _ZipSink()
    moment = datetime.now(UTC).timetuple()[:6]
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as bundle:
        for item in stored:
            info = zipfile.ZipInfo(
                f"{item.study_instance_uid}/{item.series_instance_uid}/{item.sop_instance_uid}.dcm", moment
            )
            with bundle.open(info, "w", force_zip64=item.size >= zipfile.ZIP64_LIMIT) as member:
                async for chunk in _blob_chunks(archive, item.blob_key):
                    member.write(chunk)
                    yield sink.take()
            yield sink.take()
    yield sink.take()


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
    archive: Archive,
    plan: list[_Planned],
    headers: list[bytes],
    closing: bytes,
    first: AsyncIterator[bytes] | None = None,
) -> AsyncIterator[bytes]:
    """The parts of `plan`, each loaded in a worker thread a few parts ahead of the one being sent.

    Parts too large to load whole, and re-encoded instances, are streamed; `first`, when given, is
    the body of the first part, already started.
    """
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
        if body is not None:
            yield body
            continue
        chunks = first or instance_body(archive, planned.stored, planned.selected.transfer_syntax_uid)
        first = None
        async for chunk in chunks:
            yield chunk
    yield closing


def _load(archive: Archive, planned: _Planned) -> bytes | None:
    """A part's bytes, or None for a large or re-encoded instance, which is streamed chunk by chunk."""
    stored, target = planned.stored, planned.selected.transfer_syntax_uid
    if planned.body is not None:
        return planned.body
    if planned.frame is not None:
        return _frame_bytes(archive, stored, planned.frame, target)
    if target != stored.transfer_syntax_uid or stored.size > _WHOLE_READ_LIMIT:
        return None
    return archive.blobs.read_range(stored.blob_key, 0, stored.size)


async def instance_body(archive: Archive, stored: StoredInstance, transfer_syntax: str) -> AsyncIterator[bytes]:
    """The instance's Part-10 bytes: streamed as stored, or re-encoded frame by frame in a worker thread."""
    if transfer_syntax == stored.transfer_syntax_uid:
        async for chunk in _blob_chunks(archive, stored.blob_key):
            yield chunk
        return
    async for chunk in in_worker(archive, stored, lambda path: _reencoded(path, stored, transfer_syntax)):
        yield chunk


def _reencoded(path: Path, stored: StoredInstance, target: str) -> Iterator[bytes]:
    if stored.bits_allocated == 1:
        # Bit-packed frames are not byte-aligned: the (small) object is converted whole.
        yield to_explicit_little_endian(path)
        return
    yield from transcode_instance(path, target)


async def in_worker(
    archive: Archive, stored: StoredInstance, produce: Callable[[Path], Iterator[bytes]]
) -> AsyncIterator[bytes]:
    """Chunks that `produce` makes from the instance's local file, each made in a worker thread."""
    with ExitStack() as stack:
        path = await anyio.to_thread.run_sync(stack.enter_context, archive.local_file(stored))
        chunks = produce(path)
        while (chunk := await anyio.to_thread.run_sync(next, chunks, None)) is not None:
            yield chunk


async def _blob_chunks(archive: Archive, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
    chunks: Iterator[bytes] = archive.blobs.open_range(key, start, end)
    while (chunk := await anyio.to_thread.run_sync(next, chunks, None)) is not None:
        yield chunk


def _frame_bytes(archive: Archive, stored: StoredInstance, index: int, target: str) -> bytes:
    """One frame cut with the offsets computed at ingest when served as stored, else transcoded."""
    if stored.frames is not None and _same_pixel_bytes(stored.transfer_syntax_uid, target):
        fragments = stored.frames[index].fragments
        return b"".join(archive.blobs.read_range(stored.blob_key, offset, length) for offset, length in fragments)
    with archive.local_file(stored) as path:
        return b"".join(transcode_frames(path, [index], target))


def _same_pixel_bytes(stored: str, target: str) -> bool:
    # Native pixel data of implicit VR little endian is byte for byte that of explicit VR.
    return target == stored or (target == EXPLICIT_VR_LITTLE_ENDIAN and stored == _IMPLICIT_VR_LITTLE_ENDIAN)


def _instance_url(base: str, stored: StoredInstance) -> str:
    series = f"{base}/studies/{stored.study_instance_uid}/series/{stored.series_instance_uid}"
    return f"{series}/instances/{stored.sop_instance_uid}"


def parse_frame_numbers(frames: str, count: int) -> list[int]:
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
    indexes = parse_frame_numbers(frames, stored.number_of_frames) if frames else list(range(stored.number_of_frames))
    selected = negotiate(accepted(request), stored.transfer_syntax_uid, resource, transcoder(stored))
    plan = [_Planned(stored, selected, index) for index in indexes]
    if selected.transfer_syntax_uid != stored.transfer_syntax_uid:
        # The first frame is transcoded before the answer starts: a refusal is a 406, not a cut body.
        body = await anyio.to_thread.run_sync(_load, archive, plan[0])
        plan[0] = replace(plan[0], body=body)
    writer = MultipartWriter()
    headers = _part_headers(writer, plan, lambda _: None)
    return Stream(
        _multipart_body(archive, plan, headers, writer.closing_delimiter()),
        media_type=writer.content_type(selected.media_type),
    )


_read = require(Permission.READ)
WADO_GUARDS: Final = [_read]
"""The guards of every retrieve route (WADO-RS, rendered, thumbnails)."""
_common: Final[dict[str, Any]] = {"guards": WADO_GUARDS, "tags": ["WADO-RS"]}
# PS3.18 §8.7.3.5: the Accept header picks the transfer syntax; transfer-syntax=* asks for the stored one.
_INSTANCES_ANSWERS: Final = {
    200: multipart(
        "application/dicom",
        "One Part-10 instance per part, each with Content-Location; as stored or in the transfer syntax "
        "the Accept header asks for (PS3.18 §8.7.3: uncompressed, JPEG baseline and lossless, JPEG-LS, "
        "JPEG 2000, HTJ2K, RLE, deflated). With Accept: application/zip, one zip of the Part-10 files "
        "as stored (see the zip response).",
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
