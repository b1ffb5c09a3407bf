"""Which attributes belong to the patient/study, series and instance levels of the index.

The levels follow the Information Model of PS3.4 §C.6.2 (Study Root) and the QIDO-RS return keys of
PS3.18 §10.6.3; patient attributes live with the study because QIDO-RS has no patient resource.
"""

from __future__ import annotations

from typing import Final

from pydicom.datadict import tag_for_keyword

__all__ = ["INSTANCE_LEVEL_TAGS", "SERIES_LEVEL_TAGS", "STUDY_LEVEL_TAGS"]


def _tags(*keywords: str) -> frozenset[int]:
    tags = {keyword: tag_for_keyword(keyword) for keyword in keywords}
    missing = [keyword for keyword, tag in tags.items() if tag is None]
    if missing:
        raise ValueError(f"unknown DICOM keywords in a level table: {missing}")
    return frozenset(int(tag) for tag in tags.values() if tag is not None)


STUDY_LEVEL_TAGS: Final = _tags(
    # Patient module (PS3.3 §C.7.1.1) and Patient Study module (§C.7.2.2)
    "PatientName", "PatientID", "IssuerOfPatientID", "OtherPatientIDsSequence", "PatientBirthDate",
    "PatientBirthTime", "PatientSex", "PatientAge", "PatientSize", "PatientWeight",
    "EthnicGroup", "PatientComments", "PatientSpeciesDescription", "PatientBreedDescription",
    "ResponsiblePerson", "ResponsibleOrganization", "PatientIdentityRemoved",
    "AdditionalPatientHistory", "AdmittingDiagnosesDescription",
    # General Study module (§C.7.2.1)
    "StudyInstanceUID", "StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID",
    "AccessionNumber", "IssuerOfAccessionNumberSequence", "StudyDescription",
    "PhysiciansOfRecord", "NameOfPhysiciansReadingStudy", "ProcedureCodeSequence",
    "ReferencedStudySequence", "RequestingService", "TimezoneOffsetFromUTC",
)  # fmt: skip

SERIES_LEVEL_TAGS: Final = _tags(
    # General Series (§C.7.3.1), General Equipment (§C.7.5.1), Frame of Reference (§C.7.4.1)
    "Modality", "SeriesInstanceUID", "SeriesNumber", "SeriesDescription", "SeriesDate",
    "SeriesTime", "Laterality", "BodyPartExamined", "ProtocolName", "OperatorsName",
    "PerformingPhysicianName", "PerformedProcedureStepID", "PerformedProcedureStepStartDate",
    "PerformedProcedureStepStartTime", "PerformedProcedureStepDescription",
    "RequestAttributesSequence", "PatientPosition", "Manufacturer", "ManufacturerModelName",
    "InstitutionName", "InstitutionalDepartmentName", "StationName", "DeviceSerialNumber",
    "SoftwareVersions", "FrameOfReferenceUID",
)  # fmt: skip

INSTANCE_LEVEL_TAGS: Final = _tags(
    # SOP Common (§C.12.1), General Image (§C.7.6.1), Image Pixel (§C.7.6.3), Multi-frame (§C.7.6.6)
    "SOPClassUID", "SOPInstanceUID", "InstanceNumber", "ContentDate", "ContentTime",
    "AcquisitionDate", "AcquisitionTime", "AcquisitionNumber", "ImageType", "Rows", "Columns",
    "BitsAllocated", "BitsStored", "SamplesPerPixel", "PhotometricInterpretation",
    "NumberOfFrames", "ImageComments", "ContentLabel", "ContentDescription",
    "PresentationCreationDate", "DocumentTitle", "CompletionFlag", "VerificationFlag",
    "ConceptNameCodeSequence", "SpecificCharacterSet",
)  # fmt: skip
