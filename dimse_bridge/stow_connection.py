"""A kept-alive HTTP/1.1 connection that posts STOW-RS bodies straight from the spooled files.

Every C-STORE the bridge acknowledges waits for one STOW-RS answer, so the cost of that request is
paid once per instance on the association's critical path. httpx spends about 1.5 ms of CPU per
request on its layers (request model, auth flow, cookies, httpcore); the standard library's
`http.client` spends a fraction of that, and `socket.sendfile` hands the file's bytes to the
kernel without copying them through Python. Each sender thread owns one connection (http.client
connections are not shared between threads); the rest of the bridge keeps using httpx.
"""

from __future__ import annotations

import http.client
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit

from storage.dicom.multipart import MultipartWriter

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["Part10", "StowConnection"]

_STUDIES: Final = "/dicomweb/studies"
# What a kept-alive connection the server has meanwhile closed raises on its next use.
_STALE: Final = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


@dataclass(frozen=True, slots=True)
class Part10:
    """A Part-10 instance to send: `head`, then the bytes of the file at `path` from `offset` on.

    With an empty head and offset 0 it is the file as it is; the bridge's C-STORE SCP puts a
    re-written File Meta in `head` and skips the file's own (`dimse_bridge.source_ae`).
    """

    path: Path
    head: bytes = b""
    offset: int = 0

    def size(self) -> int:
        """The instance's length in bytes."""
        return len(self.head) + self.path.stat().st_size - self.offset


class StowConnection:
    """POST STOW-RS requests over one kept-alive connection (reopened when the server closed it).

    Raises (from `post`):
        OSError: the server cannot be reached, timed out, or a file cannot be read.
        http.client.HTTPException: the server's answer is not HTTP.
    """

    def __init__(self, server_url: str, token: str, timeout: float) -> None:
        """Remember where to connect; the connection opens on the first request."""
        url = urlsplit(server_url)
        connection_class = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
        self._connection = connection_class(url.hostname or "localhost", url.port, timeout=timeout)
        self._path = url.path.rstrip("/") + _STUDIES
        self._authorization = f"Bearer {token}"

    def close(self) -> None:
        """Close the connection."""
        self._connection.close()

    def post(self, instances: Sequence[Part10]) -> tuple[int, bytes]:
        """STOW-RS `instances` in one `multipart/related` request; the status and body of the answer.

        A kept-alive connection may have been closed by the server while idle: the request is then
        sent once more on a new connection. That is safe because storing identical bytes again is a
        success that changes nothing (README, re-send policy).
        """
        reused = self._connection.sock is not None
        try:
            try:
                return self._exchange(instances)
            except _STALE:
                if not reused:
                    raise
                self._connection.close()
                return self._exchange(instances)
        except BaseException:
            self._connection.close()  # in an unknown state: the next request starts afresh
            raise

    def _exchange(self, instances: Sequence[Part10]) -> tuple[int, bytes]:
        connection = self._connection
        if connection.sock is None:
            connection.connect()
            # Without Nagle's delay the small head and tail writes leave at once.
            _socket(connection).setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        writer = MultipartWriter()
        heads = [writer.part_header("application/dicom") for _ in instances]
        tail = writer.closing_delimiter()
        length = sum(len(head) + part.size() for head, part in zip(heads, instances, strict=True)) + len(tail)
        connection.putrequest("POST", self._path, skip_accept_encoding=True)
        connection.putheader("Authorization", self._authorization)
        connection.putheader("Content-Type", writer.content_type("application/dicom"))
        # A known length lets the server see a cut body for what it is (no chunked encoding).
        connection.putheader("Content-Length", str(length))
        connection.putheader("Accept", "application/dicom+json")
        connection.endheaders()
        sock = _socket(connection)
        for head, part in zip(heads, instances, strict=True):
            sock.sendall(head + part.head)
            with part.path.open("rb") as file:
                sock.sendfile(file, part.offset)
        sock.sendall(tail)
        response = connection.getresponse()
        body = response.read()
        if response.will_close:
            connection.close()
        return response.status, body


def _socket(connection: http.client.HTTPConnection) -> socket.socket:
    sock = connection.sock
    if not isinstance(sock, socket.socket):
        raise http.client.NotConnected("the connection to the server closed")
    return sock
