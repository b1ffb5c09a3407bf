"""Reports and attachments as DICOM objects of a study: PDF, pictures and text reports.

Each becomes a new instance in a new series of the study it is attached to, carrying the study's
patient and study attributes, so that every DICOM and DICOMweb client sees it with the images:
- a PDF as Encapsulated PDF (PS3.3 A.45.1),
- a JPEG or PNG picture as Secondary Capture (PS3.3 A.8.1, built with highdicom),
- a text as a Basic Text SR (PS3.3 A.35.1).
Preliminary or final is the Verification Flag (UNVERIFIED / VERIFIED): part of the SR document
module, and added to the other two as a standard extension (PS3.4 B.3.1.3), so one attribute says
it for all three. Pure functions over bytes: the caller stores the dataset.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Final

import highdicom
import numpy as np
from PIL import Image, UnidentifiedImageError
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from storage.dicom.failure_reasons import CANNOT_UNDERSTAND
from storage.errors import InvalidInstance

__all__ = [
    "ATTACHMENT_SOP_CLASSES",
    "STUDY_ATTRIBUTES",
    "AttachmentInfo",
    "ReportStatus",
    "encapsulated_pdf",
    "secondary_capture",
    "text_report",
]

ENCAPSULATED_PDF: Final = "1.2.840.10008.5.1.4.1.1.104.1"
SECONDARY_CAPTURE: Final = "1.2.840.10008.5.1.4.1.1.7"
BASIC_TEXT_SR: Final = "1.2.840.10008.5.1.4.1.1.88.11"
ATTACHMENT_SOP_CLASSES: Final = (ENCAPSULATED_PDF, SECONDARY_CAPTURE, BASIC_TEXT_SR)
# Copied from the study onto every attachment: the Patient and General Study modules (PS3.3 C.7.1.1,
# C.7.2.1) as the index keeps them.
STUDY_ATTRIBUTES: Final = (
    "SpecificCharacterSet",
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
    "StudyDescription",
)
_MAX_TEXT: Final = 64 * 1024  # UT could hold more; a report is far below this
# LOINC 18748-4 "Diagnostic imaging report": the document title of a text report (CID 7000).
_REPORT_TITLE_CODE: Final = ("18748-4", "LN", "Diagnostic imaging report")
_FINDINGS_CODE: Final = ("121071", "DCM", "Finding")
_MANUFACTURER: Final = "webpacs"


class ReportStatus(StrEnum):
    """Whether an attachment is preliminary or final (Verification Flag)."""

    PRELIMINARY = "preliminary"
    FINAL = "final"

    @property
    def verification_flag(self) -> str:
        """UNVERIFIED for preliminary, VERIFIED for final."""
        return "VERIFIED" if self is ReportStatus.FINAL else "UNVERIFIED"


@dataclass(frozen=True)
class AttachmentInfo:
    """Who attaches what to which study."""

    title: str
    status: ReportStatus
    author: str
    series_number: int = 9000  # above the scanners' own series numbers


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def _base(study: Dataset, info: AttachmentInfo, sop_class_uid: str, modality: str) -> Dataset:
    """The patient, study, series and SOP common attributes every attachment shares."""
    now = datetime.now(UTC)
    ds = Dataset()
    for keyword in STUDY_ATTRIBUTES:
        if keyword in study:
            setattr(ds, keyword, study[keyword].value)
    ds.SpecificCharacterSet = "ISO_IR 192"  # titles and authors may hold any character
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = modality
    ds.SeriesNumber = info.series_number
    ds.SeriesDescription = info.title
    ds.InstanceNumber = 1
    ds.Manufacturer = _MANUFACTURER
    ds.ContentDate = ds.InstanceCreationDate = now.strftime("%Y%m%d")
    # Microseconds: two reports attached within one second still sort in the order they were made.
    ds.ContentTime = ds.InstanceCreationTime = now.strftime("%H%M%S.%f")
    ds.VerificationFlag = info.status.verification_flag
    if info.status is ReportStatus.FINAL:
        observer = Dataset()
        observer.VerifyingObserverName = info.author
        observer.VerificationDateTime = now.strftime("%Y%m%d%H%M%S")
        observer.VerifyingOrganization = _MANUFACTURER
        observer.VerifyingObserverIdentificationCodeSequence = Sequence()
        ds.VerifyingObserverSequence = Sequence([observer])
    return ds


def _with_file_meta(ds: Dataset) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    return ds


def _refuse(reason: str, sop_class_uid: str) -> InvalidInstance:
    return InvalidInstance(reason, CANNOT_UNDERSTAND, sop_class_uid=sop_class_uid)


def encapsulated_pdf(study: Dataset, pdf: bytes, info: AttachmentInfo) -> Dataset:
    """An Encapsulated PDF instance of `study` holding `pdf`.

    Raises:
        InvalidInstance: `pdf` is not a PDF document.
    """
    if not pdf.startswith(b"%PDF-"):
        raise _refuse("the file is not a PDF document (it does not start with %PDF-)", ENCAPSULATED_PDF)
    ds = _base(study, info, ENCAPSULATED_PDF, "DOC")
    ds.ConversionType = "WSD"  # workstation
    ds.BurnedInAnnotation = "YES"  # a document shows the patient's identity
    ds.DocumentTitle = info.title
    ds.ConceptNameCodeSequence = Sequence()
    ds.AcquisitionDateTime = ds.ContentDate + ds.ContentTime
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocumentLength = len(pdf)
    ds.EncapsulatedDocument = pdf + b"\0" * (len(pdf) % 2)  # OB values have even length
    return _with_file_meta(ds)


def secondary_capture(study: Dataset, picture: bytes, info: AttachmentInfo) -> Dataset:
    """A Secondary Capture instance of `study` showing a JPEG or PNG picture (8-bit RGB or grey).

    Raises:
        InvalidInstance: `picture` is not an image Pillow can read.
    """
    try:
        with Image.open(io.BytesIO(picture)) as image:
            grey = image.mode in {"1", "L", "I;16", "I"}
            pixels = np.asarray(image.convert("L" if grey else "RGB"))
    except (UnidentifiedImageError, OSError) as exc:
        raise _refuse(f"the file is not a JPEG or PNG picture ({exc})", SECONDARY_CAPTURE) from exc
    base = _base(study, info, SECONDARY_CAPTURE, "OT")
    image_ds = highdicom.sc.SCImage(
        pixel_array=pixels,
        photometric_interpretation="MONOCHROME2" if grey else "RGB",
        bits_allocated=8,
        coordinate_system="PATIENT",
        patient_orientation=("L", "F"),  # required by highdicom for PATIENT; a capture has no better
        study_instance_uid=base.StudyInstanceUID,
        series_instance_uid=base.SeriesInstanceUID,
        sop_instance_uid=base.SOPInstanceUID,
        series_number=info.series_number,
        instance_number=1,
        manufacturer=_MANUFACTURER,
        patient_id=base.get("PatientID"),
        patient_name=base.get("PatientName"),
        patient_birth_date=base.get("PatientBirthDate"),
        patient_sex=base.get("PatientSex") or None,
        accession_number=base.get("AccessionNumber"),
        study_id=base.get("StudyID"),
        study_date=base.get("StudyDate") or None,
        study_time=base.get("StudyTime") or None,
        referring_physician_name=base.get("ReferringPhysicianName"),
        transfer_syntax_uid=ExplicitVRLittleEndian,
    )
    for element in base:  # the study's own values, the title and the status win over defaults
        image_ds[element.tag] = element
    return image_ds


def text_report(study: Dataset, text: str, info: AttachmentInfo) -> Dataset:
    """A Basic Text SR instance of `study`: one finding holding `text`.

    Raises:
        InvalidInstance: the text is empty or longer than 64 KiB.
    """
    if not text.strip() or len(text) > _MAX_TEXT:
        raise _refuse(f"a text report needs 1 to {_MAX_TEXT} characters", BASIC_TEXT_SR)
    ds = _base(study, info, BASIC_TEXT_SR, "SR")
    ds.ValueType = "CONTAINER"
    ds.ContinuityOfContent = "SEPARATE"
    ds.ConceptNameCodeSequence = Sequence([_code(*_REPORT_TITLE_CODE)])
    ds.CompletionFlag = "COMPLETE" if info.status is ReportStatus.FINAL else "PARTIAL"
    ds.ReferencedPerformedProcedureStepSequence = Sequence()
    ds.PerformedProcedureCodeSequence = Sequence()
    author = Dataset()
    author.ObserverType = "PSN"
    author.PersonName = info.author
    author.PersonIdentificationCodeSequence = Sequence()
    author.InstitutionName = _MANUFACTURER
    ds.AuthorObserverSequence = Sequence([author])
    finding = Dataset()
    finding.RelationshipType = "CONTAINS"
    finding.ValueType = "TEXT"
    finding.ConceptNameCodeSequence = Sequence([_code(*_FINDINGS_CODE)])
    finding.TextValue = text
    ds.ContentSequence = Sequence([finding])
    return _with_file_meta(ds)
