"""Reports and attachments of a study (`/api/studies/{study}/attachments`): PDF, pictures, text reports.

Attaching builds a DICOM object of the study (storage/dicom/attachments.py) and stores it through
the archive like any received instance, so it is durable, indexed, audited, found by QIDO and
retrieved by every viewer. Listing reads what the index keeps of those instances (no file opened).
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final

import anyio.to_thread
from litestar import Request, get, post
from litestar.datastructures import UploadFile
from litestar.enums import RequestEncodingType
from litestar.exceptions import NotFoundException, ValidationException
from litestar.params import Body
from pydicom import Dataset, dcmwrite

from auth.policy import visible_studies
from auth.principals import Permission
from dicomweb.context import app_context, dicomweb_base
from dicomweb.openapi import problems
from dicomweb.security import principal_of, require
from storage.dicom.attachments import (
    ATTACHMENT_SOP_CLASSES,
    BASIC_TEXT_SR,
    ENCAPSULATED_PDF,
    AttachmentInfo,
    ReportStatus,
    encapsulated_pdf,
    secondary_capture,
    text_report,
)
from storage.errors import InvalidInstance
from storage.index.query import Level, parse_query

if TYPE_CHECKING:
    from storage.archive import StoreResult

__all__ = ["ATTACHMENT_HANDLERS"]

MAX_ATTACHMENT_BYTES: Final = 64 * 1024**2  # a report or a picture; whole documents are read into memory
_KIND_BY_SOP_CLASS: Final = {ENCAPSULATED_PDF: "pdf", BASIC_TEXT_SR: "text"}
_TAGS: Final = {
    "study": "0020000D",
    "series": "0020000E",
    "sop": "00080018",
    "sop_class": "00080016",
    "title": "0008103E",  # SeriesDescription
    "date": "00080023",  # ContentDate
    "time": "00080033",  # ContentTime
    "verification": "0040A493",  # VerificationFlag
}


@dataclass
class AttachmentForm:
    """A multipart/form-data upload: a title, a status, and a PDF / JPEG / PNG `file` or a `text`."""

    title: str
    status: ReportStatus = ReportStatus.PRELIMINARY
    text: str | None = None
    file: UploadFile | None = None


@dataclass(frozen=True)
class Attachment:
    """One report or attachment of a study."""

    kind: str  # pdf, image or text
    title: str
    status: ReportStatus
    content_date: str
    content_time: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str
    retrieve_url: str


def _value(item: dict[str, Any], tag: str) -> str:
    values = item.get(tag, {}).get("Value") or [""]
    return str(values[0])


async def _study_attributes(request: Request[Any, Any, Any], study_uid: str) -> Dataset:
    """The study's stored attributes (patient and study modules), as the principal may see them."""
    policy = visible_studies(principal_of(request)) or ()
    query = parse_query(Level.STUDY, [("StudyInstanceUID", study_uid), ("includefield", "all")])
    context = app_context(request)
    if not await context.visible_studies.allows(policy, study_uid):
        raise NotFoundException(f"there is no study {study_uid}")
    rows = (await anyio.to_thread.run_sync(lambda: context.archive.index.search(query, max_results=1))).rows
    if not rows:
        raise NotFoundException(f"there is no study {study_uid}")
    return Dataset.from_json(rows[0])


def _build(study: Dataset, form: AttachmentForm, content: bytes | None, author: str) -> Dataset:
    info = AttachmentInfo(title=form.title, status=form.status, author=author)
    if content is None:
        return text_report(study, form.text or "", info)
    if content.startswith(b"%PDF-"):
        return encapsulated_pdf(study, content, info)
    return secondary_capture(study, content, info)


def _store(request: Request[Any, Any, Any], dataset: Dataset, study_uid: str) -> StoreResult:
    archive = app_context(request).archive
    with tempfile.NamedTemporaryFile(dir=archive.blobs.staging_dir(), suffix=".dcm", delete=False) as spool:
        dcmwrite(spool, dataset, enforce_file_format=True)
    part = Path(spool.name)
    sha256 = hashlib.sha256(part.read_bytes()).hexdigest()
    return archive.store(part, sha256, study_uid=study_uid)


@post(
    "/api/studies/{study:str}/attachments",
    guards=[require(Permission.STORE)],
    tags=["attachments"],
    operation_id="AttachToStudy",
    summary="Attach a report, PDF or picture to a study",
    responses=problems(400, 401, 403, 404, 409, 413),
)
async def attach(
    request: Request[Any, Any, Any],
    study: str,
    data: Annotated[AttachmentForm, Body(media_type=RequestEncodingType.MULTI_PART)],
) -> Attachment:
    """Store a PDF (Encapsulated PDF), a JPEG/PNG (Secondary Capture) or a `text` (Basic Text SR).

    The new instance joins the study in a series of its own, preliminary or final by `status`.
    """
    if not data.title.strip() or len(data.title) > 64:
        raise ValidationException("give a title of 1 to 64 characters")
    if (data.file is None) == (data.text is None):
        raise ValidationException("send either a file (PDF, JPEG or PNG) or a text, not both")
    study_attributes = await _study_attributes(request, study)
    content = None
    if data.file is not None:
        content = await data.file.read(MAX_ATTACHMENT_BYTES + 1)
        if len(content) > MAX_ATTACHMENT_BYTES:
            raise ValidationException(f"attachments are limited to {MAX_ATTACHMENT_BYTES // 1024**2} MiB")
    author = principal_of(request).name
    try:
        dataset = await anyio.to_thread.run_sync(_build, study_attributes, data, content, author)
    except InvalidInstance as exc:
        raise ValidationException(str(exc)) from exc  # the upload is not what it claims: the client's error
    result = await anyio.to_thread.run_sync(_store, request, dataset, study)
    return _attachment(
        request,
        {
            _TAGS["series"]: {"Value": [result.series_uid]},
            _TAGS["sop"]: {"Value": [result.sop_uid]},
            _TAGS["sop_class"]: {"Value": [result.sop_class_uid]},
            _TAGS["title"]: {"Value": [dataset.SeriesDescription]},
            _TAGS["date"]: {"Value": [dataset.ContentDate]},
            _TAGS["time"]: {"Value": [dataset.ContentTime]},
            _TAGS["verification"]: {"Value": [dataset.VerificationFlag]},
        },
        study,
    )


def _attachment(request: Request[Any, Any, Any], item: dict[str, Any], study_uid: str) -> Attachment:
    sop_class = _value(item, _TAGS["sop_class"])
    series, sop = _value(item, _TAGS["series"]), _value(item, _TAGS["sop"])
    verified = _value(item, _TAGS["verification"]) == "VERIFIED"
    return Attachment(
        kind=_KIND_BY_SOP_CLASS.get(sop_class, "image"),
        title=_value(item, _TAGS["title"]),
        status=ReportStatus.FINAL if verified else ReportStatus.PRELIMINARY,
        content_date=_value(item, _TAGS["date"]),
        content_time=_value(item, _TAGS["time"]),
        series_uid=series,
        sop_uid=sop,
        sop_class_uid=sop_class,
        retrieve_url=f"{dicomweb_base(request)}/studies/{study_uid}/series/{series}/instances/{sop}",
    )


@get(
    "/api/studies/{study:str}/attachments",
    guards=[require(Permission.READ)],
    tags=["attachments"],
    operation_id="ListAttachments",
    summary="List a study's reports and attachments",
    responses=problems(400, 401, 403, 404),
)
async def list_attachments(request: Request[Any, Any, Any], study: str) -> list[Attachment]:
    """The study's PDFs, pictures and text reports, newest first, with their status."""
    context = app_context(request)
    query = parse_query(
        Level.INSTANCE,
        [("SOPClassUID", ",".join(ATTACHMENT_SOP_CLASSES)), ("includefield", "SeriesDescription")],
        study_uid=study,
    )
    rows = (await anyio.to_thread.run_sync(lambda: context.archive.index.search(query, max_results=1000))).rows
    found = []
    for row in rows:
        series, sop = _value(row, _TAGS["series"]), _value(row, _TAGS["sop"])
        (metadata,) = await anyio.to_thread.run_sync(context.archive.index.metadata, study, series, sop)
        found.append(_attachment(request, {**json.loads(metadata), **row}, study))
    return sorted(found, key=lambda a: (a.content_date, a.content_time), reverse=True)


ATTACHMENT_HANDLERS: Final = [attach, list_attachments]
