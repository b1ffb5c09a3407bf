"""The bridge's only door to the archive: DICOMweb (STOW-RS, QIDO-RS, WADO-RS) and `/api`, with a token.

One `httpx.Client` per process, shared by every association thread (httpx clients are thread-safe),
so connections are kept alive and reused instead of one TCP handshake per DIMSE operation.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import httpx

from dimse_bridge.stow_connection import StowConnection
from storage.dicom.multipart import MultipartReader, MultipartWriter, multipart_boundary
from storage.dicom.store_response import (
    FAILED_SOP_SEQUENCE,
    FAILURE_REASON,
    REFERENCED_SOP_INSTANCE_UID,
    REFERENCED_SOP_SEQUENCE,
    WARNING_REASON,
)
from storage.errors import MalformedMultipart, MultipartLimitExceeded

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from pathlib import Path

    from dimse_bridge.settings import BridgeSettings
    from dimse_bridge.stow_connection import Part10

__all__ = [
    "BridgeError",
    "DicomNode",
    "DicomWebClient",
    "DicomWebError",
    "ServerUnreachable",
    "StoredInstance",
    "StowResult",
    "parse_stow_response",
    "stow_request",
]

_DICOM_JSON: Final = "application/dicom+json"
_CHUNK: Final = 1024 * 1024


class BridgeError(Exception):
    """Base of every error the bridge raises on purpose."""


class ServerUnreachable(BridgeError):
    """The server could not be reached or did not answer in time."""


class DicomWebError(BridgeError):
    """The server answered with an HTTP error status.

    Attributes:
        status_code: the HTTP status.
        detail: the start of the response body, for the log.
    """

    def __init__(self, method: str, url: str, status_code: int, detail: str) -> None:
        super().__init__(f"{method} {url} -> HTTP {status_code}: {detail}")
        self.status_code = status_code
        self.detail = detail


@dataclass(frozen=True, slots=True)
class StoredInstance:
    """The server's verdict on one instance of a STOW-RS request.

    Attributes:
        stored: True when listed in ReferencedSOPSequence.
        reason: WarningReason (stored) or FailureReason (not stored); None when none was given.
    """

    stored: bool
    reason: int | None


@dataclass(frozen=True, slots=True)
class StowResult:
    """A whole STOW-RS response: the HTTP status and the verdict per SOP Instance UID."""

    http_status: int
    instances: Mapping[str, StoredInstance]


@dataclass(frozen=True, slots=True)
class DicomNode:
    """One remote DICOM node of the AE registry, as `GET /api/dicom-nodes` lists it."""

    ae_title: str
    host: str
    port: int
    allow_store: bool
    allow_find: bool
    allow_move: bool


class DicomWebClient:
    """Blocking DICOMweb + API client for the association threads.

    Raises (from every method):
        ServerUnreachable: transport failure or timeout.
        DicomWebError: the server answered with a 4xx/5xx status (STOW-RS 409 excepted: it carries
            per-instance failure reasons and is returned as a `StowResult`).
    """

    def __init__(self, settings: BridgeSettings, transport: httpx.BaseTransport | None = None) -> None:
        """Open the connection pool (connections are made on first use)."""
        self._base = settings.server_url
        self._page_size = settings.qido_page_size
        self._http = httpx.Client(
            base_url=settings.server_url,
            headers={"Authorization": f"Bearer {settings.token}"},
            timeout=settings.http_timeout,
            limits=httpx.Limits(max_connections=settings.max_associations + settings.stow_concurrency),
            # Nagle would hold each body write until the previous one is acknowledged, and the
            # server delays its ACKs: ~40 ms per request. Send at once instead.
            transport=transport or httpx.HTTPTransport(socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]),
        )

        self._settings = settings
        # STOW-RS goes over plain http.client connections, one per sending thread (stow_connection.py).
        self._stow = threading.local()
        self._stow_connections: list[StowConnection] = []
        self._stow_lock = threading.Lock()

    def close(self) -> None:
        """Close every pooled connection."""
        self._http.close()
        with self._stow_lock:
            for connection in self._stow_connections:
                connection.close()

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        content: Iterator[bytes] | None = None,
    ) -> httpx.Response:
        try:
            response = self._http.request(method, path, params=params, headers=headers, content=content)
        except httpx.TransportError as exc:
            raise ServerUnreachable(f"{method} {self._base}{path}: {exc!r}") from exc
        return response

    @staticmethod
    def _raise_for_status(response: httpx.Response, allowed: tuple[int, ...] = ()) -> None:
        if response.status_code >= 400 and response.status_code not in allowed:
            raise DicomWebError(
                response.request.method,
                str(response.request.url),
                response.status_code,
                response.text[:500],
            )

    def store_instances(self, instances: Sequence[Part10]) -> StowResult:
        """STOW-RS the Part-10 instances in one `multipart/related` request, streamed from disk.

        Raises:
            ServerUnreachable: see the class.
            DicomWebError: any error status but 409 (which lists per-instance failures).
        """
        url = f"{self._base}/dicomweb/studies"
        try:
            status, body = self._stow_connection().post(instances)
        except (OSError, http.client.HTTPException) as exc:
            if isinstance(exc, FileNotFoundError):
                raise  # a spooled file vanished: the bridge's fault, not the server's
            raise ServerUnreachable(f"POST {url}: {exc!r}") from exc
        # PS3.18 §10.5.3: 409 means none stored, and its body still says why for each instance.
        if status >= 400 and status != 409:
            raise DicomWebError("POST", url, status, body[:500].decode(errors="replace"))
        return StowResult(status, parse_stow_response(body))

    def _stow_connection(self) -> StowConnection:
        connection: StowConnection | None = getattr(self._stow, "connection", None)
        if connection is None:
            settings = self._settings
            connection = StowConnection(settings.server_url, settings.token, settings.http_timeout)
            self._stow.connection = connection
            with self._stow_lock:
                self._stow_connections.append(connection)
        return connection

    def search(self, path: str, params: Mapping[str, str]) -> Iterator[dict[str, Any]]:
        """QIDO-RS `/dicomweb{path}`, paging with limit/offset; yields DICOM JSON objects.

        Raises:
            ServerUnreachable: see the class.
            DicomWebError: see the class (400 for a query the server cannot understand).
        """
        offset = 0
        while True:
            page_params = {**params, "limit": str(self._page_size), "offset": str(offset)}
            response = self._request("GET", "/dicomweb" + path, params=page_params, headers={"Accept": _DICOM_JSON})
            self._raise_for_status(response)
            items: list[dict[str, Any]] = response.json() if response.content else []
            yield from items
            # PS3.18 §8.3.4.4: a server that cut the answer short says so in a Warning header, and
            # may use a smaller page than asked; a short page without a warning is the last one.
            truncated = "warning" in response.headers
            if not items or (len(items) < self._page_size and not truncated):
                return
            offset += len(items)

    @contextlib.contextmanager
    def retrieve(self, path: str, directory: Path, *, transfer_syntax: str | None = None) -> Iterator[Iterator[Path]]:
        """WADO-RS `/dicomweb{path}` as stored (`transfer-syntax=*`), or transcoded to `transfer_syntax`.

        Each part is spooled to a file.

        Use as a context manager; the inner iterator yields one temporary Part-10 file per part,
        in `directory`, which the caller deletes. Only one part is held at a time.

        Raises:
            ServerUnreachable: see the class.
            DicomWebError: see the class (404: nothing to retrieve).
        """
        headers = {"Accept": f'multipart/related; type="application/dicom"; transfer-syntax={transfer_syntax or "*"}'}
        try:
            with self._http.stream("GET", "/dicomweb" + path, headers=headers) as response:
                if response.status_code >= 400:
                    response.read()
                self._raise_for_status(response)
                yield _spool_parts(response, directory)
        except httpx.TransportError as exc:
            raise ServerUnreachable(f"GET {self._base}/dicomweb{path}: {exc!r}") from exc

    def post_json(self, path: str, payload: Mapping[str, object]) -> Any:
        """POST a JSON body to the server's `path` (under /api); the decoded JSON answer.

        Raises:
            ServerUnreachable: see the class.
            DicomWebError: see the class.
        """
        try:
            response = self._http.post(path, json=dict(payload), headers={"Accept": "application/json"})
        except httpx.TransportError as exc:
            raise ServerUnreachable(f"POST {self._base}{path}: {exc!r}") from exc
        self._raise_for_status(response)
        return response.json() if response.content else None

    def list_nodes(self) -> list[DicomNode]:
        """The AE registry (`GET /api/dicom-nodes`).

        Raises:
            ServerUnreachable: see the class.
            DicomWebError: see the class (403: the token is not an admin or service token).
        """
        response = self._request("GET", "/api/dicom-nodes", headers={"Accept": "application/json"})
        self._raise_for_status(response)
        return [
            DicomNode(
                ae_title=str(item["ae_title"]).strip(),
                host=str(item["host"]),
                port=int(item["port"]),
                allow_store=bool(item.get("allow_store", True)),
                allow_find=bool(item.get("allow_find", True)),
                allow_move=bool(item.get("allow_move", True)),
            )
            for item in response.json()
        ]


def stow_request(files: Sequence[Path]) -> tuple[dict[str, str], Iterator[bytes]]:
    """The headers and the streamed body of a STOW-RS request carrying the Part-10 files."""
    writer = MultipartWriter()
    heads = [writer.part_header("application/dicom") for _ in files]
    tail = writer.closing_delimiter()
    length = sum(len(h) + p.stat().st_size for h, p in zip(heads, files, strict=True)) + len(tail)

    def body() -> Iterator[bytes]:
        for head, path in zip(heads, files, strict=True):
            yield head
            with path.open("rb") as fp:
                while chunk := fp.read(_CHUNK):
                    yield chunk
        yield tail

    headers = {
        "Content-Type": writer.content_type("application/dicom"),
        # A known length lets the server see a cut body for what it is (no chunked encoding).
        "Content-Length": str(length),
        "Accept": _DICOM_JSON,
    }
    return headers, body()


def parse_stow_response(content: bytes) -> dict[str, StoredInstance]:
    """The verdict per SOP Instance UID of a STOW-RS response body (PS3.18 §10.5.3)."""
    if not content:
        return {}
    try:
        body = json.loads(content)
    except ValueError:
        return {}  # not DICOM JSON: no instance is confirmed, so none counts as stored
    verdicts: dict[str, StoredInstance] = {}
    for item in _items(body, FAILED_SOP_SEQUENCE):
        uid = _first(item, REFERENCED_SOP_INSTANCE_UID)
        if isinstance(uid, str):
            reason = _first(item, FAILURE_REASON)
            verdicts[uid] = StoredInstance(stored=False, reason=reason if isinstance(reason, int) else None)
    for item in _items(body, REFERENCED_SOP_SEQUENCE):
        uid = _first(item, REFERENCED_SOP_INSTANCE_UID)
        if isinstance(uid, str):
            reason = _first(item, WARNING_REASON)
            verdicts[uid] = StoredInstance(stored=True, reason=reason if isinstance(reason, int) else None)
    return verdicts


def _items(body: object, tag: str) -> list[dict[str, Any]]:
    element = body.get(tag) if isinstance(body, dict) else None
    value = element.get("Value") if isinstance(element, dict) else None
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _first(item: dict[str, Any], tag: str) -> object:
    element = item.get(tag)
    value = element.get("Value") if isinstance(element, dict) else None
    return value[0] if isinstance(value, list) and value else None


def _spool_parts(response: httpx.Response, directory: Path) -> Iterator[Path]:
    """Yield each body part of a streamed multipart response as a file, one part in hand at a time.

    Raises:
        BridgeError: the response is not a well-formed multipart body (cut short included).
    """
    ready: list[Path] = []
    try:
        boundary = multipart_boundary(response.headers.get("content-type", ""))
        with MultipartReader(boundary, directory, digest=False) as reader:
            for chunk in response.iter_bytes():
                ready.extend(part.path for part in reader.feed(chunk))
                while ready:
                    yield ready.pop(0)
            reader.finish()
    except (MalformedMultipart, MultipartLimitExceeded) as exc:
        raise BridgeError(f"WADO-RS {response.request.url}: {exc}") from exc
    finally:
        # Parts completed but not handed over (the caller stopped early) are not the caller's to delete.
        for path in ready:
            path.unlink(missing_ok=True)
