"""The DIMSE bridge: a separate process turning the DICOM network into DICOMweb calls (DESIGN.md §1)."""
