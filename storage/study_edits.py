"""Study management: edit patient/study attributes, merge patients, move a series, the recycle bin.

Every change to what instances say is made the way a replace is (DESIGN.md §1): new bytes for each
instance first (the header rewritten with pydicom, the pixel data copied byte for byte, never
decoded), journaled before their put so a crash leaves only orphans the sweep removes; then the
index is switched for the whole study in one transaction (storage/index/edits.py); only then are
the old bytes deleted. A crash at any point leaves the study entirely old or entirely new.

A merge is one such edit per study of the merged patient: each study is atomic, and running the
merge again finishes an interrupted one (the studies already merged no longer match).
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import shutil
import tempfile
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Final

from pydicom import config, dcmread, dcmwrite
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian
from pydicom.valuerep import validate_value

from storage.archive import blob_key
from storage.dicom.attributes import STUDY_LEVEL_TAGS
from storage.dicom.ingest_compression import ORIGINALS_PREFIX
from storage.dicom.instance import read_instance
from storage.errors import ArchiveError, BlobNotFound, NotFound
from storage.index import NewInstance
from storage.index.database import write_transaction
from storage.index.edits import (
    RecycledStudy,
    Rewritten,
    move_series,
    patient_studies,
    purge_recycled,
    recycle_study,
    recycled_studies,
    restore_study,
    study_row,
    switch_study,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence
    from typing import IO

    from sqlalchemy.engine import Connection, Engine

    from storage.archive import Archive
    from storage.index import StoredInstance

__all__ = [
    "DATE_PATTERN",
    "EDITABLE_ATTRIBUTES",
    "EditResult",
    "InvalidEdit",
    "MergeResult",
    "MoveResult",
    "PatientKey",
    "RecycledStudy",
    "edit_study",
    "merge_patients",
    "move_series_to_study",
    "purge_expired",
    "purge_study",
    "recycle",
    "recycle_bin",
    "restore",
    "rewrite_instance",
    "set_attributes",
]

# The attributes an edit may change, with their VR (PS3.6): the patient (PS3.3 §C.7.1.1) and
# general study (§C.7.2.1) attributes people get wrong at the modality.
EDITABLE_ATTRIBUTES: Final = {
    "PatientName": "PN",
    "PatientID": "LO",
    "IssuerOfPatientID": "LO",
    "PatientBirthDate": "DA",
    "PatientSex": "CS",
    "AccessionNumber": "SH",
    "StudyDescription": "LO",
    "ReferringPhysicianName": "PN",
}
# What a merge copies from the surviving patient onto the other's studies.
_PATIENT_ATTRIBUTES: Final = ("PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex")
_PATIENT_SEX: Final = frozenset({"", "M", "F", "O"})  # PS3.3 §C.7.1.1 Patient's Sex enumerated values
# One DA value, YYYYMMDD (PS3.5 §6.2), or empty: pydicom's check also lets a range (A-B) through.
DATE_PATTERN: Final = "([0-9]{4}(0[1-9]|1[0-2])(0[1-9]|[12][0-9]|3[01]))?"
_UTF8: Final = "ISO_IR 192"
# VRs whose values the Specific Character Set encodes (PS3.5 §6.1.2.3).
_TEXT_VRS: Final = frozenset({"SH", "LO", "ST", "LT", "UC", "UT", "PN"})
_COPY_CHUNK: Final = 1024 * 1024
# A study that keeps receiving instances while it is edited is retried this often, then refused.
_ATTEMPTS: Final = 5


class InvalidEdit(ArchiveError):
    """An edit names an attribute that cannot be edited, or a value its VR does not allow."""


@dataclass(frozen=True, slots=True)
class EditResult:
    """What an edit changed: per attribute, the study's value before and after."""

    study_uid: str
    instances: int
    before: dict[str, str]
    after: dict[str, str]


@dataclass(frozen=True, slots=True)
class PatientKey:
    """A patient as the index knows it: Patient ID and its issuer ('' when none)."""

    patient_id: str
    issuer: str = ""


@dataclass(frozen=True, slots=True)
class MergeResult:
    """The studies a merge moved to the surviving patient, and that patient's attributes."""

    studies: list[EditResult]
    patient: dict[str, str]


@dataclass(frozen=True, slots=True)
class MoveResult:
    """A series moved to another study."""

    series_uid: str
    from_study_uid: str
    to_study_uid: str
    instances: int


# --- rewriting one instance (pure DICOM, over files) --------------------------------------------


def rewrite_instance(source: Path, target: IO[bytes], apply: Callable[[Dataset], None]) -> None:
    """Write `source` to `target` with its header changed by `apply`; the pixel data is copied as is.

    Only the header is parsed; what follows it (the pixel data element and anything after) is
    copied byte for byte, so compressed frames stay exactly as stored. A deflated data set is one
    deflate stream without such a boundary (PS3.5 §A.5): it is read and written whole.
    """
    with source.open("rb") as fp:
        dataset = dcmread(fp, stop_before_pixels=True)
        deflated = dataset.file_meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian
        if deflated:
            fp.seek(0)
            dataset = dcmread(fp)
        pixels_at = fp.tell()
        apply(dataset)
        # Group lengths (retired, PS3.5 §7.2) would no longer match the values they measure.
        for tag in [tag for tag in dataset.keys() if tag.element == 0]:  # noqa: SIM118 - keys: no element conversion
            del dataset[tag]
        dcmwrite(target, dataset, enforce_file_format=True)
        if not deflated:
            fp.seek(pixels_at)
            shutil.copyfileobj(fp, target, _COPY_CHUNK)


def _use_utf8_if_needed(dataset: Dataset, values: Sequence[str]) -> None:
    """Switch the header to UTF-8 when a new value is not ASCII and the data set uses another character set.

    Every text value is decoded with the old Specific Character Set first (PS3.5 §6.1.2.3), so
    the other attributes keep their values; only their encoding changes.
    """
    if all(value.isascii() for value in values) or dataset.get("SpecificCharacterSet") == _UTF8:
        return
    dataset.decode()
    dataset.SpecificCharacterSet = _UTF8


def set_attributes(values: Mapping[str, str]) -> Callable[[Dataset], None]:
    """A header change for `rewrite_instance`: set each attribute (by keyword), in UTF-8 when needed."""

    def apply(dataset: Dataset) -> None:
        _use_utf8_if_needed(dataset, list(values.values()))
        for keyword, value in values.items():
            setattr(dataset, keyword, value)

    return apply


def _take_study_of(target_json: str) -> Callable[[Dataset], None]:
    """Give an instance the patient/study attributes of a study (its stored DICOM JSON), UIDs included."""
    target = Dataset.from_json(json.loads(target_json))

    texts = [str(element.value) for element in target if element.VR in _TEXT_VRS and element.value is not None]

    def apply(dataset: Dataset) -> None:
        _use_utf8_if_needed(dataset, texts)
        for tag in STUDY_LEVEL_TAGS:
            if tag in target:
                dataset[tag] = copy.deepcopy(target[tag])  # each instance its own element
            elif tag in dataset:
                del dataset[tag]  # the other study's value, which the target study does not have

    return apply


# --- rewriting stored instances --------------------------------------------------------------------


@contextmanager
def _local_copy(archive: Archive, key: str) -> Iterator[Path]:
    """The blob `key` as a local file (a temporary copy when the store is remote). Raises BlobNotFound."""
    path = archive.blobs.local_path(key)
    if path is not None:
        yield path
        return
    with tempfile.NamedTemporaryFile(dir=archive.blobs.staging_dir(), suffix=".dcm") as copy:
        for chunk in archive.blobs.open_range(key):
            copy.write(chunk)
        copy.flush()
        yield Path(copy.name)


def _rewritten_file(archive: Archive, source: Path, apply: Callable[[Dataset], None]) -> tuple[Path, str]:
    """`source` rewritten into a staging file; returns the file and its SHA-256."""
    with tempfile.NamedTemporaryFile(dir=archive.blobs.staging_dir(), suffix=".dcm", delete=False) as out:
        path = Path(out.name)
        try:
            rewrite_instance(source, out, apply)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
    with path.open("rb") as written:
        sha256 = hashlib.file_digest(written, "sha256").hexdigest()
    return path, sha256


def _rewrite(archive: Archive, stored: StoredInstance, apply: Callable[[Dataset], None]) -> Rewritten:
    """New bytes for one stored instance, durable and journaled (the sweep removes them if never indexed)."""
    with archive.local_file(stored) as source:
        path, sha256 = _rewritten_file(archive, source, apply)
    try:
        parsed = read_instance(path)
        key = blob_key(parsed, sha256)
        archive.index.journal.begin(key, archive.host)  # durable before the bytes, as a store does
        try:
            size = archive.put_blob(key, path)  # through the archive, so that the mirror gets it too
            if archive.compression.keep_original:
                _rewrite_original(archive, stored.blob_key, key, apply)
        except BaseException:
            _delete_blobs(archive, [key])
            raise
    finally:
        path.unlink(missing_ok=True)
    return Rewritten(NewInstance(parsed, key, size, sha256), stored.blob_key)


def _rewrite_original(archive: Archive, old_key: str, new_key: str, apply: Callable[[Dataset], None]) -> None:
    """The received original kept beside a compressed instance (ingest compression) gets the same edit."""
    try:
        with _local_copy(archive, ORIGINALS_PREFIX + old_key) as source:
            path, _ = _rewritten_file(archive, source, apply)
    except BlobNotFound:
        return  # this instance was stored as received
    try:
        archive.blobs.put_file(ORIGINALS_PREFIX + new_key, path)
    finally:
        path.unlink(missing_ok=True)


def _delete_blobs(archive: Archive, keys: Sequence[str]) -> None:
    """Delete blobs the index does not reference (rewrites not used, bytes replaced), then their journal rows."""
    for key in keys:
        archive.blobs.delete(key)
        archive.blobs.delete(ORIGINALS_PREFIX + key)
    archive.index.journal.forget(keys)


def _rewrite_and_switch(
    engine: Engine,
    archive: Archive,
    instances: Callable[[], list[StoredInstance]],
    apply: Callable[[Dataset], None],
    switch: Callable[[Connection, list[Rewritten]], list[str]],
) -> list[Rewritten]:
    """Rewrite `instances()`, switch the index to them in one transaction, then delete the old bytes.

    Instances stored or replaced meanwhile (the switch says which) are rewritten too, and the
    switch tried again.

    Raises:
        ArchiveError: the switch refused (NotFound, ConflictingInstance), or the study kept changing.
    """
    rewritten: dict[str, Rewritten] = {}
    pending = instances()
    try:
        for _ in range(_ATTEMPTS):
            for stored in pending:
                previous = rewritten.get(stored.sop_instance_uid)
                rewritten[stored.sop_instance_uid] = _rewrite(archive, stored, apply)
                if previous is not None:
                    _delete_blobs(archive, [previous.item.blob_key])
            with write_transaction(engine) as connection:
                stale = switch(connection, list(rewritten.values()))
            if not stale:
                break
            wanted = set(stale)
            pending = [stored for stored in instances() if stored.sop_instance_uid in wanted]
        else:
            msg = f"instances kept arriving during {_ATTEMPTS} attempts: try again when the study is complete"
            raise ArchiveError(msg)
    except BaseException:
        _delete_blobs(archive, [r.item.blob_key for r in rewritten.values()])
        raise
    # Committed: the old bytes go, and so do new ones of instances deleted meanwhile (never switched).
    new_keys = [r.item.blob_key for r in rewritten.values()]
    used = archive.index.journal.referenced(new_keys)
    _delete_blobs(archive, [key for key in new_keys if key not in used])
    done = [r for r in rewritten.values() if r.item.blob_key in used]
    _delete_blobs(archive, [r.old_blob_key for r in done])
    return done


# --- the use cases ---------------------------------------------------------------------------------


def _validated(changes: Mapping[str, str]) -> dict[str, str]:
    """The changes, checked against EDITABLE_ATTRIBUTES and their VRs.

    Raises:
        InvalidEdit: naming the attribute and what it accepts.
    """
    if not changes:
        raise InvalidEdit(f"name at least one attribute to change, among {sorted(EDITABLE_ATTRIBUTES)}")
    result = {}
    for keyword, value in changes.items():
        vr = EDITABLE_ATTRIBUTES.get(keyword)
        if vr is None:
            raise InvalidEdit(f"{keyword} cannot be edited; editable attributes: {sorted(EDITABLE_ATTRIBUTES)}")
        if not isinstance(value, str) or "\\" in value or any(ord(char) < 0x20 for char in value):
            raise InvalidEdit(f"{keyword}={value!r}: give one value, without backslashes or control characters")
        if keyword == "PatientSex" and value not in _PATIENT_SEX:
            raise InvalidEdit(f"PatientSex={value!r}: use M, F, O or an empty value (PS3.3 §C.7.1.1)")
        if vr == "DA" and not re.fullmatch(DATE_PATTERN, value):
            raise InvalidEdit(f"{keyword}={value!r}: give one date as YYYYMMDD, or an empty value")
        try:
            validate_value(vr, value, config.RAISE)
        except ValueError as exc:
            raise InvalidEdit(f"{keyword}={value!r} is not a valid {vr} value: {exc}") from exc
        result[keyword] = value
    return result


def _json_text(study_json: Mapping[str, object], keyword: str) -> str:
    """An attribute's first value in a stored DICOM JSON object, as text ('' when absent)."""
    element = study_json.get(f"{tag_for_keyword(keyword):08X}")
    values = element.get("Value") if isinstance(element, dict) else None
    if not values:
        return ""
    value = values[0]
    if isinstance(value, dict):  # a person name (PS3.18 §F.2.2)
        return str(value.get("Alphabetic", ""))
    return str(value)


def _values_of(study_json: str, keywords: Sequence[str]) -> dict[str, str]:
    decoded = json.loads(study_json)
    return {keyword: _json_text(decoded, keyword) for keyword in keywords}


def edit_study(engine: Engine, archive: Archive, study_uid: str, changes: Mapping[str, str]) -> EditResult:
    """Change patient/study attributes in every instance of the study (new bytes, one index switch).

    Raises:
        InvalidEdit: an attribute is not editable, or a value is invalid for its VR.
        NotFound: no such study (or it is in the recycle bin).
    """
    values = _validated(changes)
    with engine.connect() as connection:
        before = _values_of(study_row(connection, study_uid).json, list(values))
    done = _rewrite_and_switch(
        engine,
        archive,
        lambda: archive.instances(study_uid),
        set_attributes(values),
        lambda connection, rewritten: switch_study(connection, study_uid, rewritten, host=archive.host),
    )
    with engine.connect() as connection:
        after = _values_of(study_row(connection, study_uid).json, list(values))
    return EditResult(study_uid, len(done), before, after)


def merge_patients(engine: Engine, archive: Archive, source: PatientKey, target: PatientKey) -> MergeResult:
    """Give every study of `source` the patient attributes of `target` (one atomic edit per study).

    Idempotent: run again after an interruption, it edits the studies still under `source`.

    Raises:
        InvalidEdit: the two patients are the same.
        NotFound: the archive holds no study of `target`.
    """
    if source == target:
        raise InvalidEdit(f"patient {source.patient_id!r} would be merged into itself: name two patients")
    with engine.connect() as connection:
        into = patient_studies(connection, target.patient_id, target.issuer)
        studies = patient_studies(connection, source.patient_id, source.issuer)
    if not into:
        issuer = f" (issuer {target.issuer!r})" if target.issuer else ""
        msg = f"no study of patient {target.patient_id!r}{issuer} is in the archive: merge into a patient it holds"
        raise NotFound(msg)
    patient = _values_of(into[-1][1], _PATIENT_ATTRIBUTES)  # the study updated last speaks for the patient
    edited = [edit_study(engine, archive, uid, patient) for uid, _ in studies]
    return MergeResult(edited, patient)


def move_series_to_study(
    engine: Engine, archive: Archive, study_uid: str, series_uid: str, to_study_uid: str
) -> MoveResult:
    """Move a series to another study: its instances take that study's UID and patient/study attributes.

    Series and SOP Instance UIDs stay; the source study goes when it is left empty.

    Raises:
        NotFound: either study, or the series in the source study, is not in the archive.
        ConflictingInstance: the target is the source study.
    """
    with engine.connect() as connection:
        study_row(connection, study_uid)
        target_json = study_row(connection, to_study_uid).json
    done = _rewrite_and_switch(
        engine,
        archive,
        lambda: archive.instances(study_uid, series_uid),
        _take_study_of(target_json),
        lambda connection, rewritten: move_series(
            connection, study_uid, series_uid, to_study_uid, rewritten, host=archive.host
        ),
    )
    return MoveResult(series_uid, study_uid, to_study_uid, len(done))


def recycle(engine: Engine, study_uid: str, *, by: str) -> int:
    """Hide a study in the recycle bin: not found by QIDO-RS nor served, until restored or purged.

    Returns:
        The number of instances of the study.

    Raises:
        NotFound: no such study, or it is in the recycle bin already.
    """
    with write_transaction(engine) as connection:
        return recycle_study(connection, study_uid, by)


def restore(engine: Engine, study_uid: str) -> None:
    """Take a study out of the recycle bin.

    Raises:
        NotFound: the study is not in the recycle bin.
    """
    with write_transaction(engine) as connection:
        restore_study(connection, study_uid)


def recycle_bin(engine: Engine) -> list[RecycledStudy]:
    """The studies in the recycle bin, oldest first."""
    with engine.connect() as connection:
        return recycled_studies(connection)


def purge_study(engine: Engine, archive: Archive, study_uid: str) -> int:
    """Delete a recycled study now: the index first, then the bytes; returns the instances deleted.

    Raises:
        NotFound: the study is not in the recycle bin.
    """
    with write_transaction(engine) as connection:
        keys = purge_recycled(connection, study_uid, host=archive.host)
    _delete_blobs(archive, keys)
    return len(keys)


def purge_expired(engine: Engine, archive: Archive, *, days: int, now: datetime | None = None) -> list[str]:
    """Purge the studies recycled more than `days` days ago; returns their Study Instance UIDs.

    Several workers may purge at once: a study another one purged (or restored) meanwhile is skipped.
    """
    before = (now or datetime.now(UTC)) - timedelta(days=days)
    with engine.connect() as connection:
        expired = recycled_studies(connection, before=before)
    purged = []
    for study in expired:
        with suppress(NotFound):
            purge_study(engine, archive, study.study_instance_uid)
            purged.append(study.study_instance_uid)
    return purged
