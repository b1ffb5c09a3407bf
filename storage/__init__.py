"""The archive core: DICOM parsing, the blob store, the index and the use cases that join them.

No HTTP, no DIMSE, no auth here (DESIGN.md §3).
"""
