"""Blob stores: the port and its adapters."""

from __future__ import annotations

from storage.blobs.base import CHUNK_SIZE, BlobStore
from storage.blobs.open import open_blob_store

__all__ = ["CHUNK_SIZE", "BlobStore", "open_blob_store"]
