"""C-MOVE and C-GET SCP (PS3.4 Annex C.4.2, C.4.3): one path, QIDO-RS + WADO-RS -> C-STORE sub-operations.

The instances to send are listed with QIDO-RS, fetched with WADO-RS as stored (one multipart stream
per study or series, spooled part by part, so a study is never held in memory; a background thread
reads a few parts ahead of the sub-operation being sent, dimse_bridge/prefetch.py) and handed to
pynetdicom, which runs the C-STORE sub-operations, counts them in the Pending responses and
builds the Failed SOP Instance UID List (PS3.4 §C.4.2.1.4.2). An instance goes as stored when the
receiver accepted its transfer syntax; otherwise it is decompressed to Explicit VR Little Endian,
which pynetdicom re-encodes to Implicit VR Little Endian when that is what was accepted. An
instance that cannot be converted or fetched is a failed sub-operation, never an aborted
association.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections import Counter
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote

from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_file_meta_info
from pydicom.uid import (
    JPEG2000,
    UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
)
from pynetdicom import build_context, evt

from dimse_bridge.client import BridgeError, DicomWebError, ServerUnreachable
from dimse_bridge.handlers.find import LEVELS_BY_SOP_CLASS, InvalidIdentifier, qido_value
from dimse_bridge.latency import set_tcp_nodelay
from dimse_bridge.prefetch import fetch_parts

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

    from pynetdicom.association import Association
    from pynetdicom.events import Event
    from pynetdicom.presentation import PresentationContext

    from dimse_bridge.activity import ActivityLog
    from dimse_bridge.client import DicomWebClient
    from dimse_bridge.registry import NodeRegistry

__all__ = [
    "CONVERSION_ERRORS",
    "InstanceRef",
    "RetrieveStatus",
    "accepted_syntaxes",
    "choose_transfer_syntax",
    "handle_get",
    "handle_move",
    "list_instances",
    "prepare_instance",
    "requested_contexts",
    "send_as_stored",
    "status_for_error",
    "wado_paths",
]

_LOG = logging.getLogger(__name__)


class RetrieveStatus(IntEnum):
    """C-MOVE / C-GET response statuses: PS3.4 Tables C.4-2 and C.4-3, and PS3.7 Annex C."""

    SUCCESS = 0x0000
    PENDING = 0xFF00
    CANCEL = 0xFE00
    WARNING_SUB_OPERATIONS_FAILED = 0xB000
    REFUSED_OUT_OF_RESOURCES_MATCHES = 0xA701
    REFUSED_OUT_OF_RESOURCES_SUB_OPERATIONS = 0xA702
    REFUSED_MOVE_DESTINATION_UNKNOWN = 0xA801
    ERROR_IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS = 0xA900
    ERROR_UNABLE_TO_PROCESS = 0xC000
    REFUSED_NOT_AUTHORIZED = 0x0124  # PS3.7 §C.5.7


# PS3.18 §10.6.3 Table 10.6.3-5: Available Transfer Syntax UID (0008,3002) lists the syntax the
# instance is stored in; asking for it lets the bridge propose that syntax to a C-MOVE receiver.
_INCLUDE: Final = "StudyInstanceUID,SeriesInstanceUID,SOPClassUID,SOPInstanceUID"
_AVAILABLE_TRANSFER_SYNTAX: Final = "00083002"
_UNCOMPRESSED: Final = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
_USUAL_COMPRESSED: Final = (
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEG2000Lossless,
    JPEG2000,
    RLELossless,
)
# PS3.8 §9.3.2.2: a presentation context ID is an odd number 1-255, so at most 128 contexts.
_MAX_CONTEXTS: Final = 128
# Instance UIDs per QIDO-RS request at IMAGE level, to keep URLs short.
_UIDS_PER_QUERY: Final = 100
# Parts spooled ahead of the sub-operation being sent (dimse_bridge/prefetch.py): enough to keep the
# next instance ready, few enough that a cancelled retrieval wastes little.
_PREFETCH_DEPTH: Final = 2


@dataclass(frozen=True, slots=True)
class InstanceRef:
    """One instance to send, as QIDO-RS listed it."""

    study: str
    series: str
    sop_instance: str
    sop_class: str
    transfer_syntax: str | None


def _uids(identifier: Dataset, keyword: str) -> list[str]:
    element = identifier.data_element(keyword) if keyword in identifier else None
    value = qido_value(element) if element is not None else None
    return value.split(",") if value else []


def _json_text(item: Mapping[str, Any], tag: str) -> str | None:
    element = item.get(tag)
    values = element.get("Value") if isinstance(element, dict) else None
    return str(values[0]) if isinstance(values, list) and values else None


def list_instances(
    client: DicomWebClient, identifier: Dataset, sop_class_uid: str, *, with_transfer_syntax: bool = False
) -> tuple[str, list[InstanceRef]]:
    """The retrieval level and every instance the identifier's unique keys select (PS3.4 §C.4.2.2.1).

    `with_transfer_syntax` also asks for each instance's stored transfer syntax (C-MOVE proposes
    it to the destination; C-GET has its contexts from the requestor already).

    Raises:
        InvalidIdentifier: unknown level, or the unique key of the level is missing.
        ServerUnreachable: see `DicomWebClient`.
        DicomWebError: see `DicomWebClient`.
    """
    levels = LEVELS_BY_SOP_CLASS.get(sop_class_uid)
    level = str(identifier.get("QueryRetrieveLevel", "") or "").strip().upper()
    if levels is None or level not in levels:
        raise InvalidIdentifier(f"QueryRetrieveLevel {level!r} is not a level of {sop_class_uid}")
    unique_key = {
        "PATIENT": "PatientID",
        "STUDY": "StudyInstanceUID",
        "SERIES": "SeriesInstanceUID",
        "IMAGE": "SOPInstanceUID",
    }[level]
    keys = _uids(identifier, unique_key)
    if not keys:
        raise InvalidIdentifier(f"a {level}-level retrieval needs {unique_key} (PS3.4 §C.4.2.2.1)")
    queries: list[tuple[str, dict[str, str]]] = []
    if level == "PATIENT":
        studies = {
            uid
            for key in keys
            for item in client.search("/studies", {"PatientID": key, "includefield": "StudyInstanceUID"})
            if (uid := _json_text(item, "0020000D"))
        }
        queries = [(f"/studies/{quote(s, safe='')}/instances", {}) for s in sorted(studies)]
    elif level == "STUDY":
        queries = [(f"/studies/{quote(s, safe='')}/instances", {}) for s in keys]
    else:
        parents = {"StudyInstanceUID": ",".join(_uids(identifier, "StudyInstanceUID"))}
        if level == "IMAGE":
            parents["SeriesInstanceUID"] = ",".join(_uids(identifier, "SeriesInstanceUID"))
        parents = {k: v for k, v in parents.items() if v}
        for start in range(0, len(keys), _UIDS_PER_QUERY):
            chunk = ",".join(keys[start : start + _UIDS_PER_QUERY])
            queries.append(("/instances", {**parents, unique_key: chunk}))
    include = _INCLUDE + "," + _AVAILABLE_TRANSFER_SYNTAX if with_transfer_syntax else _INCLUDE
    refs: dict[str, InstanceRef] = {}
    for path, params in queries:
        for item in client.search(path, {**params, "includefield": include}):
            uid = _json_text(item, "00080018")
            if not uid or uid in refs:
                continue
            refs[uid] = InstanceRef(
                study=_json_text(item, "0020000D") or path.split("/")[2],
                series=_json_text(item, "0020000E") or "",
                sop_instance=uid,
                sop_class=_json_text(item, "00080016") or "",
                transfer_syntax=_json_text(item, _AVAILABLE_TRANSFER_SYNTAX),
            )
    return level, list(refs.values())


def requested_contexts(refs: list[InstanceRef]) -> list[PresentationContext]:
    """Presentation contexts to propose to a C-MOVE destination for these instances.

    For each SOP Class one context of the uncompressed syntaxes, which every storage SCP accepts
    (PS3.5 §10.1), then one per stored syntax, while the 128 context IDs last (PS3.8 §9.3.2.2).
    """
    classes = sorted({ref.sop_class for ref in refs if ref.sop_class})
    contexts = [build_context(sop_class, list(_UNCOMPRESSED)) for sop_class in classes[:_MAX_CONTEXTS]]
    stored = Counter(
        (ref.sop_class, ref.transfer_syntax)
        for ref in refs
        if ref.sop_class and ref.transfer_syntax and ref.transfer_syntax not in _UNCOMPRESSED
    )
    # Where the archive did not say how an instance is stored, offer the usual compressed syntaxes:
    # a receiver that takes one of them gets the instance as stored, the others get it decompressed.
    for ref in refs:
        if ref.sop_class and not ref.transfer_syntax:
            stored.update((ref.sop_class, str(syntax)) for syntax in _USUAL_COMPRESSED)
    for (sop_class, syntax), _ in stored.most_common(_MAX_CONTEXTS - len(contexts)):
        contexts.append(build_context(sop_class, [syntax]))
    return contexts


def accepted_syntaxes(contexts: list[PresentationContext]) -> dict[str, set[str]]:
    """Transfer syntaxes usable for sending each SOP Class, from the accepted contexts."""
    usable: dict[str, set[str]] = {}
    for context in contexts:
        # We send C-STORE requests on these contexts, so we must hold the SCU role on them
        # (for C-GET the receiver took the SCP role by role selection, PS3.7 §D.3.3.4).
        if context.as_scu and context.abstract_syntax and context.transfer_syntax:
            usable.setdefault(str(context.abstract_syntax), set()).add(str(context.transfer_syntax[0]))
    return usable


def choose_transfer_syntax(stored: str, usable: set[str]) -> str | None:
    """The syntax to send in: as stored if accepted, else an accepted uncompressed one, else None."""
    if stored in usable:
        return stored
    stored_uid = UID(stored)
    if stored_uid.is_compressed or not stored_uid.is_little_endian:
        # Decompression gives Explicit VR Little Endian; pynetdicom can re-encode that as Implicit.
        return next((str(ts) for ts in _UNCOMPRESSED if ts in usable), None)
    # Uncompressed little endian (deflated included) converts to any accepted uncompressed one.
    return next((str(ts) for ts in (*_UNCOMPRESSED, stored) if ts in usable), None)


class _ConversionFailed(BridgeError):
    """An instance cannot be sent in any transfer syntax the receiver accepted."""


class _StoredFile(Dataset):
    """An instance to send exactly as stored.

    It holds the spooled Part-10 file and the UIDs pynetdicom needs for its bookkeeping (the Failed
    SOP Instance UID List).
    """

    def __init__(self, path: Path, sop_class: str, sop_instance: str) -> None:
        super().__init__()
        self.SOPClassUID = sop_class
        self.SOPInstanceUID = sop_instance
        self.spooled_path = path


def send_as_stored(assoc: Association) -> None:
    """Let `assoc` send a `_StoredFile` straight from its file, without decoding it.

    pynetdicom's Q/R service hands every sub-operation's Dataset to `send_c_store`, which
    re-encodes it element by element; for an instance going out in the syntax it is stored in,
    the file's own bytes are what should go (PS3.4 §C.4.2.3.1: the instance, not a re-encoding),
    and pynetdicom streams a file path in PDV-sized chunks (_config.STORE_SEND_CHUNKED_DATASET).
    """
    original = assoc.send_c_store

    def send_c_store(
        dataset: str | Path | Dataset,
        msg_id: int = 1,
        priority: int = 2,
        originator_aet: str | None = None,
        originator_id: int | None = None,
    ) -> Dataset:
        source = dataset.spooled_path if isinstance(dataset, _StoredFile) else dataset
        return original(
            source, msg_id=msg_id, priority=priority, originator_aet=originator_aet, originator_id=originator_id
        )

    # An instance attribute shadows the method for this association only.
    assoc.send_c_store = send_c_store  # type: ignore[method-assign]


# What `prepare_instance` raises when an instance cannot be sent: pydicom and its pixel plugins
# raise these when a frame cannot be decoded.
CONVERSION_ERRORS: Final = (
    BridgeError,
    InvalidDicomError,
    ValueError,
    NotImplementedError,
    RuntimeError,
    AttributeError,
    KeyError,
)


def prepare_instance(path: Path, usable: Mapping[str, set[str]], meta: FileMetaDataset | None = None) -> Dataset:
    """The spooled instance at `path` ready to C-STORE: as stored if accepted, else converted.

    `meta` is the file's File Meta Information when the caller has read it already.

    Raises:
        BridgeError: no accepted transfer syntax fits; or another of CONVERSION_ERRORS: pydicom or
            a pixel plugin cannot decode it.
    """
    meta = meta if meta is not None else read_file_meta_info(path)
    stored = str(meta.TransferSyntaxUID)
    sop_class = str(meta.MediaStorageSOPClassUID)
    target = choose_transfer_syntax(stored, usable.get(sop_class, set()))
    if target is None:
        raise _ConversionFailed(f"no accepted transfer syntax for {stored} ({sop_class})")
    if target == stored:
        return _StoredFile(path, sop_class, str(meta.MediaStorageSOPInstanceUID))
    dataset = dcmread(path)
    if UID(stored).is_compressed:
        # Same instance in another encoding: keep its SOP Instance UID (PS3.5 §10: a transfer
        # syntax change does not make a new instance); colour comes out as RGB, as PS3.5 §8.2 asks
        # of uncompressed YBR_FULL_422 data.
        dataset.decompress(generate_instance_uid=False)
    elif not UID(stored).is_little_endian:
        raise _ConversionFailed(f"{stored} is big endian and the receiver did not accept it")
    return dataset


def _failed_sub_operation(ref: InstanceRef) -> Dataset:
    """A placeholder pynetdicom cannot send: it counts it failed and lists its SOP Instance UID.

    It has no File Meta, so pynetdicom's `send_c_store` raises before anything goes on the wire;
    pynetdicom treats that as a failed sub-operation (PS3.4 §C.4.2.1.4.2) and carries on.
    """
    placeholder = Dataset()
    placeholder.SOPClassUID = ref.sop_class or "1.2.840.10008.5.1.4.1.1.7"
    placeholder.SOPInstanceUID = ref.sop_instance
    return placeholder


def wado_paths(level: str, refs: list[InstanceRef]) -> list[str]:
    """The WADO-RS resources holding the instances, one per study, series or instance (by `level`)."""
    if level in ("PATIENT", "STUDY"):
        return [f"/studies/{quote(s, safe='')}" for s in dict.fromkeys(r.study for r in refs)]
    if level == "SERIES":
        pairs = dict.fromkeys((r.study, r.series) for r in refs)
        return [f"/studies/{quote(s, safe='')}/series/{quote(se, safe='')}" for s, se in pairs]
    quoted = ([quote(uid, safe="") for uid in (r.study, r.series, r.sop_instance)] for r in refs)
    return [f"/studies/{study}/series/{series}/instances/{instance}" for study, series, instance in quoted]


def _sub_operations(
    event: Event,
    client: DicomWebClient,
    level: str,
    refs: list[InstanceRef],
    usable: Callable[[], Mapping[str, set[str]]],
    activity_count: Callable[[str], None],
) -> Iterator[tuple[int, Dataset | None]]:
    pending = {ref.sop_instance: ref for ref in refs}
    with (
        tempfile.TemporaryDirectory(prefix="webpacs-bridge-") as spool,
        contextlib.closing(fetch_parts(client, wado_paths(level, refs), Path(spool), depth=_PREFETCH_DEPTH)) as fetched,
    ):
        for fetched_part in fetched:
            part, meta = fetched_part.path, fetched_part.meta
            if part is None or meta is None:
                _LOG.warning("WADO-RS %s failed: %s", fetched_part.wado_path, fetched_part.error)
                continue
            try:
                uid = str(meta.MediaStorageSOPInstanceUID)
                ref = pending.pop(uid, None)
                if ref is None:
                    # Stored after the QIDO-RS listing: not part of the counted set.
                    continue
                if event.is_cancelled:
                    pending[uid] = ref
                    yield RetrieveStatus.CANCEL, None
                    return
                try:
                    dataset = prepare_instance(part, usable(), meta)
                except CONVERSION_ERRORS as exc:
                    # The instance fails, the retrieval goes on.
                    _LOG.warning("cannot convert %s for the receiver: %r", uid, exc)
                    activity_count("sub-operation conversion failed")
                    dataset = _failed_sub_operation(ref)
                yield RetrieveStatus.PENDING, dataset
            finally:
                part.unlink(missing_ok=True)
        # Listed by QIDO-RS but not delivered by WADO-RS: failed sub-operations.
        for ref in list(pending.values()):
            if event.is_cancelled:
                yield RetrieveStatus.CANCEL, None
                return
            activity_count("sub-operation not retrievable")
            yield RetrieveStatus.PENDING, _failed_sub_operation(ref)


def status_for_error(error: BridgeError) -> int:
    """The C-MOVE / C-GET failure status for an error that stops the retrieval before it starts."""
    if isinstance(error, InvalidIdentifier):
        return RetrieveStatus.ERROR_IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS
    if isinstance(error, DicomWebError):
        if error.status_code == 400:
            return RetrieveStatus.ERROR_IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS
        if error.status_code >= 500:
            return RetrieveStatus.REFUSED_OUT_OF_RESOURCES_MATCHES
    if isinstance(error, ServerUnreachable):
        return RetrieveStatus.REFUSED_OUT_OF_RESOURCES_MATCHES
    return RetrieveStatus.ERROR_UNABLE_TO_PROCESS


def _listing(
    event: Event, client: DicomWebClient, registry: NodeRegistry, *, with_transfer_syntax: bool
) -> tuple[str, list[InstanceRef]] | int:
    """The level and instances, or the failure status to answer with."""
    if not registry.permits(event.assoc.requestor.ae_title, "move"):
        return RetrieveStatus.REFUSED_NOT_AUTHORIZED
    try:
        return list_instances(
            client,
            event.identifier,
            str(event.request.AffectedSOPClassUID),
            with_transfer_syntax=with_transfer_syntax,
        )
    except BridgeError as exc:
        _LOG.warning("retrieval listing failed: %s", exc)
        return status_for_error(exc)
    except (ValueError, TypeError, KeyError) as exc:
        # pydicom rejects a value of the request identifier.
        _LOG.warning("retrieval identifier unreadable: %r", exc)
        return RetrieveStatus.ERROR_IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS


def handle_move(event: Event, client: DicomWebClient, registry: NodeRegistry, activities: ActivityLog) -> Iterator[Any]:
    """EVT_C_MOVE: destination from the AE registry, then the sub-operations on a new association.

    pynetdicom's protocol: yield (host, port[, associate kwargs]) or (None, None) for an unknown
    destination (0xA801), then the number of sub-operations, then (status, dataset) pairs.
    """
    activity = activities.of(event.assoc)
    destination = registry.get(str(event.move_destination or ""), refresh_on_miss=True)
    if destination is None:
        activity.count("C-MOVE to unknown destination")
        yield None, None
        return
    listing = _listing(event, client, registry, with_transfer_syntax=True)
    if isinstance(listing, int):
        # pynetdicom only sends a failure after the destination association; it is released at once.
        activity.count("C-MOVE failed")
        yield destination.host, destination.port, {"contexts": [build_context(ImplicitVRLittleEndian)]}
        yield 1
        yield listing, None
        return
    level, refs = listing
    accepted: list[list[PresentationContext]] = []

    def on_accepted(accept_event: Event) -> None:
        accepted.append(accept_event.assoc.accepted_contexts)
        send_as_stored(accept_event.assoc)

    kwargs = {
        "contexts": requested_contexts(refs) or [build_context(ImplicitVRLittleEndian)],
        # Nagle off on this association too: each sub-operation is a small C-STORE-RQ command
        # followed by data, which would otherwise wait on the destination's delayed ACK (~40 ms).
        "evt_handlers": [(evt.EVT_CONN_OPEN, set_tcp_nodelay), (evt.EVT_ACCEPTED, on_accepted)],
    }
    activity.count("C-MOVE")
    yield destination.host, destination.port, kwargs
    yield len(refs)
    activity.count("C-MOVE sub-operations", len(refs))
    yield from _sub_operations(
        event,
        client,
        level,
        refs,
        lambda: accepted_syntaxes(accepted[0] if accepted else []),
        activity.count,
    )


def handle_get(event: Event, client: DicomWebClient, registry: NodeRegistry, activities: ActivityLog) -> Iterator[Any]:
    """EVT_C_GET: the sub-operations go back on the same association.

    They use the contexts where the requestor took the Storage SCP role (PS3.4 §C.4.3,
    PS3.7 §D.3.3.4). pynetdicom's protocol: yield the number of sub-operations, then (status, dataset) pairs.
    """
    activity = activities.of(event.assoc)
    listing = _listing(event, client, registry, with_transfer_syntax=False)
    if isinstance(listing, int):
        activity.count("C-GET failed")
        yield 1
        yield listing, None
        return
    level, refs = listing
    send_as_stored(event.assoc)
    yield len(refs)
    activity.count("C-GET")
    activity.count("C-GET sub-operations", len(refs))
    yield from _sub_operations(
        event,
        client,
        level,
        refs,
        lambda: accepted_syntaxes(event.assoc.accepted_contexts),
        activity.count,
    )
