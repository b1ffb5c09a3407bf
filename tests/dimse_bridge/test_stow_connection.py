"""The bridge's STOW-RS connection: the whole body arrives, kept-alive connections are reused, and one
the server closed while idle is replaced without the caller noticing."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from local_http import Answer, LocalHttpServer

from dimse_bridge.stow_connection import Part10, StowConnection

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


def _length(path: str, headers: dict[str, str], body: bytes) -> Answer:
    return 200, "text/plain", str(len(body)).encode()


@pytest.fixture
def files(tmp_path: Path) -> list[Path]:
    paths = [tmp_path / "a.dcm", tmp_path / "b.dcm"]
    paths[0].write_bytes(b"OLD-META" + b"A" * 5000)
    paths[1].write_bytes(b"B" * 70000)
    return paths


def _server(hang_up: bool) -> Iterator[LocalHttpServer]:
    server = LocalHttpServer(_length, hang_up=hang_up)
    yield server
    server.stop()


@pytest.fixture
def keep_alive() -> Iterator[LocalHttpServer]:
    yield from _server(hang_up=False)


@pytest.fixture
def hanging_up() -> Iterator[LocalHttpServer]:
    yield from _server(hang_up=True)


def test_heads_and_files_from_their_offsets_make_the_body(keep_alive: LocalHttpServer, files: list[Path]) -> None:
    connection = StowConnection(keep_alive.url, "secret", timeout=10)
    parts = [Part10(files[0], b"NEW-META", offset=8), Part10(files[1])]
    status, answer = connection.post(parts)
    body = keep_alive.bodies[0]
    assert status == 200 and int(answer) == len(body)
    assert b"NEW-META" + b"A" * 5000 in body and b"OLD-META" not in body
    assert b"B" * 70000 in body
    assert body.count(b"Content-Type: application/dicom") == 2
    connection.close()


def test_a_kept_alive_connection_serves_many_requests(keep_alive: LocalHttpServer, files: list[Path]) -> None:
    connection = StowConnection(keep_alive.url, "secret", timeout=10)
    for _ in range(3):
        assert connection.post([Part10(files[1])])[0] == 200
    assert keep_alive.connections == 1
    connection.close()


def test_a_connection_the_server_closed_is_replaced(hanging_up: LocalHttpServer, files: list[Path]) -> None:
    connection = StowConnection(hanging_up.url, "secret", timeout=10)
    for _ in range(3):
        assert connection.post([Part10(files[0])])[0] == 200
    assert hanging_up.connections == 3
    assert len(hanging_up.bodies) == 3
    connection.close()


def test_no_server_is_an_os_error(files: list[Path]) -> None:
    server = LocalHttpServer(_length)
    url = server.url
    server.stop()
    with pytest.raises(OSError, match="refused"):
        StowConnection(url, "secret", timeout=5).post([Part10(files[0])])
