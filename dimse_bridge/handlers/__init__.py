"""DIMSE service handlers, one module per service family, each with its status table."""
