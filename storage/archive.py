"""The archive's use cases: store, locate, delete, sweep. The only place the index and the blobs meet.

Ordering rule (DESIGN.md §1): bytes durable, then indexed, then success. A crash between the two
leaves an unreferenced blob for `sweep_orphans`, never an index row without its bytes.
"""

from __future__ import annotations

import logging
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from storage.dicom.failure_reasons import DATA_SET_DOES_NOT_MATCH_SOP_CLASS, ERROR_PROCESSING
from storage.dicom.instance import read_instance
from storage.errors import ArchiveError, BlobExists, InvalidInstance
from storage.group_commit import IndexWriter
from storage.index import NewInstance

if TYPE_CHECKING:
    from collections.abc import Iterator

    from storage.blobs.base import BlobStore
    from storage.dicom.records import ParsedInstance
    from storage.index import Index, StoredInstance

__all__ = ["Archive", "StoreResult"]

log = logging.getLogger(__name__)

# Blob keys start with the UTC day of ingest, so the start-up sweep only lists recent keys.
_KEY_DAY_FORMAT = "%Y%m%d"


@dataclass(frozen=True, slots=True)
class StoreResult:
    """The outcome of storing one received instance."""

    outcome: Literal["stored", "already_present", "replaced"]
    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str


class Archive:
    """Store, find and delete instances; every method is blocking (run it in a worker thread)."""

    def __init__(self, index: Index, blobs: BlobStore) -> None:
        """Join an index and a blob store."""
        self.index = index
        self.blobs = blobs
        self._writer = IndexWriter(index)

    def store(self, part: Path, sha256: str, *, study_uid: str | None = None) -> StoreResult:
        """Store the Part-10 file at `part` (consumed) whose SHA-256 is `sha256`.

        Args:
            part: a spooled file on the blob store's staging filesystem; moved or removed.
            sha256: hex digest of the file, computed while it was received.
            study_uid: the Study Instance UID of the request URL, which the instance must match.

        Raises:
            InvalidInstance: not storable, with the PS3.18 failure reason; nothing was stored.
        """
        try:
            parsed = read_instance(part)
            if study_uid is not None and parsed.study.study_instance_uid != study_uid:
                raise InvalidInstance(
                    f"the instance belongs to study {parsed.study.study_instance_uid}, not to "
                    f"study {study_uid} named in the request URL (PS3.18 §10.5.1)",
                    DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
                    sop_class_uid=parsed.instance.sop_class_uid,
                    sop_instance_uid=parsed.instance.sop_instance_uid,
                )
            return self._store_parsed(part, sha256, parsed)
        finally:
            part.unlink(missing_ok=True)

    def _store_parsed(self, part: Path, sha256: str, parsed: ParsedInstance) -> StoreResult:
        key = _blob_key(parsed, sha256)
        try:
            size = self.blobs.put_file(key, part)
            new_blob = True
        except BlobExists:
            # Same content-addressed key: these exact bytes are already durable.
            size = part.stat().st_size
            new_blob = False
        try:
            outcome = self._writer.add(NewInstance(parsed, key, size, sha256))
        except ArchiveError as exc:
            if new_blob:
                self.blobs.delete(key)
            if isinstance(exc, InvalidInstance):
                raise
            raise InvalidInstance(
                str(exc),
                ERROR_PROCESSING,
                sop_class_uid=parsed.instance.sop_class_uid,
                sop_instance_uid=parsed.instance.sop_instance_uid,
            ) from exc
        except BaseException:
            if new_blob:
                self.blobs.delete(key)
            raise
        if outcome.kind == "already_present" and new_blob:
            self.blobs.delete(key)  # identical bytes were stored earlier under another day's key
        elif outcome.old_blob_key is not None and outcome.old_blob_key != key:
            self.blobs.delete(outcome.old_blob_key)
        return StoreResult(
            outcome=outcome.kind,
            study_uid=parsed.study.study_instance_uid,
            series_uid=parsed.series.series_instance_uid,
            sop_uid=parsed.instance.sop_instance_uid,
            sop_class_uid=parsed.instance.sop_class_uid,
        )

    def instances(
        self, study_uid: str, series_uid: str | None = None, sop_uid: str | None = None
    ) -> list[StoredInstance]:
        """The stored instances of a study, series or one instance. Raises NotFound."""
        return self.index.stored_instances(study_uid, series_uid, sop_uid)

    @contextmanager
    def local_file(self, stored: StoredInstance) -> Iterator[Path]:
        """The instance's bytes as a local file, for codecs that need a path (a temp copy if remote)."""
        path = self.blobs.local_path(stored.blob_key)
        if path is not None:
            yield path
            return
        with tempfile.NamedTemporaryFile(dir=self.blobs.staging_dir(), suffix=".dcm") as copy:
            for chunk in self.blobs.open_range(stored.blob_key):
                copy.write(chunk)
            copy.flush()
            yield Path(copy.name)

    def delete(self, study_uid: str, series_uid: str | None = None, sop_uid: str | None = None) -> int:
        """Delete from the index first, then the bytes; return how many instances went.

        Raises:
            NotFound: nothing matches.
        """
        keys = self.index.delete(study_uid, series_uid, sop_uid)
        for key in keys:
            self.blobs.delete(key)
        return len(keys)

    def readiness_problems(self) -> dict[str, str]:
        """What keeps the archive from serving: {"database" | "blobs": reason}; empty when ready."""
        problems: dict[str, str] = {}
        try:
            self.index.check()
        except ArchiveError as exc:
            problems["database"] = str(exc)
        try:
            self.blobs.check()
        except ArchiveError as exc:
            problems["blobs"] = str(exc)
        return problems

    def sweep_orphans(self, *, grace_seconds: float, recent_days: int | None = 2) -> int:
        """Delete blobs no index row references, older than `grace_seconds`; return the count.

        Args:
            grace_seconds: skip younger blobs, which a concurrent store may be about to index.
            recent_days: only look at keys ingested in the last N UTC days (None: every key).
        """
        prefixes = [""] if recent_days is None else _recent_prefixes(recent_days)
        removed = 0
        for prefix in prefixes:
            for key in self._unreferenced(prefix):
                if self._age(key) >= grace_seconds:
                    log.warning("removing orphaned blob %s (stored but never indexed)", key)
                    self.blobs.delete(key)
                    removed += 1
        return removed

    def _unreferenced(self, prefix: str) -> Iterator[str]:
        for key in self.blobs.keys(prefix):
            if not self.index.is_referenced(key):
                yield key

    def _age(self, key: str) -> float:
        path = self.blobs.local_path(key)
        if path is None:
            return float("inf")
        return time.time() - path.stat().st_mtime


def _blob_key(parsed: ParsedInstance, sha256: str) -> str:
    """Immutable, content-addressed key: `<ingest day>/<study>/<series>/<sop>.<sha256 prefix>.dcm`."""
    day = datetime.now(UTC).strftime(_KEY_DAY_FORMAT)
    return (
        f"{day}/{parsed.study.study_instance_uid}/{parsed.series.series_instance_uid}/"
        f"{parsed.instance.sop_instance_uid}.{sha256[:24]}.dcm"
    )


def _recent_prefixes(days: int) -> list[str]:
    now = datetime.now(UTC).timestamp()
    return sorted(
        {datetime.fromtimestamp(now - day * 86400, UTC).strftime(_KEY_DAY_FORMAT) + "/" for day in range(days)}
    )
