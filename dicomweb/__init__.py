"""The HTTP edge and composition root: DICOMweb, WADO-URI, the management API and the CLI."""
