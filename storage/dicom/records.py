"""What the archive computes once per instance at ingest and the index keeps (DESIGN.md §1, store step 4)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = [
    "BULK_BASE",
    "Frame",
    "InstanceAttributes",
    "ParsedInstance",
    "SeriesAttributes",
    "StudyAttributes",
]

# Stored metadata carries BulkDataURIs under this placeholder; the edge replaces it with the
# request's DICOMweb base URL (e.g. "https://pacs.example/dicomweb") when it serves the metadata.
BULK_BASE = "@@DICOMWEB_BASE@@"

DicomJson = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Frame:
    """Where one frame's bytes lie in the Part-10 file: (offset, length) per fragment, in order.

    Native pixel data: one pair. Encapsulated pixel data: the frame's fragments' values.
    """

    fragments: tuple[tuple[int, int], ...]


@dataclass(frozen=True, slots=True)
class StudyAttributes:
    """Patient- and study-level matching keys, decoded to str ('' when absent)."""

    study_instance_uid: str
    patient_id: str
    patient_name: str
    patient_birth_date: str
    patient_sex: str
    study_date: str
    study_time: str
    accession_number: str
    study_id: str
    study_description: str
    referring_physician_name: str
    institution_name: str
    json: DicomJson  # DICOM JSON (PS3.18 §F.2) of every patient/study-level attribute present


@dataclass(frozen=True, slots=True)
class SeriesAttributes:
    """Series-level matching keys."""

    series_instance_uid: str
    modality: str
    series_number: int | None
    series_description: str
    body_part_examined: str
    performed_procedure_step_start_date: str
    performed_procedure_step_start_time: str
    json: DicomJson  # DICOM JSON of every series-level attribute present


@dataclass(frozen=True, slots=True)
class InstanceAttributes:
    """Instance-level matching keys."""

    sop_instance_uid: str
    sop_class_uid: str
    instance_number: int | None
    transfer_syntax_uid: str
    rows: int | None
    columns: int | None
    bits_allocated: int | None
    number_of_frames: int  # 0 when the instance has no pixel data
    json: DicomJson  # DICOM JSON of the instance-level QIDO attributes present


@dataclass(frozen=True, slots=True)
class ParsedInstance:
    """Everything the index needs about one received instance."""

    study: StudyAttributes
    series: SeriesAttributes
    instance: InstanceAttributes
    metadata: bytes  # the whole instance as a UTF-8 DICOM JSON object, bulk data as BulkDataURIs
    frames: tuple[Frame, ...] | None  # None: offsets unknown (deflated, big endian): decode to serve
