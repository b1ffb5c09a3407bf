"""The bridge's STOW-RS connection: the whole body arrives, kept-alive connections are reused, and one
the server closed while idle is replaced without the caller noticing."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

import pytest

from dimse_bridge.stow_connection import Part10, StowConnection

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


class _Recorder(ThreadingHTTPServer):
    """Answers every POST with 200 and the body's length; closes the connection after each answer
    without announcing it when `hang_up` is set, as a server whose keep-alive timer ran out does."""

    daemon_threads = True

    def __init__(self, *, hang_up: bool) -> None:
        self.bodies: list[bytes] = []
        self.connections = 0
        recorder = self

        class Answer(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                recorder.connections += 1

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                recorder.bodies.append(body)
                answer = str(len(body)).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)
                self.close_connection = hang_up

            def log_message(self, format: str, *args: object) -> None:
                """Quiet."""

        super().__init__(("127.0.0.1", 0), Answer)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def files(tmp_path: Path) -> list[Path]:
    paths = [tmp_path / "a.dcm", tmp_path / "b.dcm"]
    paths[0].write_bytes(b"OLD-META" + b"A" * 5000)
    paths[1].write_bytes(b"B" * 70000)
    return paths


def _server(hang_up: bool) -> Iterator[_Recorder]:
    server = _Recorder(hang_up=hang_up)
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def keep_alive() -> Iterator[_Recorder]:
    yield from _server(hang_up=False)


@pytest.fixture
def hanging_up() -> Iterator[_Recorder]:
    yield from _server(hang_up=True)


def test_heads_and_files_from_their_offsets_make_the_body(keep_alive: _Recorder, files: list[Path]) -> None:
    connection = StowConnection(keep_alive.url, "secret", timeout=10)
    parts = [Part10(files[0], b"NEW-META", offset=8), Part10(files[1])]
    status, answer = connection.post(parts)
    body = keep_alive.bodies[0]
    assert status == 200 and int(answer) == len(body)
    assert b"NEW-META" + b"A" * 5000 in body and b"OLD-META" not in body
    assert b"B" * 70000 in body
    assert body.count(b"Content-Type: application/dicom") == 2
    connection.close()


def test_a_kept_alive_connection_serves_many_requests(keep_alive: _Recorder, files: list[Path]) -> None:
    connection = StowConnection(keep_alive.url, "secret", timeout=10)
    for _ in range(3):
        assert connection.post([Part10(files[1])])[0] == 200
    assert keep_alive.connections == 1
    connection.close()


def test_a_connection_the_server_closed_is_replaced(hanging_up: _Recorder, files: list[Path]) -> None:
    connection = StowConnection(hanging_up.url, "secret", timeout=10)
    for _ in range(3):
        assert connection.post([Part10(files[0])])[0] == 200
    assert hanging_up.connections == 3
    assert len(hanging_up.bodies) == 3
    connection.close()


def test_no_server_is_an_os_error(files: list[Path]) -> None:
    server = _Recorder(hang_up=False)
    url = server.url
    server.shutdown()
    server.server_close()
    with pytest.raises(OSError, match="refused"):
        StowConnection(url, "secret", timeout=5).post([Part10(files[0])])
