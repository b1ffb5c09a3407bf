"""The archive's use cases: store, locate, delete, sweep. The only place the index and the blobs meet.

Ordering rule (DESIGN.md §1): bytes durable, then indexed, then success. A crash between the two
leaves an unreferenced blob for `sweep_orphans`, never an index row without its bytes.

Several hosts may share one index and one blob store: a store journals its blob key (committed)
before the put, and the index transaction removes the journal row (storage/index/journal.py). The
sweep then tells a crash's orphan (unreferenced, not journaled) from another host's store in flight
(journaled) without guessing from ages. Every write gets a key of its own, so no two stores ever
share a blob and a sweep can never remove bytes that a concurrent store of the same content relies on.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import shutil
import socket
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from storage.dicom.failure_reasons import DATA_SET_DOES_NOT_MATCH_SOP_CLASS, ERROR_PROCESSING
from storage.dicom.ingest_compression import ORIGINALS_PREFIX, CompressionPolicy, source_ae_title
from storage.dicom.instance import read_instance
from storage.dicom.transcode import transcode_instance
from storage.errors import ArchiveError, InvalidInstance, NotAcceptable
from storage.group_commit import IndexWriter
from storage.index import NewInstance

if TYPE_CHECKING:
    from collections.abc import Iterator

    from storage.blobs.base import BlobStore
    from storage.dicom.records import ParsedInstance
    from storage.index import Index, StoredInstance

__all__ = ["Archive", "StoreResult", "blob_key"]

log = logging.getLogger(__name__)

# Blob keys start with the UTC day of ingest, so the start-up sweep only lists recent keys.
_KEY_DAY_FORMAT = "%Y%m%d"
# Keys the sweep looks up in the index at once.
_SWEEP_PAGE = 500


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

    def __init__(
        self,
        index: Index,
        blobs: BlobStore,
        *,
        host: str | None = None,
        compression: CompressionPolicy | None = None,
        mirror: BlobStore | None = None,
    ) -> None:
        """Join an index and a blob store; `host` names this machine in the blob journal (default: hostname).

        `compression` re-encodes received instances that match its rules (default: none, stored as received).
        `mirror` receives every stored instance too, under the same key, before it is acknowledged (a
        backup's blob store, say); deletions and replacements leave it its copies, as a backup keeps them.
        """
        self.index = index
        self.blobs = blobs
        self.mirror = mirror
        self.host = host or socket.gethostname()
        self.compression = compression or CompressionPolicy()
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
            target = self._compression_target(part, parsed)
            if target is not None:
                return self._store_compressed(part, sha256, parsed, target)
            return self._store_parsed(part, sha256, parsed)
        finally:
            part.unlink(missing_ok=True)

    def _compression_target(self, part: Path, parsed: ParsedInstance) -> str | None:
        if not self.compression.rules:
            return None
        return self.compression.target(
            transfer_syntax=parsed.instance.transfer_syntax_uid,
            modality=parsed.series.modality,
            source_ae=source_ae_title(part),
            bits_allocated=parsed.instance.bits_allocated,
            has_pixels=parsed.instance.number_of_frames > 0,
        )

    def _store_compressed(self, part: Path, received_sha256: str, parsed: ParsedInstance, target: str) -> StoreResult:
        """Store the instance re-encoded in `target` (frame by frame), the original kept if the policy says so.

        The compressed file is parsed like any received one, so the index, metadata and frame offsets
        describe the bytes served. When the codec refuses the pixels, the instance is stored as received.
        """
        with tempfile.NamedTemporaryFile(dir=part.parent, suffix=".dcm", delete=False) as out:
            compressed = Path(out.name)
            digest = hashlib.sha256()
            try:
                for chunk in transcode_instance(part, target):
                    out.write(chunk)
                    digest.update(chunk)
            except NotAcceptable as exc:
                compressed.unlink(missing_ok=True)
                log.warning("storing %s as received: %s", parsed.instance.sop_instance_uid, exc)
                return self._store_parsed(part, received_sha256, parsed)
        try:
            sha256 = digest.hexdigest()
            recompressed = read_instance(compressed)
            key = blob_key(recompressed, sha256)
            if not self.compression.keep_original:
                return self._store_parsed(compressed, sha256, recompressed, key=key)
            # The original is durable before the compressed instance is indexed; it sits outside the
            # day prefixes the sweep walks, and goes with its instance (`delete`).
            self.blobs.put_file(ORIGINALS_PREFIX + key, part)
            try:
                return self._store_parsed(compressed, sha256, recompressed, key=key)
            except BaseException:
                self.blobs.delete(ORIGINALS_PREFIX + key)
                raise
        finally:
            compressed.unlink(missing_ok=True)

    def _store_parsed(self, part: Path, sha256: str, parsed: ParsedInstance, *, key: str | None = None) -> StoreResult:
        key = key or blob_key(parsed, sha256)
        self.index.journal.begin(key, self.host)  # durable before the bytes: the sweep spares them
        try:
            size = self.put_blob(key, part)
        except BaseException:
            self.index.journal.forget([key])
            raise
        try:
            # The index transaction also removes the journal row.
            outcome = self._writer.add(NewInstance(parsed, key, size, sha256))
        except ArchiveError as exc:
            self._drop(key)
            if isinstance(exc, InvalidInstance):
                raise
            raise InvalidInstance(
                str(exc),
                ERROR_PROCESSING,
                sop_class_uid=parsed.instance.sop_class_uid,
                sop_instance_uid=parsed.instance.sop_instance_uid,
            ) from exc
        except BaseException:
            self._drop(key)
            self.index.journal.forget([key])
            raise
        if outcome.kind == "already_present":
            self._drop(key)  # identical bytes were stored earlier under another key
        elif outcome.old_blob_key is not None and outcome.old_blob_key != key:
            self.blobs.delete(outcome.old_blob_key)
        return StoreResult(
            outcome=outcome.kind,
            study_uid=parsed.study.study_instance_uid,
            series_uid=parsed.series.series_instance_uid,
            sop_uid=parsed.instance.sop_instance_uid,
            sop_class_uid=parsed.instance.sop_class_uid,
        )

    def put_blob(self, key: str, part: Path) -> int:
        """Put the file under `key` in the mirror (a copy), then in the store (consuming it); its size.

        Every write of new instance bytes goes through here, so that the mirror misses none.

        Raises:
            BlobExists, InvalidBlobKey, BlobError: as `BlobStore.put_file`, from either store.
        """
        if self.mirror is not None:
            with tempfile.NamedTemporaryFile(dir=self.mirror.staging_dir(), prefix="mirror-", delete=False) as copy:
                mirrored = Path(copy.name)
            try:
                shutil.copyfile(part, mirrored)
                self.mirror.put_file(key, mirrored)
            finally:
                mirrored.unlink(missing_ok=True)
        try:
            return self.blobs.put_file(key, part)
        except BaseException:
            if self.mirror is not None:
                self.mirror.delete(key)
            raise

    def _drop(self, key: str) -> None:
        """Remove a blob that was never acknowledged, from the store and the mirror."""
        self.blobs.delete(key)
        if self.mirror is not None:
            self.mirror.delete(key)

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
            self.blobs.delete(ORIGINALS_PREFIX + key)  # kept by the compression policy, if it was
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
        if self.mirror is not None:
            try:
                self.mirror.check()
            except ArchiveError as exc:
                problems["mirror"] = str(exc)
        return problems

    def sweep_orphans(self, *, grace_seconds: float, recent_days: int | None = 2, after_restart: bool = False) -> int:
        """Delete blobs no index row references and no store is writing; return the count.

        A blob that is neither referenced nor journaled is a crash's orphan, removed whatever its
        age. A journaled one is another store in flight, spared unless its row is older than
        `grace_seconds` (its writer died) or, with `after_restart`, it is this host's own (this
        host writes nothing while it starts, so its journal rows are its previous run's).

        Args:
            grace_seconds: longer than any store takes (a 4 GB upload included).
            recent_days: only look at keys ingested in the last N UTC days (None: every key).
            after_restart: this host's stores are not running (start-up, before the workers).
        """
        stale_before = datetime.now(UTC) - timedelta(seconds=grace_seconds)
        own_host = self.host if after_restart else None
        prefixes = [""] if recent_days is None else _recent_prefixes(recent_days)
        removed = 0
        for prefix in prefixes:
            keys = self.blobs.keys(prefix)
            while page := list(islice(keys, _SWEEP_PAGE)):
                # The journal first, then the index: a store removes its row in the transaction
                # that indexes the blob, so a key found in neither, in this order, is no store's.
                journaled = self.index.journal.entries(page)
                referenced = self.index.journal.referenced(page)
                for key in page:
                    if key.startswith(ORIGINALS_PREFIX):
                        continue  # a kept original goes with its instance (`delete`), never as an orphan
                    entry = journaled.get(key)
                    if key in referenced or (
                        entry is not None and entry.host != own_host and entry.created_at >= stale_before
                    ):
                        continue
                    log.warning("removing orphaned blob %s (stored but never indexed)", key)
                    self.blobs.delete(key)
                    removed += 1
        # Rows of stores that died before their put (or whose blob was just removed).
        stale = self.index.journal.stale(older_than=stale_before, host=own_host)
        for key in set(stale) - self.index.journal.referenced(stale):
            self.blobs.delete(key)
        self.index.journal.forget(stale)
        return removed


def blob_key(parsed: ParsedInstance, sha256: str) -> str:
    """A key of this write's own: `<ingest day>/<study>/<series>/<sop>.<sha256 prefix>.<random>.dcm`."""
    day = datetime.now(UTC).strftime(_KEY_DAY_FORMAT)
    return (
        f"{day}/{parsed.study.study_instance_uid}/{parsed.series.series_instance_uid}/"
        f"{parsed.instance.sop_instance_uid}.{sha256[:24]}.{secrets.token_hex(6)}.dcm"
    )


def _recent_prefixes(days: int) -> list[str]:
    now = datetime.now(UTC).timestamp()
    return sorted(
        {datetime.fromtimestamp(now - day * 86400, UTC).strftime(_KEY_DAY_FORMAT) + "/" for day in range(days)}
    )
