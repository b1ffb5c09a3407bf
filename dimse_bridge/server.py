"""The bridge's Application Entity: presentation contexts, event handlers, and the listening server."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Final

import pydicom.config
from pynetdicom import AE, _config, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]  # pynetdicom generates these names at import
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from dimse_bridge.activity import ActivityLog
from dimse_bridge.client import DicomWebClient
from dimse_bridge.command_set import install as install_command_set_encoder
from dimse_bridge.handlers.find import handle_find
from dimse_bridge.handlers.retrieve import handle_get, handle_move
from dimse_bridge.handlers.store import StowBatcher, handle_store
from dimse_bridge.latency import install as install_prompt_reactors
from dimse_bridge.latency import set_tcp_nodelay
from dimse_bridge.outbound import OutboundDelivery
from dimse_bridge.pdu_batching import install as install_pdu_batching
from dimse_bridge.registry import NodeRegistry
from storage.dicom.media_types import TRANSFER_SYNTAXES

if TYPE_CHECKING:
    from pydicom.uid import UID
    from pynetdicom.events import Event
    from pynetdicom.transport import ThreadedAssociationServer

    from dimse_bridge.settings import BridgeSettings

__all__ = [
    "ARCHIVE_TRANSFER_SYNTAXES",
    "QUERY_RETRIEVE_SOP_CLASSES",
    "Bridge",
    "screen_association_request",
    "set_tcp_nodelay",
]

_LOG = logging.getLogger(__name__)

QUERY_RETRIEVE_SOP_CLASSES: Final = (
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelMove,
    PatientRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelGet,
)
# What a received instance may be encoded in: the syntaxes the archive stores (THE table of
# storage.dicom.media_types); a proposed syntax outside it would only fail at STOW-RS.
ARCHIVE_TRANSFER_SYNTAXES: Final = frozenset(TRANSFER_SYNTAXES)
# Bigger PDUs mean fewer fragments to reassemble per instance; PS3.8 §9.3.1 lets the receiver
# choose any maximum length it can handle.
_MAX_PDU: Final = 256 * 1024


class Bridge:
    """The DIMSE bridge: one AE listening for associations, one HTTP client to the server."""

    def __init__(self, settings: BridgeSettings, client: DicomWebClient | None = None) -> None:
        """Build the AE and its collaborators; nothing listens until `start()`."""
        self.settings = settings
        self.client = client or DicomWebClient(settings)
        self.registry = NodeRegistry(
            self.client, ttl=settings.registry_ttl, accept_unregistered=settings.accept_unregistered
        )
        self.activities = ActivityLog()
        self.batcher = StowBatcher(
            self.client,
            max_instances=settings.stow_batch_instances,
            max_bytes=settings.stow_batch_bytes,
            concurrency=settings.stow_concurrency,
            wait_timeout=settings.http_timeout * 2,
        )
        self._server: ThreadedAssociationServer | None = None
        # Forwarding jobs: claimed over the API and delivered from this process (DESIGN.md §1).
        self.outbound = OutboundDelivery(settings, self.client, self.registry) if settings.forward else None
        configure_pynetdicom(settings)
        self.ae = self._build_ae()

    def _build_ae(self) -> AE:
        settings = self.settings
        ae = AE(settings.ae_title)
        # PS3.8 §9.3.4 reason 7: peers must call this AE by its title.
        ae.require_called_aet = True
        ae.maximum_associations = settings.max_associations
        ae.acse_timeout = settings.acse_timeout
        ae.dimse_timeout = settings.dimse_timeout
        ae.network_timeout = settings.network_timeout
        ae.connection_timeout = settings.acse_timeout
        ae.maximum_pdu_size = _MAX_PDU
        ae.add_supported_context(Verification)
        for sop_class in QUERY_RETRIEVE_SOP_CLASSES:
            ae.add_supported_context(sop_class)
        # Storage contexts are not listed: with _config.UNRESTRICTED_STORAGE_SERVICE pynetdicom
        # accepts every storage SOP Class (private and newer ones included) in the first syntax
        # proposed (after `screen_association_request` dropped those the archive cannot take),
        # and the role a C-GET requestor asks for (PS3.7 §D.3.3.4). Listing 170 classes x 45
        # syntaxes instead costs a deep copy of them per association, about 0.2 s.
        return ae

    def _handlers(self) -> list[Any]:
        client, registry, activities = self.client, self.registry, self.activities
        return [
            (evt.EVT_CONN_OPEN, set_tcp_nodelay),
            (evt.EVT_REQUESTED, screen_association_request, [registry, activities]),
            (evt.EVT_C_ECHO, _handle_echo, [activities]),
            (evt.EVT_C_STORE, handle_store, [self.batcher, registry, activities]),
            (evt.EVT_C_FIND, handle_find, [client, registry, activities, self.settings.ae_title]),
            (evt.EVT_C_MOVE, handle_move, [client, registry, activities]),
            (evt.EVT_C_GET, handle_get, [client, registry, activities]),
            (evt.EVT_RELEASED, _outcome, [activities, "released"]),
            (evt.EVT_ABORTED, _outcome, [activities, "aborted"]),
            (evt.EVT_REJECTED, _outcome, [activities, "rejected"]),
            (evt.EVT_CONN_CLOSE, _closed, [activities]),
        ]

    def start(self) -> None:
        """Listen in background threads; returns once the port is bound."""
        self.batcher.start()
        self._server = self.ae.start_server(
            (self.settings.bind_host, self.settings.port), block=False, evt_handlers=self._handlers()
        )
        _LOG.info(
            "DIMSE bridge AE %s listening on %s:%d, archive %s, %s callers",
            self.settings.ae_title,
            self.settings.bind_host,
            self.settings.port,
            self.settings.server_url,
            "any" if self.settings.accept_unregistered else "registered",
        )
        if self.outbound is not None:
            self.outbound.start()

    def stop(self) -> None:
        """Stop listening, end the associations, flush pending STOW-RS requests."""
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        self.ae.shutdown()
        if self.outbound is not None:
            self.outbound.stop()
        self.batcher.stop()
        self.client.close()


def configure_pynetdicom(settings: BridgeSettings) -> None:
    """The process-wide pynetdicom and pydicom switches the bridge runs with."""
    # Process-wide pynetdicom switches; the bridge is the only pynetdicom user in its process.
    # Reactors wake on data instead of polling every millisecond (dimse_bridge/latency.py).
    install_prompt_reactors()
    # Command sets packed directly, not by pydicom's general writer (dimse_bridge/command_set.py).
    install_command_set_encoder()
    # The PDUs of a message go to the DUL in batches, one write each (dimse_bridge/pdu_batching.py).
    install_pdu_batching()
    # pydicom checks every value it is given against its VR, only to warn; pynetdicom builds a
    # dozen elements per DIMSE message. The bridge passes values on and never interprets them (the
    # archive validates what it stores), so it skips those checks: ~0.5 ms per sub-operation.
    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
    # Received data sets are spooled to a Part-10 file as they arrive: bounded memory, no decoding.
    _config.STORE_RECV_CHUNKED_DATASET = True
    _config.UNRESTRICTED_STORAGE_SERVICE = True
    # Instances sent as stored go from their spooled file in PDV-sized chunks (see
    # handlers/retrieve.py `send_as_stored`); the bridge never sends any other file path.
    _config.STORE_SEND_CHUNKED_DATASET = True
    # Identifiers hold patient names: never log them at INFO (DESIGN.md §4).
    _config.LOG_REQUEST_IDENTIFIERS = False
    _config.LOG_RESPONSE_IDENTIFIERS = False
    # pynetdicom logs every PDU and response at INFO; the bridge logs one line per association.
    quiet = logging.DEBUG if settings.log_level == "DEBUG" else logging.WARNING
    logging.getLogger("pynetdicom").setLevel(quiet)
    # httpx logs every request at INFO, which would be a line per instance.
    logging.getLogger("httpx").setLevel(quiet)


def screen_association_request(event: Event, registry: NodeRegistry, activities: ActivityLog) -> None:
    """EVT_REQUESTED, before negotiation: turn away unknown callers, drop syntaxes nobody can store."""
    request = event.assoc.requestor.primitive
    if request is None:
        return
    if not registry.accepts(str(request.calling_ae_title)):
        # PS3.8 §9.3.4: rejected-permanent, service-user, calling AE title not recognized.
        activities.set_outcome(event.assoc, "rejected (calling AE not registered)")
        event.assoc.acse.send_reject(0x01, 0x01, 0x03)
        # As pynetdicom's own rejections do: wait until the DUL has sent the A-ASSOCIATE-RJ, or
        # the socket closes first and the peer sees an abort instead of the reason.
        event.assoc.kill()
        return
    for context in request.presentation_context_definition_list:
        usable: list[str | bytes | UID] = [
            syntax for syntax in context.transfer_syntax if syntax in ARCHIVE_TRANSFER_SYNTAXES
        ]
        if usable and len(usable) < len(context.transfer_syntax):
            context.transfer_syntax = usable


def _handle_echo(event: Event, activities: ActivityLog) -> int:
    """EVT_C_ECHO: Success (PS3.7 §9.1.5: the only C-ECHO status an SCP need answer)."""
    activities.of(event.assoc).count("C-ECHO")
    return 0x0000


def _outcome(event: Event, activities: ActivityLog, outcome: str) -> None:
    activities.set_outcome(event.assoc, outcome)


def _closed(event: Event, activities: ActivityLog) -> None:
    activities.close(event.assoc)
