"""The bridge's pynetdicom latency patches: they apply to this pynetdicom, and each wait ends on its event.

The waits are made 30 s long here, so a wait that did not end on its event fails the test by far.
"""

from __future__ import annotations

import socket
import threading
import time
import types
from typing import TYPE_CHECKING

import httpx
import pynetdicom.association
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, evt
from pynetdicom._globals import MODE_REQUESTOR
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_ECHO
from pynetdicom.pdu_primitives import A_RELEASE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]  # generated at import
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from dimse_bridge import latency
from dimse_bridge.activity import ActivityLog
from dimse_bridge.client import DicomWebClient
from dimse_bridge.handlers.retrieve import handle_move
from dimse_bridge.registry import NodeRegistry
from dimse_bridge.settings import BridgeSettings

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

_LONG: float = 30.0
_PROMPT: float = 5.0


@pytest.fixture(autouse=True)
def _prompt_reactors(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # install() patches pynetdicom's modules for the whole process; undo it after each test.
    for name in ("DULServiceProvider", "time"):
        monkeypatch.setattr(pynetdicom.association, name, getattr(pynetdicom.association, name))
    latency.install()
    yield


def _ended_within(action: Callable[[], None], trigger: Callable[[], object]) -> float:
    """Start `action` in a thread, fire `trigger`, return how long `action` took."""
    started = time.monotonic()
    waiter = threading.Thread(target=action)
    waiter.start()
    time.sleep(0.05)  # let the waiter reach its wait; a trigger fired before it still ends it
    trigger()
    waiter.join(_LONG + 5)
    return time.monotonic() - started


class TestPromptDul:
    def test_new_associations_get_the_prompt_dul(self) -> None:
        assoc = Association(AE("TEST"), MODE_REQUESTOR)
        assert isinstance(assoc.dul, latency._PromptDUL)
        assert isinstance(assoc.dul.to_provider_queue, latency._WakingQueue)

    def test_idle_wait_ends_when_a_primitive_is_queued_for_sending(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(latency, "_DUL_IDLE", _LONG)
        dul = Association(AE("TEST"), MODE_REQUESTOR).dul
        assert isinstance(dul, latency._PromptDUL)
        took = _ended_within(dul._idle_wait, lambda: dul.to_provider_queue.put(A_RELEASE()))
        assert took < _PROMPT

    def test_idle_wait_ends_when_the_dul_is_asked_to_stop(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(latency, "_DUL_IDLE", _LONG)
        dul = Association(AE("TEST"), MODE_REQUESTOR).dul
        assert isinstance(dul, latency._PromptDUL)
        took = _ended_within(dul._idle_wait, dul.stop_dul)
        assert took < _PROMPT
        assert dul._kill_thread

    def test_idle_wait_ends_when_the_peer_sends_data(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(latency, "_DUL_IDLE", _LONG)
        dul = Association(AE("TEST"), MODE_REQUESTOR).dul
        assert isinstance(dul, latency._PromptDUL)
        ours, peer = socket.socketpair()
        with ours, peer:
            dul.socket = types.SimpleNamespace(socket=ours, _is_connected=True)  # type: ignore[assignment]
            took = _ended_within(dul._idle_wait, lambda: peer.sendall(b"\x04"))
        assert took < _PROMPT


class TestReactorClock:
    def test_reactor_wait_ends_when_a_dimse_message_arrives(self) -> None:
        clock = latency._ReactorClock()
        assoc = Association(AE("TEST"), MODE_REQUESTOR)
        took = _ended_within(
            lambda: clock._reactor_wait(assoc, _LONG), lambda: assoc.dimse.msg_queue.put((1, C_ECHO()))
        )
        assert took < _PROMPT

    def test_reactor_wait_ends_when_another_thread_asks_it_to_pause(self) -> None:
        clock = latency._ReactorClock()
        assoc = Association(AE("TEST"), MODE_REQUESTOR)

        def ask_to_pause() -> None:
            assoc._reactor_checkpoint.clear()
            clock.sleep(latency._PAUSE_POLL)  # what send_c_store does while it waits for the pause

        took = _ended_within(lambda: clock._reactor_wait(assoc, _LONG), ask_to_pause)
        assert took < _PROMPT

    def test_other_sleeps_keep_their_length(self) -> None:
        started = time.monotonic()
        latency._ReactorClock().sleep(0.05)
        assert time.monotonic() - started >= 0.05


class TestAssociations:
    def test_echoes_on_one_association_all_succeed_with_both_sides_patched(self) -> None:
        scp = AE("ECHOSCP")
        scp.add_supported_context(Verification)
        server = scp.start_server(("127.0.0.1", 0), block=False)
        assert server is not None
        try:
            port = server.server_address[1]
            scu = AE("ECHOSCU")
            scu.add_requested_context(Verification)
            assoc = scu.associate("127.0.0.1", port, ae_title="ECHOSCP")
            assert assoc.is_established
            statuses = [assoc.send_c_echo().Status for _ in range(50)]
            assoc.release()
            assert statuses == [0x0000] * 50
            assert assoc.is_released
        finally:
            server.shutdown()

    def test_nagle_is_off_on_the_socket_of_a_new_connection(self) -> None:
        with (
            socket.create_server(("127.0.0.1", 0)) as listener,
            socket.create_connection(listener.getsockname()) as raw,
        ):
            connection = types.SimpleNamespace(socket=raw)
            event = types.SimpleNamespace(assoc=types.SimpleNamespace(dul=types.SimpleNamespace(socket=connection)))
            latency.set_tcp_nodelay(event)  # type: ignore[arg-type]
            assert raw.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


class _Peer:
    """Just enough of an Association for `handle_move` (weak-referenceable, unlike SimpleNamespace)."""

    requestor = types.SimpleNamespace(ae_title="MOVESCU")


class TestMoveDestination:
    def test_the_association_to_the_destination_turns_nagle_off(self) -> None:
        study = generate_uid()
        instance = {
            "0020000D": {"vr": "UI", "Value": [study]},
            "0020000E": {"vr": "UI", "Value": [generate_uid()]},
            "00080016": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.2"]},
            "00080018": {"vr": "UI", "Value": [generate_uid()]},
        }
        nodes = [{"ae_title": "DEST", "host": "127.0.0.1", "port": 104}]

        def handler(request: httpx.Request) -> httpx.Response:
            return httpx.Response(200, json=nodes if request.url.path == "/api/dicom-nodes" else [instance])

        settings = BridgeSettings(server_url="http://archive.test", token="secret")
        client = DicomWebClient(settings, transport=httpx.MockTransport(handler))
        identifier = Dataset()
        identifier.QueryRetrieveLevel = "STUDY"
        identifier.StudyInstanceUID = study
        event = types.SimpleNamespace(
            assoc=_Peer(),
            move_destination="DEST",
            identifier=identifier,
            request=types.SimpleNamespace(AffectedSOPClassUID=StudyRootQueryRetrieveInformationModelMove),
            is_cancelled=False,
        )
        registry = NodeRegistry(client, ttl=60, accept_unregistered=True)
        host, port, kwargs = next(handle_move(event, client, registry, ActivityLog()))  # type: ignore[arg-type]
        assert (host, port) == ("127.0.0.1", 104)
        assert (evt.EVT_CONN_OPEN, latency.set_tcp_nodelay) in kwargs["evt_handlers"]
