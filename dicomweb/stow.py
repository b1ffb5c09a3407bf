"""STOW-RS: store instances from a streamed multipart/related body (PS3.18 §10.5).

Each part is spooled to a file as it arrives and stored in a worker thread while the next part is
still being received. Every instance succeeds or fails on its own; the response lists both.
A body of one instance (every C-STORE the DIMSE bridge forwards) is stored in the worker-thread hop
that read its end, rather than in a hop of its own.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import anyio
import anyio.to_thread
import msgspec
from litestar import Request, Response, post
from litestar.exceptions import ClientException, HTTPException

from auth.principals import Permission
from dicomweb.context import app_context, dicomweb_base
from dicomweb.media import DICOM_JSON
from dicomweb.openapi import StoreOperation, dicom_json, problems
from dicomweb.security import require
from storage.dicom.failure_reasons import CANNOT_UNDERSTAND, ERROR_PROCESSING
from storage.dicom.media_types import parse_content_type
from storage.dicom.multipart import MultipartReader, Part, multipart_boundary
from storage.dicom.store_response import (
    ERROR_COMMENT,
    FAILED_SOP_SEQUENCE,
    FAILURE_REASON,
    REFERENCED_SOP_CLASS_UID,
    REFERENCED_SOP_INSTANCE_UID,
    REFERENCED_SOP_SEQUENCE,
    RETRIEVE_URL,
)
from storage.dicom.uids import is_valid_uid
from storage.errors import ArchiveError, InvalidInstance, InvalidMediaType, MalformedMultipart, MultipartLimitExceeded

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from dicomweb.context import AppContext
    from storage.archive import StoreResult

__all__ = ["STOW_HANDLERS"]

log = logging.getLogger(__name__)

_DICOM: Final = "application/dicom"
# Parts stored at once per request: some parse while others wait for their fsync.
_PARALLEL_STORES: Final = 4
_BLOCK: Final = 1024 * 1024


@dataclass(frozen=True, slots=True)
class _Failure:
    part: int
    reason: int
    comment: str
    sop_class_uid: str = ""
    sop_instance_uid: str = ""


async def _store_instances(request: Request[Any, Any, Any], study_uid: str | None) -> Response[bytes]:
    context = app_context(request)
    if study_uid is not None and not is_valid_uid(study_uid):
        raise ClientException(f"{study_uid!r} in the URL is not a Study Instance UID (PS3.5 §9.1)")
    boundary = _checked_boundary(request, context)
    outcomes: dict[int, StoreResult | _Failure] = {}
    limiter = anyio.CapacityLimiter(_PARALLEL_STORES)
    body_error: str | None = None
    spool_dir = context.archive.blobs.staging_dir()
    reader = MultipartReader(boundary, spool_dir, max_part_size=context.settings.max_request_bytes)
    try:
        async with anyio.create_task_group() as group:
            try:
                async for block in _blocks(request):
                    # Parsing, hashing, spooling (storing, for a one-part body): blocking work, off the loop.
                    parts, stored = await anyio.to_thread.run_sync(_read_block, context, reader, block, study_uid)
                    outcomes.update(stored)
                    for part in parts:
                        group.start_soon(_store_part, context, part, study_uid, limiter, outcomes)
                reader.finish()
            except MultipartLimitExceeded as exc:
                raise HTTPException(status_code=413, detail=str(exc)) from exc
            except MalformedMultipart as exc:
                body_error = str(exc)
                cut = reader.incomplete_part
                if cut is not None:
                    outcomes[cut.number] = _Failure(
                        cut.number, CANNOT_UNDERSTAND, f"part {cut.number} is incomplete: {exc}"
                    )
    finally:
        reader.close()
    return _store_response(request, outcomes, body_error, study_uid)


async def _blocks(request: Request[Any, Any, Any]) -> AsyncIterator[bytes]:
    """The body in blocks of about _BLOCK bytes, so each hop to a worker thread carries enough work."""
    pending: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        pending.append(chunk)
        size += len(chunk)
        if size >= _BLOCK:
            yield b"".join(pending)
            pending, size = [], 0
    if pending:
        yield b"".join(pending)


def _checked_boundary(request: Request[Any, Any, Any], context: AppContext) -> str:
    """The body's boundary, after checking media type and size (415, 400, 413 otherwise)."""
    content_type = request.headers.get("content-type", "")
    try:
        media_type, params = parse_content_type(content_type)
    except InvalidMediaType as exc:
        raise HTTPException(status_code=415, detail=str(exc)) from exc
    part_type = params.get("type", _DICOM).lower()
    if media_type != "multipart/related" or part_type != _DICOM:
        raise HTTPException(
            status_code=415,
            detail='STOW-RS here takes multipart/related; type="application/dicom", '
            f"not {content_type or 'no Content-Type'!r}",
        )
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > context.settings.max_request_bytes:
        raise HTTPException(
            status_code=413,
            detail=f"the body has {length} bytes, above this server's limit of "
            f"{context.settings.max_request_bytes}; send fewer instances per request",
        )
    try:
        return multipart_boundary(content_type)
    except MalformedMultipart as exc:
        raise ClientException(str(exc)) from exc


def _read_block(
    context: AppContext, reader: MultipartReader, block: bytes, study_uid: str | None
) -> tuple[list[Part], dict[int, StoreResult | _Failure]]:
    """Feed a block (blocking): the parts it completed, to store, or the outcome of a one-part body.

    When the block ends a body of one part, that part is stored right here, in the same hop.
    """
    parts = reader.feed(block)
    if reader.ended and len(parts) == 1 and parts[0].number == 1:
        return [], {1: _store_one(context, parts[0], study_uid)}
    return parts, {}


async def _store_part(
    context: AppContext,
    part: Part,
    study_uid: str | None,
    limiter: anyio.CapacityLimiter,
    outcomes: dict[int, StoreResult | _Failure],
) -> None:
    outcomes[part.number] = await anyio.to_thread.run_sync(_store_one, context, part, study_uid, limiter=limiter)


def _store_one(context: AppContext, part: Part, study_uid: str | None) -> StoreResult | _Failure:
    """Store one part (blocking): what was stored, or why not (its file is consumed either way)."""
    if part.content_type not in (None, _DICOM):
        part.path.unlink(missing_ok=True)
        return _Failure(
            part.number,
            CANNOT_UNDERSTAND,
            f"part {part.number} is {part.content_type}; only application/dicom parts are stored",
        )
    try:
        return context.archive.store(part.path, part.sha256, study_uid=study_uid)
    except InvalidInstance as exc:
        return _Failure(
            part.number, exc.failure_reason, f"part {part.number}: {exc}", exc.sop_class_uid, exc.sop_instance_uid
        )
    except ArchiveError as exc:
        log.error("storing part %d failed: %s", part.number, exc)
        return _Failure(part.number, ERROR_PROCESSING, f"part {part.number}: {exc}")


def _store_response(
    request: Request[Any, Any, Any],
    outcomes: dict[int, StoreResult | _Failure],
    body_error: str | None,
    study_uid: str | None,
) -> Response[bytes]:
    base = dicomweb_base(request)
    stored = [outcome for _, outcome in sorted(outcomes.items()) if not isinstance(outcome, _Failure)]
    failed = [outcome for _, outcome in sorted(outcomes.items()) if isinstance(outcome, _Failure)]
    if body_error is not None and not stored and not failed:
        raise ClientException(body_error)
    answer: dict[str, Any] = {}
    studies = {result.study_uid for result in stored}
    if study_uid is not None or len(studies) == 1:
        answer[RETRIEVE_URL] = _url(f"{base}/studies/{study_uid or next(iter(studies))}")
    if stored:
        answer[REFERENCED_SOP_SEQUENCE] = {"vr": "SQ", "Value": [_referenced_item(base, result) for result in stored]}
    if failed:
        answer[FAILED_SOP_SEQUENCE] = {"vr": "SQ", "Value": [_failed_item(failure) for failure in failed]}
    if body_error is not None:
        answer[ERROR_COMMENT] = {"vr": "LO", "Value": [body_error]}
    status = (202 if failed or body_error is not None else 200) if stored else 400 if body_error is not None else 409
    for failure in failed:
        log.info("STOW part %d not stored: %s", failure.part, failure.comment)
    headers = {"Warning": f'299 webpacs "{body_error}"'} if body_error else None
    return Response(content=msgspec.json.encode(answer), status_code=status, media_type=DICOM_JSON, headers=headers)


def _url(value: str) -> dict[str, Any]:
    return {"vr": "UR", "Value": [value]}


def _referenced_item(base: str, result: StoreResult) -> dict[str, Any]:
    return {
        REFERENCED_SOP_CLASS_UID: {"vr": "UI", "Value": [result.sop_class_uid]},
        REFERENCED_SOP_INSTANCE_UID: {"vr": "UI", "Value": [result.sop_uid]},
        RETRIEVE_URL: _url(f"{base}/studies/{result.study_uid}/series/{result.series_uid}/instances/{result.sop_uid}"),
    }


def _failed_item(failure: _Failure) -> dict[str, Any]:
    item: dict[str, Any] = {}
    if failure.sop_class_uid:
        item[REFERENCED_SOP_CLASS_UID] = {"vr": "UI", "Value": [failure.sop_class_uid]}
    if failure.sop_instance_uid:
        item[REFERENCED_SOP_INSTANCE_UID] = {"vr": "UI", "Value": [failure.sop_instance_uid]}
    item[FAILURE_REASON] = {"vr": "US", "Value": [failure.reason]}
    # Not a PS3.18 attribute of the item, but what every client shows a person: the reason in words.
    item[ERROR_COMMENT] = {"vr": "LO", "Value": [failure.comment]}
    return item


_store_permission = require(Permission.STORE)
_common: Final[dict[str, Any]] = {
    "guards": [_store_permission],
    "tags": ["STOW-RS"],
    "request_max_body_size": None,  # enforced while streaming, against the configured limit
    "media_type": DICOM_JSON,
    "status_code": 200,
    "operation_class": StoreOperation,
    # The Store Instances response (PS3.18 §10.5.3): one DICOM JSON object whatever the outcome.
    "responses": {
        200: dicom_json("Every instance was stored: ReferencedSOPSequence (00081199) lists them.", array=False),
        202: dicom_json(
            "Some instances were stored, others not: FailedSOPSequence (00081198) gives each failure's reason.",
            array=False,
        ),
        409: dicom_json(
            "No instance was stored: FailedSOPSequence (00081198) gives each failure's reason.", array=False
        ),
        **problems(400, 401, 403, 413, 415),
    },
}


@post("/dicomweb/studies", operation_id="StoreInstances", summary="Store instances", **_common)
async def store_instances(request: Request[Any, Any, Any]) -> Response[bytes]:
    """STOW-RS: store the instances of a multipart/related; type="application/dicom" body."""
    return await _store_instances(request, None)


@post(
    "/dicomweb/studies/{study:str}",
    operation_id="StoreStudyInstances",
    summary="Store instances of one study",
    **_common,
)
async def store_study_instances(request: Request[Any, Any, Any], study: str) -> Response[bytes]:
    """STOW-RS into one study: instances of another study are refused (PS3.18 §10.5.1)."""
    return await _store_instances(request, study)


STOW_HANDLERS: Final = [store_instances, store_study_instances]
