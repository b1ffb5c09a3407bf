"""WADO-RS parts fetched ahead of the C-STORE sub-operations: order, errors, early stop, cleanup."""

from __future__ import annotations

import contextlib
import threading
from typing import TYPE_CHECKING

import httpx
import pytest
from dicomdata import sample_study, uids_of

from dimse_bridge.client import DicomWebClient, DicomWebError
from dimse_bridge.prefetch import fetch_parts
from dimse_bridge.settings import BridgeSettings

if TYPE_CHECKING:
    from pathlib import Path

_BOUNDARY = "PrefetchBoundary"
_INSTANCES = sample_study(instances=6)[1]


def _multipart(parts: list[bytes]) -> httpx.Response:
    body = b"".join(
        f"--{_BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode() + part + b"\r\n" for part in parts
    )
    content_type = f'multipart/related; type="application/dicom"; boundary="{_BOUNDARY}"'
    return httpx.Response(200, content=body + f"--{_BOUNDARY}--\r\n".encode(), headers={"content-type": content_type})


def _client(bodies: dict[str, httpx.Response]) -> DicomWebClient:
    def handler(request: httpx.Request) -> httpx.Response:
        return bodies.get(request.url.path) or httpx.Response(404, text="no such study")

    settings = BridgeSettings(server_url="http://archive.test", token="secret")
    return DicomWebClient(settings, transport=httpx.MockTransport(handler))


def _prefetch_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "wado-prefetch"]


class TestFetchParts:
    def test_every_part_of_every_resource_comes_in_order_with_its_file_meta(self, tmp_path: Path) -> None:
        a1, a2, a3, b1 = _INSTANCES[:4]
        client = _client({"/dicomweb/studies/1": _multipart([a1, a2, a3]), "/dicomweb/studies/2": _multipart([b1])})
        seen = []
        with contextlib.closing(fetch_parts(client, ["/studies/1", "/studies/2"], tmp_path, depth=2)) as fetched:
            for item in fetched:
                assert item.path is not None
                assert item.meta is not None
                assert item.meta.MediaStorageSOPInstanceUID == uids_of(item.path.read_bytes())[2]
                seen.append((item.wado_path, item.path.read_bytes()))
                item.path.unlink()
        assert seen == [("/studies/1", a1), ("/studies/1", a2), ("/studies/1", a3), ("/studies/2", b1)]
        assert list(tmp_path.iterdir()) == []

    def test_a_part_that_is_no_dicom_file_is_reported_and_the_next_part_comes(self, tmp_path: Path) -> None:
        client = _client({"/dicomweb/studies/1": _multipart([b"not DICOM", _INSTANCES[0]])})
        with contextlib.closing(fetch_parts(client, ["/studies/1"], tmp_path, depth=2)) as fetched:
            first, second = list(fetched)
        assert first.path is None
        assert "not a DICOM file" in str(first.error)
        assert second.path is not None
        assert second.path.read_bytes() == _INSTANCES[0]
        second.path.unlink()
        assert list(tmp_path.iterdir()) == []

    def test_a_failed_resource_is_reported_and_the_next_one_fetched(self, tmp_path: Path) -> None:
        client = _client({"/dicomweb/studies/2": _multipart([_INSTANCES[0]])})
        with contextlib.closing(fetch_parts(client, ["/studies/1", "/studies/2"], tmp_path, depth=2)) as fetched:
            items = list(fetched)
        assert isinstance(items[0].error, DicomWebError)
        assert items[0].error.status_code == 404
        assert (items[1].wado_path, items[1].path is not None) == ("/studies/2", True)

    def test_stopping_early_deletes_what_was_fetched_ahead_and_ends_the_fetcher(self, tmp_path: Path) -> None:
        client = _client({"/dicomweb/studies/1": _multipart(_INSTANCES)})
        fetched = fetch_parts(client, ["/studies/1"], tmp_path, depth=2)
        first = next(fetched)
        assert first.path is not None
        first.path.unlink()
        fetched.close()
        assert list(tmp_path.iterdir()) == []
        assert _prefetch_threads() == []

    def test_an_unexpected_error_of_the_fetcher_reaches_the_consumer(self, tmp_path: Path) -> None:
        def handler(request: httpx.Request) -> httpx.Response:
            raise RuntimeError("bug in a transport")

        settings = BridgeSettings(server_url="http://archive.test", token="secret")
        client = DicomWebClient(settings, transport=httpx.MockTransport(handler))
        with (
            pytest.raises(RuntimeError, match="bug in a transport"),
            contextlib.closing(fetch_parts(client, ["/studies/1"], tmp_path, depth=2)) as fetched,
        ):
            list(fetched)
        assert _prefetch_threads() == []
