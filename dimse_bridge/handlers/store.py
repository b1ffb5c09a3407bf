"""C-STORE SCP: each received instance goes to STOW-RS as the bytes arrived, then is acknowledged.

DIMSE is synchronous (PS3.7 §D.3.3.3: without an Asynchronous Operations Window the SCU waits for
each C-STORE-RSP), so one association cannot be acknowledged ahead of the server without lying about
durability. What the bridge does instead: the instance is never decoded (pynetdicom spools the raw
data set to a Part-10 file), the STOW body streams that file over a kept-alive connection, and
instances arriving at once on several associations share one STOW-RS request (group commit), each
association thread waiting for its own instance's verdict before it answers.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING, Final, cast

from dimse_bridge.client import BridgeError, DicomWebError, ServerUnreachable
from dimse_bridge.source_ae import NotPart10Error, with_source_ae
from dimse_bridge.stow_connection import Part10

if TYPE_CHECKING:
    from pynetdicom.dimse_primitives import C_STORE
    from pynetdicom.events import Event

    from dimse_bridge.activity import ActivityLog
    from dimse_bridge.client import DicomWebClient, StowResult
    from dimse_bridge.registry import NodeRegistry

__all__ = [
    "StoreStatus",
    "StowBatcher",
    "handle_store",
    "status_for_http_error",
    "status_for_instance",
]

_LOG = logging.getLogger(__name__)


class StoreStatus(IntEnum):
    """C-STORE response statuses: PS3.4 Annex B.2.3 (Table B.2-1) and PS3.7 Annex C general codes."""

    SUCCESS = 0x0000
    WARNING_COERCION_OF_DATA_ELEMENTS = 0xB000
    WARNING_ELEMENTS_DISCARDED = 0xB006
    WARNING_DATA_SET_DOES_NOT_MATCH_SOP_CLASS = 0xB007
    REFUSED_OUT_OF_RESOURCES = 0xA700
    ERROR_DATA_SET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
    ERROR_CANNOT_UNDERSTAND = 0xC000
    PROCESSING_FAILURE = 0x0110  # PS3.7 §C.4.2
    DUPLICATE_SOP_INSTANCE = 0x0111  # PS3.7 §C.4.3
    REFUSED_SOP_CLASS_NOT_SUPPORTED = 0x0122  # PS3.7 §C.5.5
    REFUSED_NOT_AUTHORIZED = 0x0124  # PS3.7 §C.5.7


# PS3.18 §10.5.3 reports per-instance WarningReason / FailureReason with C-STORE status codes, so a
# code the table knows is passed on as it is; Annex B.2.3 also reserves whole ranges (A7xx out of
# resources, A9xx data set does not match, Cxxx cannot understand), kept as the server gave them.
_FAILURE_RANGES: Final = ((0xA700, 0xA7FF), (0xA900, 0xA9FF), (0xC000, 0xCFFF))
_GENERAL_FAILURES: Final = frozenset(
    {
        StoreStatus.PROCESSING_FAILURE,
        StoreStatus.DUPLICATE_SOP_INSTANCE,
        StoreStatus.REFUSED_SOP_CLASS_NOT_SUPPORTED,
        StoreStatus.REFUSED_NOT_AUTHORIZED,
    }
)


def status_for_instance(result: StowResult, sop_instance_uid: str) -> int:
    """The C-STORE status for one instance of a STOW-RS response (PS3.4 Annex B.2.3).

    Stored without a reason -> Success; stored with a WarningReason -> that warning (B000 when the
    code is not a C-STORE warning); listed as failed -> its FailureReason when it is a C-STORE failure
    code, else Processing failure; absent from both lists -> Processing failure.
    """
    verdict = result.instances.get(sop_instance_uid)
    if verdict is None:
        return StoreStatus.PROCESSING_FAILURE
    if verdict.stored:
        if verdict.reason is None:
            return StoreStatus.SUCCESS
        if 0xB000 <= verdict.reason <= 0xBFFF:
            return verdict.reason
        return StoreStatus.WARNING_COERCION_OF_DATA_ELEMENTS
    reason = verdict.reason
    if reason is None:
        return StoreStatus.PROCESSING_FAILURE
    if reason in _GENERAL_FAILURES or any(low <= reason <= high for low, high in _FAILURE_RANGES):
        return reason
    return StoreStatus.PROCESSING_FAILURE


def status_for_http_error(error: BridgeError) -> int:
    """The C-STORE status when the whole STOW-RS request failed (no per-instance verdicts).

    400/415: the server could not read the request -> Cannot understand; 413 or 5xx, or no answer:
    the archive cannot take it now -> Refused: out of resources (PS3.4 B.2.3, the SCU may retry);
    401/403 is the bridge's own token being refused -> Processing failure (the peer is not at fault).
    """
    if isinstance(error, DicomWebError):
        if error.status_code in (400, 415):
            return StoreStatus.ERROR_CANNOT_UNDERSTAND
        if error.status_code in (401, 403):
            return StoreStatus.PROCESSING_FAILURE
        if error.status_code == 413 or error.status_code >= 500:
            return StoreStatus.REFUSED_OUT_OF_RESOURCES
        return StoreStatus.PROCESSING_FAILURE
    if isinstance(error, ServerUnreachable):
        return StoreStatus.REFUSED_OUT_OF_RESOURCES
    return StoreStatus.PROCESSING_FAILURE


@dataclass(eq=False, slots=True)
class _Pending:
    part: Part10
    sop_instance_uid: str
    size: int
    done: threading.Event = field(default_factory=threading.Event)
    status: int = StoreStatus.PROCESSING_FAILURE


class StowBatcher:
    """Group commit of received instances into STOW-RS requests.

    `store()` blocks the calling association thread until the server has answered for its
    instance, so a C-STORE success is never sent before the archive has the bytes durably.
    Up to `concurrency` requests are in flight; each takes every instance queued at that moment
    (up to `max_instances` / `max_bytes`), so a lone association pays one request per instance
    and many concurrent ones share requests.
    """

    def __init__(
        self,
        client: DicomWebClient,
        *,
        max_instances: int,
        max_bytes: int,
        concurrency: int,
        wait_timeout: float,
    ) -> None:
        """Prepare the queue; `start()` launches the sender threads."""
        self._client = client
        self._max_instances = max_instances
        self._max_bytes = max_bytes
        self._wait_timeout = wait_timeout
        self._queue: queue.Queue[_Pending | None] = queue.Queue()
        self._threads = [
            threading.Thread(target=self._run, name=f"stow-sender-{n}", daemon=True) for n in range(concurrency)
        ]

    def start(self) -> None:
        """Start the sender threads."""
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Let the senders finish what is queued, then end them."""
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join(timeout=self._wait_timeout)

    def store(self, part: Part10, sop_instance_uid: str) -> int:
        """STOW-RS the Part-10 instance; return the C-STORE status for it."""
        pending = _Pending(part, sop_instance_uid, part.size())
        self._queue.put(pending)
        if not pending.done.wait(self._wait_timeout):
            _LOG.warning("no STOW-RS answer for %s within %.0f s", sop_instance_uid, self._wait_timeout)
            return StoreStatus.REFUSED_OUT_OF_RESOURCES
        return pending.status

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            size = first.size
            while len(batch) < self._max_instances:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    # Keep the stop signal for this thread's next turn, after this batch is sent.
                    self._queue.put(None)
                    break
                if size + more.size > self._max_bytes:
                    self._send([more])
                    continue
                batch.append(more)
                size += more.size
            self._send(batch)

    def _send(self, batch: list[_Pending]) -> None:
        try:
            try:
                result = self._client.store_instances([p.part for p in batch])
            except DicomWebError as exc:
                if exc.status_code in (400, 415) and len(batch) > 1:
                    # One unreadable instance must not fail the others that shared its request.
                    for pending in batch:
                        self._send([pending])
                    return
                raise
            for pending in batch:
                pending.status = status_for_instance(result, pending.sop_instance_uid)
        except BridgeError as exc:
            _LOG.warning("STOW-RS of %d instance(s) failed: %s", len(batch), exc)
            for pending in batch:
                pending.status = status_for_http_error(exc)
        except OSError as exc:
            # The spooled file vanished or could not be read: nothing reached the archive.
            _LOG.warning("STOW-RS of %d instance(s) could not read a file: %s", len(batch), exc)
            for pending in batch:
                pending.status = StoreStatus.PROCESSING_FAILURE
        finally:
            for pending in batch:
                pending.done.set()


def handle_store(event: Event, batcher: StowBatcher, registry: NodeRegistry, activities: ActivityLog) -> int:
    """EVT_C_STORE: check the calling AE may store, then STOW-RS the spooled data set."""
    activity = activities.of(event.assoc)
    if not registry.permits(event.assoc.requestor.ae_title, "store"):
        activity.count("C-STORE refused")
        return StoreStatus.REFUSED_NOT_AUTHORIZED
    # pynetdicom spooled the data set, exactly as received, into a Part-10 file whose meta names
    # the negotiated transfer syntax (_config.STORE_RECV_CHUNKED_DATASET), and deletes it after.
    # The calling AE goes into the File Meta's Source AE Title, where the archive's forwarding rules
    # and ingest-compression policy look for who sent an instance.
    try:
        part = with_source_ae(event.dataset_path, event.assoc.requestor.ae_title)
    except (NotPart10Error, OSError) as exc:
        _LOG.warning("C-STORE: the spooled data set cannot be read: %s", exc)
        activity.count("C-STORE failed")
        return StoreStatus.PROCESSING_FAILURE
    request = cast("C_STORE", event.request)
    status = batcher.store(part, str(request.AffectedSOPInstanceUID))
    activity.count("C-STORE ok" if status == 0 or 0xB000 <= status <= 0xBFFF else "C-STORE failed")
    return status
