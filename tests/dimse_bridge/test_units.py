"""Bridge parts that need no server: settings, STOW verdicts -> C-STORE status, the HTTP client
against a mock transport, group commit, transfer syntax choice and the retrieval contexts."""

from __future__ import annotations

import threading
import types
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from local_http import Answer, LocalHttpServer
from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
)
from pynetdicom import build_context

from dimse_bridge.activity import ActivityLog
from dimse_bridge.cli import main
from dimse_bridge.client import DicomWebClient, DicomWebError, ServerUnreachable, StoredInstance, StowResult
from dimse_bridge.handlers.retrieve import InstanceRef, choose_transfer_syntax, requested_contexts
from dimse_bridge.handlers.store import StoreStatus, StowBatcher, status_for_http_error, status_for_instance
from dimse_bridge.registry import NodeRegistry
from dimse_bridge.server import screen_association_request
from dimse_bridge.settings import BridgeSettings, SettingsError
from dimse_bridge.stow_connection import Part10

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

CT = "1.2.840.10008.5.1.4.1.1.2"


def settings(**overrides: object) -> BridgeSettings:
    values: dict[str, object] = {"server_url": "http://archive.test", "token": "secret"}
    values.update(overrides)
    return BridgeSettings(**values)  # type: ignore[arg-type]


class TestSettings:
    def test_defaults_follow_the_issue(self) -> None:
        s = settings()
        assert (s.ae_title, s.port, s.bind_host, s.accept_unregistered) == ("WEBPACS", 11112, "127.0.0.1", False)

    def test_command_line_wins_over_environment(self) -> None:
        env = {
            "WEBPACS_BRIDGE_SERVER_URL": "http://env.test",
            "WEBPACS_BRIDGE_TOKEN": "t",
            "WEBPACS_BRIDGE_PORT": "104",
            "WEBPACS_BRIDGE_ACCEPT_UNREGISTERED": "yes",
        }
        s = BridgeSettings.from_sources({"port": 4242, "ae_title": None}, env)
        assert (s.server_url, s.port, s.accept_unregistered, s.ae_title) == ("http://env.test", 4242, True, "WEBPACS")

    @pytest.mark.parametrize(
        ("overrides", "named"),
        [
            ({"server_url": "ftp://x"}, "server URL"),
            ({"token": ""}, "token"),
            ({"ae_title": "WAY-TOO-LONG-AE-TITLE"}, "ae_title"),
            ({"port": 0}, "port"),
            ({"max_associations": 0}, "max_associations"),
            ({"dimse_timeout": -1.0}, "dimse_timeout"),
        ],
    )
    def test_bad_value_stops_with_a_message_naming_it(self, overrides: dict[str, object], named: str) -> None:
        with pytest.raises(SettingsError, match=named):
            settings(**overrides)

    def test_unparsable_environment_number_names_the_variable(self) -> None:
        with pytest.raises(SettingsError, match="WEBPACS_BRIDGE_PORT"):
            BridgeSettings.from_sources({}, {"WEBPACS_BRIDGE_SERVER_URL": "http://x", "WEBPACS_BRIDGE_PORT": "abc"})

    def test_cli_without_server_exits_2_and_says_what_is_missing(
        self, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.delenv("WEBPACS_BRIDGE_SERVER_URL", raising=False)
        assert main(["--token", "t"]) == 2
        assert "--server" in capsys.readouterr().err


class TestStoreStatus:
    @pytest.mark.parametrize(
        ("verdict", "status"),
        [
            (StoredInstance(stored=True, reason=None), 0x0000),
            (StoredInstance(stored=True, reason=0xB000), 0xB000),
            (StoredInstance(stored=True, reason=0xB007), 0xB007),
            (StoredInstance(stored=True, reason=0x0001), 0xB000),
            (StoredInstance(stored=False, reason=0xA900), 0xA900),
            (StoredInstance(stored=False, reason=0xC122), 0xC122),
            (StoredInstance(stored=False, reason=0x0122), 0x0122),
            (StoredInstance(stored=False, reason=0x0111), 0x0111),
            (StoredInstance(stored=False, reason=0xB000), 0x0110),
            (StoredInstance(stored=False, reason=None), 0x0110),
        ],
    )
    def test_stow_verdict_maps_to_annex_b_status(self, verdict: StoredInstance, status: int) -> None:
        assert status_for_instance(StowResult(200, {"1.2": verdict}), "1.2") == status

    def test_instance_missing_from_the_response_is_a_processing_failure(self) -> None:
        assert status_for_instance(StowResult(200, {}), "1.2") == StoreStatus.PROCESSING_FAILURE

    @pytest.mark.parametrize(
        ("error", "status"),
        [
            (DicomWebError("POST", "u", 400, ""), 0xC000),
            (DicomWebError("POST", "u", 415, ""), 0xC000),
            (DicomWebError("POST", "u", 413, ""), 0xA700),
            (DicomWebError("POST", "u", 503, ""), 0xA700),
            (DicomWebError("POST", "u", 401, ""), 0x0110),
            (ServerUnreachable("down"), 0xA700),
        ],
    )
    def test_whole_request_failure_maps_to_one_status(self, error: Exception, status: int) -> None:
        assert status_for_http_error(error) == status  # type: ignore[arg-type]


def _stow_body(stored: list[str], failed: dict[str, int]) -> dict[str, object]:
    def item(uid: str, extra: dict[str, object]) -> dict[str, object]:
        return {"00081150": {"vr": "UI", "Value": [CT]}, "00081155": {"vr": "UI", "Value": [uid]}, **extra}

    return {
        "00081199": {"vr": "SQ", "Value": [item(uid, {}) for uid in stored]},
        "00081198": {
            "vr": "SQ",
            "Value": [item(uid, {"00081197": {"vr": "US", "Value": [reason]}}) for uid, reason in failed.items()],
        },
    }


def _serve(handler: Callable[[httpx.Request], httpx.Response]) -> LocalHttpServer:
    """A real HTTP server answering with `handler`, for the client's http.client STOW-RS path."""

    def respond(path: str, headers: dict[str, str], body: bytes) -> Answer:
        response = handler(httpx.Request("POST", f"http://127.0.0.1{path}", headers=headers, content=body))
        content = response.read()
        return response.status_code, response.headers.get("content-type", "application/octet-stream"), content

    return LocalHttpServer(respond)


_SERVERS: list[LocalHttpServer] = []


@pytest.fixture(autouse=True)
def _stop_handler_servers() -> Iterator[None]:
    yield
    while _SERVERS:
        _SERVERS.pop().stop()


def _client(handler: Callable[[httpx.Request], httpx.Response], **overrides: object) -> DicomWebClient:
    """A client whose httpx calls go to `handler` in process and whose STOW-RS goes to it over HTTP."""
    server = _serve(handler)
    _SERVERS.append(server)
    return DicomWebClient(settings(server_url=server.url, **overrides), transport=httpx.MockTransport(handler))


class TestClient:
    def test_stow_streams_every_file_as_a_part_with_the_token(self, tmp_path: Path) -> None:
        files = [tmp_path / "a.dcm", tmp_path / "b.dcm"]
        files[0].write_bytes(b"A" * 10)
        files[1].write_bytes(b"B" * 20)
        seen: dict[str, object] = {}

        def handler(request: httpx.Request) -> httpx.Response:
            seen["auth"] = request.headers["authorization"]
            seen["type"] = request.headers["content-type"]
            seen["body"] = request.read()
            seen["length"] = int(request.headers["content-length"])
            return httpx.Response(202, json=_stow_body(["1.1"], {"1.2": 0xA900}))

        result = _client(handler).store_instances([Part10(path) for path in files])
        assert seen["auth"] == "Bearer secret"
        assert str(seen["type"]).startswith('multipart/related; type="application/dicom"; boundary=')
        assert b"A" * 10 in seen["body"] and b"B" * 20 in seen["body"]  # type: ignore[operator]
        assert seen["length"] == len(seen["body"])  # type: ignore[arg-type]
        assert result.instances == {"1.1": StoredInstance(True, None), "1.2": StoredInstance(False, 0xA900)}

    def test_stow_409_is_a_result_not_an_error(self, tmp_path: Path) -> None:
        (tmp_path / "a.dcm").write_bytes(b"x")
        client = _client(lambda r: httpx.Response(409, json=_stow_body([], {"1.1": 0xC000})))
        assert client.store_instances([Part10(tmp_path / "a.dcm")]).instances["1.1"] == StoredInstance(False, 0xC000)

    def test_search_pages_until_a_short_page(self) -> None:
        offsets: list[str] = []

        def handler(request: httpx.Request) -> httpx.Response:
            offsets.append(request.url.params["offset"])
            count = 2 if request.url.params["offset"] in ("0", "2") else 1
            return httpx.Response(200, json=[{"00100020": {"vr": "LO", "Value": ["P"]}}] * count)

        items = list(_client(handler, qido_page_size=2).search("/studies", {"PatientID": "P"}))
        assert (len(items), offsets) == (5, ["0", "2", "4"])

    def test_search_error_carries_the_http_status(self) -> None:
        client = _client(lambda r: httpx.Response(400, text="unknown key Foo"))
        with pytest.raises(DicomWebError) as caught:
            list(client.search("/studies", {"Foo": "1"}))
        assert caught.value.status_code == 400

    def test_unreachable_server_is_server_unreachable(self) -> None:
        def handler(request: httpx.Request) -> httpx.Response:
            raise httpx.ConnectError("refused", request=request)

        with pytest.raises(ServerUnreachable):
            list(_client(handler).search("/studies", {}))

    def test_retrieve_spools_each_part_to_its_own_file_and_cleans_up(self, tmp_path: Path) -> None:
        boundary = "XyZ"
        parts = [b"\x00first part\r\n--not-a-boundary", b"second" * 1000]
        body = (
            b"".join(
                f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + part + b"\r\n" for part in parts
            )
            + f"--{boundary}--\r\n".encode()
        )
        content_type = f'multipart/related; type="application/dicom"; boundary="{boundary}"'
        client = _client(lambda r: httpx.Response(200, content=body, headers={"content-type": content_type}))
        received = []
        with client.retrieve("/studies/1", tmp_path) as spooled:
            for path in spooled:
                received.append(path.read_bytes())
                path.unlink()
        assert received == parts
        assert list(tmp_path.iterdir()) == []

    def test_registry_lists_nodes_with_their_permissions(self) -> None:
        nodes = [
            {
                "ae_title": "CT1 ",
                "host": "h",
                "port": 104,
                "allow_store": True,
                "allow_find": False,
                "allow_move": True,
                "description": "",
                "created_at": "2026-01-01T00:00:00Z",
            }
        ]
        [node] = _client(lambda r: httpx.Response(200, json=nodes)).list_nodes()
        assert (node.ae_title, node.port, node.allow_find) == ("CT1", 104, False)


class TestNodeRegistry:
    def test_permissions_come_from_the_registry_and_refresh_after_ttl(self) -> None:
        listed = [
            [{"ae_title": "CT1", "host": "h", "port": 1, "allow_store": True, "allow_find": False, "allow_move": False}]
        ]
        now = [0.0]
        client = _client(lambda r: httpx.Response(200, json=listed[0]))
        registry = NodeRegistry(client, ttl=5, accept_unregistered=False, clock=lambda: now[0])
        assert registry.permits("CT1", "store") and not registry.permits("CT1", "find")
        assert not registry.accepts("OTHER")
        listed[0] = []
        now[0] = 4.0
        assert registry.accepts("CT1")
        now[0] = 6.0
        assert not registry.accepts("CT1")

    def test_unknown_move_destination_is_looked_up_again_at_once(self) -> None:
        listed: list[list[dict[str, object]]] = [[]]
        now = [0.0]
        registry = NodeRegistry(
            _client(lambda r: httpx.Response(200, json=listed[0])),
            ttl=60,
            accept_unregistered=False,
            clock=lambda: now[0],
        )
        assert registry.get("NEW") is None
        listed[0] = [{"ae_title": "NEW", "host": "h", "port": 1}]
        assert registry.get("NEW") is None
        assert registry.get("NEW", refresh_on_miss=True) is not None

    def test_unregistered_caller_may_do_everything_only_when_accepted(self) -> None:
        client = _client(lambda r: httpx.Response(200, json=[]))
        assert NodeRegistry(client, ttl=5, accept_unregistered=True).permits("ANY", "move")
        assert not NodeRegistry(client, ttl=5, accept_unregistered=False).permits("ANY", "move")

    def test_server_outage_keeps_the_last_known_list(self) -> None:
        answers = iter(
            [httpx.Response(200, json=[{"ae_title": "CT1", "host": "h", "port": 1}]), httpx.Response(503, text="down")]
        )
        now = [0.0]
        registry = NodeRegistry(
            _client(lambda r: next(answers)), ttl=1, accept_unregistered=False, clock=lambda: now[0]
        )
        assert registry.accepts("CT1")
        now[0] = 2.0
        assert registry.accepts("CT1")


class TestGroupCommit:
    def test_concurrent_instances_share_a_request_and_each_gets_its_own_status(self, tmp_path: Path) -> None:
        release = threading.Event()
        requests: list[int] = []

        def handler(request: httpx.Request) -> httpx.Response:
            body = request.read()
            uids = [f"1.{n}" for n in range(6) if f"uid-1.{n}".encode() in body]
            requests.append(len(uids))
            release.wait(5)
            return httpx.Response(202, json=_stow_body([u for u in uids if u != "1.3"], {"1.3": 0xA900}))

        batcher = StowBatcher(_client(handler), max_instances=32, max_bytes=1 << 20, concurrency=1, wait_timeout=10)
        batcher.start()
        statuses: dict[str, int] = {}

        def send(n: int) -> None:
            path = tmp_path / f"{n}.dcm"
            path.write_bytes(f"uid-1.{n}".encode())
            statuses[f"1.{n}"] = batcher.store(Part10(path), f"1.{n}")

        first = threading.Thread(target=send, args=(0,))
        first.start()
        while not requests:
            threading.Event().wait(0.01)
        others = [threading.Thread(target=send, args=(n,)) for n in range(1, 6)]
        for thread in others:
            thread.start()
        while batcher._queue.qsize() < 5:  # wait until all five are queued behind the first
            threading.Event().wait(0.01)
        release.set()
        for thread in [first, *others]:
            thread.join(10)
        batcher.stop()
        assert requests == [1, 5]
        assert statuses == {"1.0": 0, "1.1": 0, "1.2": 0, "1.3": 0xA900, "1.4": 0, "1.5": 0}

    def test_rejected_batch_is_retried_one_by_one(self, tmp_path: Path) -> None:
        sizes: list[int] = []

        def handler(request: httpx.Request) -> httpx.Response:
            body = request.read()
            count = body.count(b"Content-Type: application/dicom")
            sizes.append(count)
            if count > 1:
                return httpx.Response(400, text="cannot parse part 2")
            uid = "1.1" if b"good" in body else "1.2"
            return httpx.Response(200, json=_stow_body([uid], {})) if uid == "1.1" else httpx.Response(400)

        batcher = StowBatcher(_client(handler), max_instances=8, max_bytes=1 << 20, concurrency=1, wait_timeout=10)
        good, bad = tmp_path / "good.dcm", tmp_path / "bad.dcm"
        good.write_bytes(b"good")
        bad.write_bytes(b"bad")
        from dimse_bridge.handlers.store import _Pending

        pending = [_Pending(Part10(good), "1.1", 4), _Pending(Part10(bad), "1.2", 3)]
        batcher._send(pending)  # drive one batch directly, no threads
        assert sizes == [2, 1, 1]
        assert [p.status for p in pending] == [0x0000, 0xC000]


class TestTransferSyntaxChoice:
    @pytest.mark.parametrize(
        ("stored", "usable", "chosen"),
        [
            (JPEG2000, {JPEG2000, ExplicitVRLittleEndian}, JPEG2000),
            (JPEG2000, {ExplicitVRLittleEndian}, ExplicitVRLittleEndian),
            (JPEGBaseline8Bit, {ImplicitVRLittleEndian}, ImplicitVRLittleEndian),
            (ExplicitVRLittleEndian, {ImplicitVRLittleEndian}, ImplicitVRLittleEndian),
            (DeflatedExplicitVRLittleEndian, {ExplicitVRLittleEndian}, ExplicitVRLittleEndian),
            (ExplicitVRBigEndian, {ExplicitVRBigEndian}, ExplicitVRBigEndian),
            (JPEG2000, {JPEGBaseline8Bit}, None),
            (ExplicitVRLittleEndian, set(), None),
        ],
    )
    def test_as_stored_when_accepted_else_uncompressed_else_none(
        self, stored: str, usable: set[str], chosen: str | None
    ) -> None:
        assert choose_transfer_syntax(stored, {str(u) for u in usable}) == chosen

    def test_move_contexts_offer_uncompressed_and_each_stored_syntax(self) -> None:
        refs = [InstanceRef("1", "2", "3", CT, JPEG2000), InstanceRef("1", "2", "4", CT, ExplicitVRLittleEndian)]
        offered = {(str(cx.abstract_syntax), tuple(cx.transfer_syntax)) for cx in requested_contexts(refs)}
        assert offered == {(CT, (ExplicitVRLittleEndian, ImplicitVRLittleEndian)), (CT, (JPEG2000,))}

    def test_move_contexts_stay_within_128(self) -> None:
        refs = [InstanceRef("1", "2", str(n), f"1.2.3.{n}", None) for n in range(40)]
        assert len(requested_contexts(refs)) == 128


class _FakeAssociation:
    """Just enough of a pynetdicom Association for the EVT_REQUESTED handler."""

    def __init__(self, calling: str, contexts: list[Any]) -> None:
        self.requestor = types.SimpleNamespace(
            primitive=types.SimpleNamespace(calling_ae_title=calling, presentation_context_definition_list=contexts)
        )
        self.rejected: tuple[int, int, int] | None = None
        self.killed = False
        self.acse = types.SimpleNamespace(send_reject=self._reject)

    def _reject(self, result: int, source: int, diagnostic: int) -> None:
        self.rejected = (result, source, diagnostic)

    def kill(self) -> None:
        self.killed = self.rejected is not None  # only after the A-ASSOCIATE-RJ was queued


class TestAssociationRequest:
    def _registry(self, accept_unregistered: bool) -> NodeRegistry:
        nodes = [{"ae_title": "CT1", "host": "h", "port": 1}]
        return NodeRegistry(
            _client(lambda r: httpx.Response(200, json=nodes)), ttl=60, accept_unregistered=accept_unregistered
        )

    def test_unregistered_caller_is_rejected_as_calling_ae_not_recognized(self) -> None:
        assoc = _FakeAssociation("STRANGER", [])
        screen_association_request(types.SimpleNamespace(assoc=assoc), self._registry(False), ActivityLog())  # type: ignore[arg-type]
        assert assoc.rejected == (0x01, 0x01, 0x03)
        assert assoc.killed

    def test_registered_caller_is_not_rejected(self) -> None:
        assoc = _FakeAssociation("CT1", [])
        screen_association_request(types.SimpleNamespace(assoc=assoc), self._registry(False), ActivityLog())  # type: ignore[arg-type]
        assert assoc.rejected is None

    def test_syntaxes_the_archive_cannot_take_are_dropped_keeping_the_proposed_order(self) -> None:
        jpip = "1.2.840.10008.1.2.4.94"
        context = build_context(CT, [jpip, JPEG2000, ExplicitVRLittleEndian])
        only_jpip = build_context(CT, [jpip])
        assoc = _FakeAssociation("ANY", [context, only_jpip])
        screen_association_request(types.SimpleNamespace(assoc=assoc), self._registry(True), ActivityLog())  # type: ignore[arg-type]
        assert context.transfer_syntax == [JPEG2000, ExplicitVRLittleEndian]
        assert only_jpip.transfer_syntax == [jpip]
