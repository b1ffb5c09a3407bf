"""WADO-RS rendered resources and thumbnails (PS3.18 §10.4.1.1.3, §10.4.1.1.4, §8.3.5).

Rendering (decode, VOI, viewport, encode) runs in worker threads, one image at a time. Thumbnails
come from a representative frame and are kept in a bounded on-disk cache (dicomweb/thumbnail_cache.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import anyio.to_thread
from litestar import Request, Response, get
from litestar.response import Stream

from dicomweb.context import app_context, query_pairs
from dicomweb.openapi import binary, multipart, problems
from dicomweb.thumbnail_cache import ThumbnailCache
from dicomweb.wado import WADO_GUARDS, accepted, parse_frame_numbers, stored_instances
from storage.dicom.media_types import negotiate_rendered
from storage.dicom.multipart import MultipartWriter
from storage.dicom.render import RenderOptions, Viewport, parse_viewport, render
from storage.errors import InvalidQuery, NotFound

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

    from storage.archive import Archive
    from storage.index import StoredInstance

__all__ = ["RENDERED_HANDLERS", "render_stored"]

# PS3.18 Table 8.3.5-1: the query parameters of rendered resources; thumbnails take viewport only.
_RENDERED_PARAMETERS: Final = frozenset({"window", "viewport", "quality", "annotation", "charset", "iccprofile"})
_THUMBNAIL_PARAMETERS: Final = frozenset({"viewport", "charset"})
_THUMBNAIL_VIEWPORT: Final = Viewport(128, 128)
_THUMBNAIL_FOLDER: Final = "cache/thumbnails"

_Job = tuple["StoredInstance", list[int]]


def render_stored(archive: Archive, stored: StoredInstance, indexes: Sequence[int], options: RenderOptions) -> bytes:
    """Render frames of a stored instance (blocking: call it in a worker thread)."""
    with archive.local_file(stored) as path:
        return render(path, indexes, options)


def _parameters(request: Request[Any, Any, Any], allowed: frozenset[str]) -> dict[str, str]:
    params: dict[str, str] = {}
    for name, value in query_pairs(request):
        if name not in allowed:
            raise InvalidQuery(f"unknown query parameter {name!r}; this resource takes {', '.join(sorted(allowed))}")
        params[name] = value
    if params.get("iccprofile", "no").lower() != "no":
        raise InvalidQuery(f"iccprofile={params['iccprofile']!r}: only iccprofile=no is offered")
    return params


def _with_images(stored: list[StoredInstance]) -> list[StoredInstance]:
    images = [item for item in stored if item.number_of_frames > 0]
    if not images:
        raise NotFound("nothing here has pixel data to render; retrieve it as application/dicom")
    return images


async def _rendered(
    request: Request[Any, Any, Any],
    study: str,
    series: str | None = None,
    instance: str | None = None,
    frames: str | None = None,
) -> Response[bytes] | Stream:
    media_type, multipart_answer = negotiate_rendered(accepted(request), single=instance is not None)
    options = RenderOptions.from_query(media_type, _parameters(request, _RENDERED_PARAMETERS))
    archive = app_context(request).archive
    stored = _with_images(await stored_instances(archive, study, series, instance))
    animated = media_type == "image/gif"
    jobs: list[_Job]
    if instance is None:
        # A study or series: one image per instance (GIF: each multi-frame instance animated).
        jobs = [(item, list(range(item.number_of_frames))) for item in stored]
    else:
        (item,) = stored
        indexes = parse_frame_numbers(frames, item.number_of_frames) if frames else list(range(item.number_of_frames))
        # Single answers: JPEG and PNG show the first frame asked, GIF animates them all.
        single = animated or not multipart_answer
        jobs = [(item, indexes)] if single else [(item, [index]) for index in indexes]
    first = await anyio.to_thread.run_sync(render_stored, archive, jobs[0][0], jobs[0][1], options)
    if not multipart_answer:
        return Response(content=first, media_type=media_type)
    writer = MultipartWriter()
    return Stream(_parts(archive, jobs, options, writer, first), media_type=writer.content_type(media_type))


async def _parts(
    archive: Archive, jobs: list[_Job], options: RenderOptions, writer: MultipartWriter, first: bytes
) -> AsyncIterator[bytes]:
    for number, (item, indexes) in enumerate(jobs):
        body = first if number == 0 else await anyio.to_thread.run_sync(render_stored, archive, item, indexes, options)
        yield writer.part_header(options.media_type)
        yield body
    yield writer.closing_delimiter()


def _thumbnail_cache(request: Request[Any, Any, Any]) -> ThumbnailCache:
    """The process's cache, made on first use from the settings."""
    state = request.app.state
    cache = state.get("thumbnail_cache")
    if cache is None:
        settings = app_context(request).settings
        cache = ThumbnailCache(settings.data_dir / _THUMBNAIL_FOLDER, settings.thumbnail_cache_mb * 1024 * 1024)
        state["thumbnail_cache"] = cache
    return cache


def _representative(stored: list[StoredInstance]) -> StoredInstance:
    """The middle instance of the first series (instances come in series, then instance order)."""
    first_series = [item for item in stored if item.series_instance_uid == stored[0].series_instance_uid]
    return first_series[len(first_series) // 2]


async def _thumbnail(
    request: Request[Any, Any, Any],
    study: str,
    series: str | None = None,
    instance: str | None = None,
    frames: str | None = None,
) -> Response[bytes]:
    media_type, _ = negotiate_rendered(accepted(request), single=True)
    params = _parameters(request, _THUMBNAIL_PARAMETERS)
    viewport = parse_viewport(params["viewport"]) if params.get("viewport") else _THUMBNAIL_VIEWPORT
    options = RenderOptions(media_type, viewport=viewport)
    archive = app_context(request).archive
    item = _representative(_with_images(await stored_instances(archive, study, series, instance)))
    index = parse_frame_numbers(frames, item.number_of_frames)[0] if frames else item.number_of_frames // 2
    cache = _thumbnail_cache(request)
    # The blob key is immutable (a replaced instance gets a new one), so entries never go stale.
    key = f"{item.blob_key}|{index}|{options.cache_key}"
    body = await anyio.to_thread.run_sync(cache.get, key)
    if body is None:
        body = await anyio.to_thread.run_sync(render_stored, archive, item, [index], options)
        await anyio.to_thread.run_sync(cache.put, key, body)
    return Response(content=body, media_type=media_type, headers={"Cache-Control": "private, max-age=3600"})


_common: Final[dict[str, Any]] = {"guards": WADO_GUARDS, "tags": ["WADO-RS"]}
_STUDY = "/dicomweb/studies/{study:str}"
_SERIES = _STUDY + "/series/{series:str}"
_INSTANCE = _SERIES + "/instances/{instance:str}"
_FRAMES = _INSTANCE + "/frames/{frames:str}"
_RENDERED_ANSWERS: Final = {
    200: binary(
        "image/jpeg",
        "The rendered image (image/jpeg, image/png or image/gif as Accept asks; GIF animates several frames). "
        "Studies, series and Accept: multipart/related answer one image per part. Query: window=center,width,"
        "function; viewport=vw,vh[,sx,sy,sw,sh]; quality=1..100; annotation=patient,technique.",
    ),
    **problems(400, 401, 403, 404, 406, 503),
}
_STUDY_RENDERED_ANSWERS: Final = {
    200: multipart("image/jpeg", "One rendered image per instance (image/png and image/gif on request)."),
    **problems(400, 401, 403, 404, 406, 503),
}
_THUMBNAIL_ANSWERS: Final = {
    200: binary(
        "image/jpeg",
        "A small rendering of a representative frame (the middle instance of the first series, its middle "
        "frame): image/jpeg, image/png or image/gif; viewport=vw,vh sets its size (default 128x128). Cached.",
    ),
    **problems(400, 401, 403, 404, 406, 503),
}


@get(_STUDY + "/rendered", operation_id="RetrieveRenderedStudy", responses=_STUDY_RENDERED_ANSWERS, **_common)
async def retrieve_rendered_study(request: Request[Any, Any, Any], study: str) -> Response[bytes] | Stream:
    """Every image of the study, rendered for display."""
    return await _rendered(request, study)


@get(_SERIES + "/rendered", operation_id="RetrieveRenderedSeries", responses=_STUDY_RENDERED_ANSWERS, **_common)
async def retrieve_rendered_series(
    request: Request[Any, Any, Any], study: str, series: str
) -> Response[bytes] | Stream:
    """Every image of the series, rendered for display."""
    return await _rendered(request, study, series)


@get(_INSTANCE + "/rendered", operation_id="RetrieveRenderedInstance", responses=_RENDERED_ANSWERS, **_common)
async def retrieve_rendered_instance(
    request: Request[Any, Any, Any], study: str, series: str, instance: str
) -> Response[bytes] | Stream:
    """The instance rendered for display (its first frame, or every frame as a GIF animation)."""
    return await _rendered(request, study, series, instance)


@get(_FRAMES + "/rendered", operation_id="RetrieveRenderedFrames", responses=_RENDERED_ANSWERS, **_common)
async def retrieve_rendered_frames(
    request: Request[Any, Any, Any], study: str, series: str, instance: str, frames: str
) -> Response[bytes] | Stream:
    """Frames ("1" or "1,3,5") rendered for display."""
    return await _rendered(request, study, series, instance, frames)


@get(_STUDY + "/thumbnail", operation_id="RetrieveStudyThumbnail", responses=_THUMBNAIL_ANSWERS, **_common)
async def retrieve_study_thumbnail(request: Request[Any, Any, Any], study: str) -> Response[bytes]:
    """A thumbnail of the study."""
    return await _thumbnail(request, study)


@get(_SERIES + "/thumbnail", operation_id="RetrieveSeriesThumbnail", responses=_THUMBNAIL_ANSWERS, **_common)
async def retrieve_series_thumbnail(request: Request[Any, Any, Any], study: str, series: str) -> Response[bytes]:
    """A thumbnail of the series."""
    return await _thumbnail(request, study, series)


@get(_INSTANCE + "/thumbnail", operation_id="RetrieveInstanceThumbnail", responses=_THUMBNAIL_ANSWERS, **_common)
async def retrieve_instance_thumbnail(
    request: Request[Any, Any, Any], study: str, series: str, instance: str
) -> Response[bytes]:
    """A thumbnail of the instance."""
    return await _thumbnail(request, study, series, instance)


@get(_FRAMES + "/thumbnail", operation_id="RetrieveFramesThumbnail", responses=_THUMBNAIL_ANSWERS, **_common)
async def retrieve_frames_thumbnail(
    request: Request[Any, Any, Any], study: str, series: str, instance: str, frames: str
) -> Response[bytes]:
    """A thumbnail of the first frame named."""
    return await _thumbnail(request, study, series, instance, frames)


RENDERED_HANDLERS: Final = [
    retrieve_rendered_study,
    retrieve_rendered_series,
    retrieve_rendered_instance,
    retrieve_rendered_frames,
    retrieve_study_thumbnail,
    retrieve_series_thumbnail,
    retrieve_instance_thumbnail,
    retrieve_frames_thumbnail,
]
