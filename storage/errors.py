"""The archive core's exception hierarchy.

Messages name the bad value and say what to do; the HTTP edge translates them to status codes in
exactly one place (`dicomweb/errors.py`).
"""

from __future__ import annotations

__all__ = [
    "ArchiveError",
    "BlobError",
    "BlobExists",
    "BlobNotFound",
    "ConflictingInstance",
    "IndexUnavailable",
    "InvalidBlobKey",
    "InvalidInstance",
    "InvalidMediaType",
    "InvalidQuery",
    "MalformedMultipart",
    "MultipartLimitExceeded",
    "NotAcceptable",
    "NotFound",
]


class ArchiveError(Exception):
    """Base of every error the archive core raises on purpose."""


class InvalidInstance(ArchiveError):
    """A received object is not a storable DICOM instance.

    Attributes:
        failure_reason: the PS3.18 / PS3.4 failure code to report (e.g. 0xC122, 0xA900).
        sop_class_uid, sop_instance_uid: the instance's UIDs when they could be read, else "".
    """

    def __init__(
        self, message: str, failure_reason: int = 0xC000, *, sop_class_uid: str = "", sop_instance_uid: str = ""
    ) -> None:
        super().__init__(message)
        self.failure_reason = failure_reason
        self.sop_class_uid = sop_class_uid
        self.sop_instance_uid = sop_instance_uid


class InvalidQuery(ArchiveError):
    """A search request cannot be understood (unknown key, bad date, malformed UID...)."""


class NotFound(ArchiveError):
    """The study, series, instance or frame asked for is not in the archive."""


class ConflictingInstance(ArchiveError):
    """A SOP Instance UID (or Series Instance UID) is already stored under another study or series.

    A UID identifies exactly one object (PS3.5 §9): the new instance is refused, the stored one kept.
    """


class IndexUnavailable(ArchiveError):
    """The index database is unreachable or its schema is not at the expected migration."""


class BlobError(ArchiveError):
    """The blob store failed."""


class BlobNotFound(BlobError):
    """No blob is stored under the key."""


class BlobExists(BlobError):
    """A blob is already stored under the key (blobs are write-once)."""


class InvalidBlobKey(BlobError):
    """A key is not of the allowed form (relative, `[A-Za-z0-9._/-]`, no `..`)."""


class NotAcceptable(ArchiveError):
    """No representation the client accepts can be produced; the message lists what can be."""


class InvalidMediaType(ArchiveError):
    """A Content-Type or Accept value cannot be parsed as media types (RFC 9110 §8.3.1, §12.5.1)."""


class MalformedMultipart(ArchiveError):
    """A multipart/related body is not well formed: boundary missing or wrong, body empty or cut short."""


class MultipartLimitExceeded(ArchiveError):
    """A multipart/related body has a part larger, or more parts, than the configured limits allow."""
