"""Blob stores: the port and its adapters."""

from __future__ import annotations

from storage.blobs.base import CHUNK_SIZE, BlobStore
from storage.blobs.open import open_blob_store
from storage.blobs.s3 import S3Options

__all__ = ["CHUNK_SIZE", "BlobStore", "S3Options", "open_blob_store"]
