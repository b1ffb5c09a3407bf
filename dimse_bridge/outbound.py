"""Outbound delivery: the bridge claims the server's forwarding jobs over the API and delivers them.

The server never dials out (DESIGN.md §1). A thread here claims a due job
(`POST /api/forwarding-jobs/claim`, a lease), lists its instances with QIDO-RS, retrieves them by
WADO-RS (as stored, or transcoded by the server when the job names a transfer syntax, PS3.18 §8.7)
and sends them:

- to a registered DICOM node by C-STORE, with the same code as C-MOVE sub-operations
  (handlers/retrieve.py: proposed contexts, as stored when accepted, else decompressed);
- to a DICOMweb server by STOW-RS (PS3.18 §10.5), in batches, with the job's bearer token.

Progress goes back as it happens (`/progress`, which renews the lease; a 409 there means the job
was cancelled or re-claimed, and the delivery stops), the outcome at the end (`/result`). A bridge
that dies simply stops renewing: the lease runs out and the next claim takes the job again.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import httpx
from pydicom.dataset import Dataset
from pydicom.filereader import read_file_meta_info
from pynetdicom import AE, evt
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove  # type: ignore[attr-defined]
from pynetdicom.status import code_to_category

from dimse_bridge.client import BridgeError, DicomWebError, parse_stow_response, stow_request
from dimse_bridge.handlers.retrieve import (
    CONVERSION_ERRORS,
    InstanceRef,
    accepted_syntaxes,
    list_instances,
    prepare_instance,
    requested_contexts,
    send_as_stored,
    wado_paths,
)
from dimse_bridge.latency import set_tcp_nodelay

if TYPE_CHECKING:
    from collections.abc import Iterator

    from pynetdicom.association import Association

    from dimse_bridge.client import DicomWebClient
    from dimse_bridge.registry import NodeRegistry
    from dimse_bridge.settings import BridgeSettings

__all__ = ["DeliveryFailed", "OutboundDelivery", "OutboundJob"]

_LOG = logging.getLogger(__name__)

_JOBS: Final = "/api/forwarding-jobs"
# Progress reports (each a database write) at most this often, unless the lease needs renewing sooner.
_PROGRESS_INTERVAL: Final = 1.0
# PS3.7 Annex C: Success and Warning statuses mean the receiver has the instance.
_STORED_CATEGORIES: Final = ("Success", "Warning")
_MAX_LISTED_FAILURES: Final = 5


class DeliveryFailed(BridgeError):
    """An attempt did not deliver every instance; the message says what went wrong."""


class _LeaseLost(BridgeError):
    """The server took the job back (cancelled, or re-claimed after the lease ran out)."""


class _Stopping(BridgeError):
    """The bridge is stopping: the job is left to its lease, which runs out, and to the next claim."""


@dataclass(frozen=True, slots=True)
class OutboundJob:
    """A job as the claim returned it."""

    id: int
    lease: str
    lease_seconds: int
    study: str
    series: str
    instances: tuple[str, ...]
    ae_title: str | None
    dicomweb_url: str | None
    dicomweb_token: str | None
    transfer_syntax: str | None

    @classmethod
    def from_json(cls, item: dict[str, Any]) -> OutboundJob:
        """Read one element of the claim's answer."""
        return cls(
            id=int(item["id"]),
            lease=str(item["lease"]),
            lease_seconds=int(item["lease_seconds"]),
            study=str(item["study_instance_uid"]),
            series=str(item.get("series_instance_uid") or ""),
            instances=tuple(item.get("sop_instance_uids") or ()),
            ae_title=item.get("ae_title"),
            dicomweb_url=item.get("dicomweb_url"),
            dicomweb_token=item.get("dicomweb_token"),
            transfer_syntax=item.get("transfer_syntax"),
        )

    @property
    def destination(self) -> str:
        """The destination, for messages."""
        return f"AE {self.ae_title}" if self.ae_title else str(self.dicomweb_url)

    def identifier(self) -> Dataset:
        """A C-MOVE-like identifier selecting the job's instances (for `list_instances`)."""
        identifier = Dataset()
        identifier.StudyInstanceUID = self.study
        if self.instances:
            identifier.QueryRetrieveLevel = "IMAGE"
            identifier.SOPInstanceUID = list(self.instances)
        elif self.series:
            identifier.QueryRetrieveLevel = "SERIES"
            identifier.SeriesInstanceUID = self.series
        else:
            identifier.QueryRetrieveLevel = "STUDY"
        return identifier


class _Progress:
    """Counts sent instances and reports them, renewing the lease."""

    def __init__(self, client: DicomWebClient, job: OutboundJob, stop: threading.Event) -> None:
        self._client = client
        self._job = job
        self._stop = stop
        self.total = 0  # known once the instances are listed
        self.sent = 0
        self.failures: list[str] = []
        self._reported_at = time.monotonic()
        # Renew well before the lease runs out, whatever its length.
        self._interval = min(_PROGRESS_INTERVAL, job.lease_seconds / 3)

    def report(self, *, force: bool = False) -> None:
        """Tell the server, at most once per interval unless `force`.

        Raises:
            _LeaseLost: the server answered 409 (the job is not ours any more).
            _Stopping: the bridge is stopping.
        """
        if self._stop.is_set():
            raise _Stopping(f"forwarding job {self._job.id} left unfinished")
        if not force and time.monotonic() - self._reported_at < self._interval:
            return
        body = {"lease": self._job.lease, "instances_sent": self.sent, "instances_total": self.total}
        try:
            self._client.post_json(f"{_JOBS}/{self._job.id}/progress", body)
        except DicomWebError as exc:
            if exc.status_code == 409:
                raise _LeaseLost(exc.detail) from exc
            raise
        self._reported_at = time.monotonic()

    def outcome(self) -> str | None:
        """None when every instance went, else the reason."""
        if not self.failures and self.sent >= self.total:
            return None
        listed = ", ".join(self.failures[:_MAX_LISTED_FAILURES])
        more = (
            ""
            if len(self.failures) <= _MAX_LISTED_FAILURES
            else f" and {len(self.failures) - _MAX_LISTED_FAILURES} more"
        )
        missing = self.total - self.sent
        return f"{missing} of {self.total} instances not delivered to {self._job.destination}: {listed}{more}"


class OutboundDelivery:
    """The delivery loop: one thread claiming and delivering one job at a time."""

    def __init__(self, settings: BridgeSettings, client: DicomWebClient, registry: NodeRegistry) -> None:
        """Nothing runs until `start()`."""
        self._settings = settings
        self._client = client
        self._registry = registry
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start claiming in a background thread."""
        self._thread = threading.Thread(target=self._run, name="outbound-delivery", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop; a job being delivered stops at its next instance and is claimed again after its lease."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self._settings.http_timeout)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                claimed = self._client.post_json(f"{_JOBS}/claim", {"limit": 1}) or []
            except BridgeError as exc:
                _LOG.warning("cannot claim forwarding jobs: %s", exc)
                claimed = []
            for item in claimed:
                self.deliver(OutboundJob.from_json(item))
            if not claimed:
                self._stop.wait(self._settings.forward_poll)

    def deliver(self, job: OutboundJob) -> None:
        """Deliver one claimed job and report its outcome (never raises)."""
        progress = _Progress(self._client, job, self._stop)
        try:
            self._attempt(job, progress)
            error = progress.outcome()
        except (_LeaseLost, _Stopping) as exc:
            _LOG.info("forwarding job %d stopped: %s", job.id, exc)
            return
        except DeliveryFailed as exc:
            error = str(exc)
        except BridgeError as exc:
            error = f"{type(exc).__name__}: {exc}"
        except Exception as exc:  # noqa: BLE001 - a bug or an odd peer must not end the loop; the job says what
            _LOG.exception("forwarding job %d failed unexpectedly", job.id)
            error = f"unexpected error: {exc!r}"
        sent, total = progress.sent, progress.total
        _LOG.info(
            "forwarding job %d to %s: %d/%d instances%s", job.id, job.destination, sent, total,
            "" if error is None else f", failed: {error}",
        )  # fmt: skip
        body = {
            "lease": job.lease,
            "success": error is None,
            "error": error or "",
            "instances_sent": sent,
            "instances_total": total,
        }
        try:
            self._client.post_json(f"{_JOBS}/{job.id}/result", body)
        except BridgeError as exc:
            # The lease runs out and the job is claimed again: it is delivered twice, never lost.
            _LOG.warning("cannot report forwarding job %d: %s", job.id, exc)

    def _attempt(self, job: OutboundJob, progress: _Progress) -> None:
        level, refs = list_instances(
            self._client, job.identifier(), str(StudyRootQueryRetrieveInformationModelMove), with_transfer_syntax=True
        )
        if job.transfer_syntax:
            # The server transcodes on retrieval: propose what will arrive.
            refs = [replace(ref, transfer_syntax=job.transfer_syntax) for ref in refs]
        progress.total = len(refs)
        progress.report(force=True)
        if not refs:
            raise DeliveryFailed(f"nothing to send: study {job.study} has none of the job's instances any more")
        if job.ae_title:
            self._send_to_node(job, level, refs, progress)
        else:
            self._send_to_dicomweb(job, level, refs, progress)
        progress.report(force=True)

    def _parts(self, job: OutboundJob, level: str, refs: list[InstanceRef], spool: Path) -> Iterator[Path]:
        """Every instance of the job, spooled one at a time (the caller deletes each)."""
        for path in wado_paths(level, refs):
            with self._client.retrieve(path, spool, transfer_syntax=job.transfer_syntax) as parts:
                yield from parts

    def _send_to_node(self, job: OutboundJob, level: str, refs: list[InstanceRef], progress: _Progress) -> None:
        node = self._registry.get(str(job.ae_title), refresh_on_miss=True)
        if node is None:
            raise DeliveryFailed(f"AE {job.ae_title} is not in the DICOM node registry (any more)")
        assoc = self._associate(node.ae_title, node.host, node.port, refs)
        try:
            send_as_stored(assoc)
            usable = accepted_syntaxes(assoc.accepted_contexts)
            wanted = {ref.sop_instance for ref in refs}
            with tempfile.TemporaryDirectory(prefix="webpacs-forward-") as spool:
                for part in self._parts(job, level, refs, Path(spool)):
                    try:
                        uid = str(read_file_meta_info(part).MediaStorageSOPInstanceUID)
                        if uid in wanted:
                            self._store_one(assoc, part, uid, usable, progress)
                    finally:
                        part.unlink(missing_ok=True)
                    progress.report()
        finally:
            if assoc.is_established:
                assoc.release()

    def _associate(self, ae_title: str, host: str, port: int, refs: list[InstanceRef]) -> Association:
        settings = self._settings
        ae = AE(settings.ae_title)
        ae.acse_timeout = settings.acse_timeout
        ae.dimse_timeout = settings.dimse_timeout
        ae.network_timeout = settings.network_timeout
        ae.connection_timeout = settings.acse_timeout
        ae.requested_contexts = requested_contexts(refs)
        # No Nagle: each C-STORE-RQ would otherwise wait on the peer's delayed ACK (dimse_bridge/latency.py).
        assoc = ae.associate(host, port, ae_title=ae_title, evt_handlers=[(evt.EVT_CONN_OPEN, set_tcp_nodelay)])
        if not assoc.is_established:
            outcome = "rejected" if assoc.is_rejected else "aborted" if assoc.is_aborted else "not established"
            raise DeliveryFailed(f"association with AE {ae_title} at {host}:{port} {outcome}")
        return assoc

    @staticmethod
    def _store_one(assoc: Association, part: Path, uid: str, usable: dict[str, set[str]], progress: _Progress) -> None:
        try:
            dataset = prepare_instance(part, usable)
        except CONVERSION_ERRORS as exc:
            progress.failures.append(f"{uid} (cannot convert: {exc})")
            return
        if not assoc.is_established:
            raise DeliveryFailed(f"the association with AE {assoc.acceptor.ae_title} ended before {uid}")
        try:
            status = assoc.send_c_store(dataset)
        except (ValueError, RuntimeError) as exc:  # no presentation context for its SOP Class
            progress.failures.append(f"{uid} ({exc})")
            return
        code = int(getattr(status, "Status", -1)) if status else -1
        if code >= 0 and code_to_category(code) in _STORED_CATEGORIES:
            progress.sent += 1
        else:
            progress.failures.append(f"{uid} (status 0x{code:04X})" if code >= 0 else f"{uid} (no response)")

    def _send_to_dicomweb(self, job: OutboundJob, level: str, refs: list[InstanceRef], progress: _Progress) -> None:
        url = f"{str(job.dicomweb_url).rstrip('/')}/studies"
        headers = {"Authorization": f"Bearer {job.dicomweb_token}"} if job.dicomweb_token else {}
        wanted = {ref.sop_instance for ref in refs}
        batch: list[tuple[str, Path]] = []
        with (
            httpx.Client(timeout=self._settings.http_timeout, headers=headers) as http,
            tempfile.TemporaryDirectory(prefix="webpacs-forward-") as spool,
        ):
            try:
                for part in self._parts(job, level, refs, Path(spool)):
                    uid = str(read_file_meta_info(part).MediaStorageSOPInstanceUID)
                    if uid not in wanted:
                        part.unlink(missing_ok=True)
                        continue
                    batch.append((uid, part))
                    if len(batch) >= self._settings.stow_batch_instances:
                        self._stow(http, url, batch, progress)
                if batch:
                    self._stow(http, url, batch, progress)
            finally:
                for _, part in batch:
                    part.unlink(missing_ok=True)

    @staticmethod
    def _stow(http: httpx.Client, url: str, batch: list[tuple[str, Path]], progress: _Progress) -> None:
        """STOW-RS one batch; the files are deleted and the batch emptied.

        Raises:
            DeliveryFailed: the server cannot be reached or refused the whole request.
        """
        try:
            headers, body = stow_request([path for _, path in batch])
            try:
                response = http.post(url, headers=headers, content=body)
            except httpx.HTTPError as exc:
                raise DeliveryFailed(f"STOW-RS {url}: {exc!r}") from exc
            # PS3.18 §10.5.3: 200 all stored, 202 some, 409 none (with reasons per instance).
            if response.status_code >= 400 and response.status_code != 409:
                raise DeliveryFailed(f"STOW-RS {url}: HTTP {response.status_code}: {response.text[:300]}")
            verdicts = parse_stow_response(response.content)
            for uid, _ in batch:
                verdict = verdicts.get(uid)
                if verdict is not None and verdict.stored:
                    progress.sent += 1
                else:
                    reason = f"failure reason 0x{verdict.reason:04X}" if verdict and verdict.reason else "not stored"
                    progress.failures.append(f"{uid} ({reason})")
        finally:
            for _, path in batch:
                path.unlink(missing_ok=True)
            batch.clear()
        progress.report()
