"""What the S3 adapter promises beyond the contract: multipart with checksums, write-once between
hosts, and start-up errors that say what is wrong. Against moto_server over real HTTP."""

from __future__ import annotations

import hashlib
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

import httpx
import pytest
from s3_server import S3Server, start_s3_server

from storage.blobs.s3 import S3BlobStore
from storage.errors import BlobError, BlobExists

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

MiB = 1024 * 1024


def _store(server: S3Server, tmp_path: Path, bucket: str | None = None, **options: int) -> S3BlobStore:
    return S3BlobStore(bucket or server.new_bucket(), "p", server.options(staging_dir=tmp_path / "staging", **options))


def _staged(store: S3BlobStore, data: bytes, name: str = "incoming") -> Path:
    path = store.staging_dir() / name
    path.write_bytes(data)
    return path


class TestMultipartUpload:
    def test_a_large_object_goes_up_in_parts_each_with_a_sha256_and_reads_back_unchanged(
        self, s3_server: S3Server, tmp_path: Path
    ) -> None:
        store = _store(s3_server, tmp_path, multipart_threshold=5 * MiB, part_size=5 * MiB)
        data = os.urandom(12 * MiB + 123)
        assert store.put_file("big.dcm", _staged(store, data)) == len(data)
        attributes = s3_server.client().get_object_attributes(
            Bucket=store.bucket, Key="p/big.dcm", ObjectAttributes=["ETag", "Checksum"]
        )
        assert attributes["ETag"].endswith("-3")  # a multipart ETag names its number of parts
        assert attributes["Checksum"]["ChecksumType"] == "COMPOSITE"  # the SHA-256 of the parts' SHA-256s
        assert attributes["Checksum"]["ChecksumSHA256"]
        assert hashlib.sha256(b"".join(store.open_range("big.dcm"))).digest() == hashlib.sha256(data).digest()
        assert store.read_range("big.dcm", 6 * MiB, 10) == data[6 * MiB : 6 * MiB + 10]

    def test_a_small_object_is_stored_with_its_sha256(self, s3_server: S3Server, tmp_path: Path) -> None:
        store = _store(s3_server, tmp_path)
        store.put_file("small.dcm", _staged(store, b"DICM" * 100))
        head = s3_server.client().head_object(Bucket=store.bucket, Key="p/small.dcm", ChecksumMode="ENABLED")
        assert head["ChecksumSHA256"]


class TestWriteOnceAcrossHosts:
    """The server refuses the second write (If-None-Match: *). moto checks it per request; between two
    truly simultaneous multipart completions only a real S3 makes the check atomic, so none is raced here."""

    @pytest.mark.parametrize("size", [1000, 6 * MiB], ids=["single-request", "multipart"])
    def test_a_second_host_putting_a_taken_key_gets_blob_exists_and_the_first_bytes_stay(
        self, s3_server: S3Server, tmp_path: Path, size: int
    ) -> None:
        bucket = s3_server.new_bucket()
        first, second = (
            _store(s3_server, tmp_path / str(n), bucket, multipart_threshold=5 * MiB, part_size=5 * MiB)
            for n in range(2)
        )
        first.put_file("same/key.dcm", _staged(first, b"\x01" * size))
        source = _staged(second, b"\x02" * size)
        with pytest.raises(BlobExists, match=r"same/key\.dcm"):
            second.put_file("same/key.dcm", source)
        assert source.exists()  # left for the caller, as the port says
        assert set(b"".join(second.open_range("same/key.dcm"))) == {1}


class TestRetries:
    def test_throttling_answers_are_retried_with_backoff_until_the_put_and_the_read_succeed(
        self, s3_server: S3Server, tmp_path: Path
    ) -> None:
        bucket = s3_server.new_bucket()
        with _FlakyProxy(s3_server.endpoint_url, failures=2) as proxy:
            store = S3BlobStore(bucket, "p", s3_server.options(endpoint_url=proxy.url, staging_dir=tmp_path))
            store.put_file("a.dcm", _staged(store, b"DICM" * 1000))
            proxy.failures = 2
            assert b"".join(store.open_range("a.dcm")) == b"DICM" * 1000
        assert proxy.refused == 4

    def test_a_store_that_keeps_failing_is_a_blob_error_after_the_configured_attempts(
        self, s3_server: S3Server, tmp_path: Path
    ) -> None:
        with _FlakyProxy(s3_server.endpoint_url, failures=100) as proxy:
            options = s3_server.options(endpoint_url=proxy.url, staging_dir=tmp_path, max_attempts=3)
            store = S3BlobStore(s3_server.new_bucket(), "p", options)
            source = _staged(store, b"DICM")
            with pytest.raises(BlobError, match="cannot store"):
                store.put_file("a.dcm", source)
        assert proxy.refused == 3
        assert source.exists()


class _FlakyProxy:
    """An HTTP proxy to the S3 server that answers the first `failures` requests 503 SlowDown."""

    def __init__(self, upstream: str, failures: int) -> None:
        self.failures = failures
        self.refused = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(length) if length else b""
                if proxy.failures > 0:
                    proxy.failures -= 1
                    proxy.refused += 1
                    payload = b"<Error><Code>SlowDown</Code><Message>Reduce your request rate.</Message></Error>"
                    self.send_response(503)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in {"host", "content-length"}}
                answer = httpx.request(self.command, upstream + self.path, headers=headers, content=body)
                self.send_response(answer.status_code)
                for name, value in answer.headers.items():
                    if name.lower() not in {"content-length", "transfer-encoding", "connection", "content-encoding"}:
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(answer.content)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward

            def log_message(self, *_: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> _FlakyProxy:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()


class TestStartUpErrors:
    def test_a_missing_bucket_is_named_with_what_to_do(self, s3_server: S3Server, tmp_path: Path) -> None:
        store = _store(s3_server, tmp_path, bucket="no-such-bucket")
        with pytest.raises(BlobError, match=r"the bucket 'no-such-bucket' does not exist at http://127\.0\.0\.1"):
            store.check()

    def test_an_unreachable_endpoint_is_named(self, s3_server: S3Server, tmp_path: Path) -> None:
        dead = S3Server("http://127.0.0.1:9", s3_server.process)  # the discard port: nobody answers HTTP
        store = S3BlobStore("b", "", dead.options(staging_dir=tmp_path, max_attempts=1))
        with pytest.raises(BlobError, match="is unreachable"):
            store.check()

    def test_refused_credentials_are_named(self, checking_s3_server: S3Server, tmp_path: Path) -> None:
        store = _store(checking_s3_server, tmp_path, bucket="any-bucket")
        with pytest.raises(BlobError, match="refused the credentials"):
            store.check()


@pytest.fixture(scope="module")
def checking_s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A moto_server that checks credentials from the first request (none are valid)."""
    environment = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "0"}
    server = start_s3_server(tmp_path_factory.mktemp("moto-auth") / "moto.log", environment=environment)
    yield server
    server.stop()
