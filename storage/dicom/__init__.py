"""Pure DICOM functions over streams and files: no I/O of their own beyond the file they are given."""
