"""The BlobStore on an S3-compatible object store (AWS S3, MinIO, Ceph RGW), through boto3.

- Write-once: every PutObject and CompleteMultipartUpload carries `If-None-Match: *` (S3
  conditional writes), so a taken key is refused by the server itself, even between hosts.
- Objects up to the multipart threshold go up in one PutObject, larger ones as a multipart upload
  read from the file part by part (s3transfer), so a 4 GB instance is never in memory; every
  request or part carries a SHA-256 the server verifies before it stores anything.
- Reads are ranged GETs streamed in CHUNK_SIZE pieces; a whole-object read asks for the stored
  checksum, which botocore verifies as the bytes arrive (single-part objects: a multipart object's
  checksum is one of its parts' checksums, which were verified at upload).
- Throttling and transient errors are retried with exponential backoff and jitter (botocore's
  "standard" retry mode).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import boto3
from boto3.s3.transfer import TransferConfig, create_transfer_manager
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from storage.blobs.base import CHUNK_SIZE
from storage.blobs.keys import check_key, check_prefix, check_range
from storage.errors import BlobError, BlobExists, BlobNotFound

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["S3BlobStore", "S3Options"]

_MiB: Final = 1024 * 1024
# Error codes S3 answers with (https://docs.aws.amazon.com/AmazonS3/latest/API/ErrorResponses.html).
_NOT_FOUND: Final = frozenset({"NoSuchKey", "404", "NotFound"})
_TAKEN: Final = frozenset({"PreconditionFailed", "412", "ConditionalRequestConflict"})
_BAD_CREDENTIALS: Final = frozenset(
    {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403", "InvalidToken", "ExpiredToken"}
)
_RANGE_PAST_END: Final = frozenset({"InvalidRange", "416"})


@dataclass(frozen=True, slots=True)
class S3Options:
    """How to reach the object store; None means boto3's own default (environment, profile, role).

    Attributes:
        endpoint_url: e.g. http://minio:9000; None for AWS.
        region: e.g. eu-west-1.
        access_key_id, secret_access_key: static credentials; None for boto3's credential chain.
        path_style: address buckets as http://host/bucket (MinIO, Ceph) rather than bucket.host.
        max_attempts: tries per request, retries included (botocore "standard" mode backs off).
        multipart_threshold, part_size: objects from this size go up in parts of part_size bytes.
        staging_dir: local folder for files about to be put (spooled STOW parts).
    """

    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    path_style: bool = False
    max_attempts: int = 8
    multipart_threshold: int = 64 * _MiB
    part_size: int = 16 * _MiB
    staging_dir: Path | None = None


class S3BlobStore:
    """Blobs as objects `<prefix>/<key>` in one bucket. Methods are blocking and thread-safe."""

    def __init__(self, bucket: str, prefix: str = "", options: S3Options | None = None) -> None:
        """Use `bucket`, keys under `prefix`; no request is made until the first call (see `check`)."""
        options = options or S3Options()
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._staging = options.staging_dir or Path(tempfile.gettempdir()) / "webpacs-s3-staging"
        config = Config(
            region_name=options.region,
            retries={"total_max_attempts": options.max_attempts, "mode": "standard"},
            s3={"addressing_style": "path" if options.path_style else "auto"},
            connect_timeout=10,
            read_timeout=60,
            max_pool_connections=64,  # anyio's 40 worker threads, plus the upload threads
            # Only when asked: the SHA-256 of uploads is requested explicitly below.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        self._client: Any = boto3.session.Session().client(
            "s3",
            endpoint_url=options.endpoint_url,
            aws_access_key_id=options.access_key_id,
            aws_secret_access_key=options.secret_access_key,
            config=config,
        )
        # Write-once enforced by the server: the transfer manager cannot pass If-None-Match itself.
        for operation in ("PutObject", "CompleteMultipartUpload"):
            self._client.meta.events.register(f"before-parameter-build.s3.{operation}", _if_none_match)
        self._multipart_threshold = options.multipart_threshold
        self._transfer = TransferConfig(
            multipart_threshold=options.multipart_threshold,
            multipart_chunksize=options.part_size,
            max_concurrency=4,
            use_threads=True,
        )

    def __repr__(self) -> str:
        """Name the bucket and prefix, for logs."""
        return f"S3BlobStore('s3://{self.bucket}/{self.prefix}')"

    def staging_dir(self) -> Path:
        """A local folder for files about to be put (uploads copy them, then remove them).

        Raises:
            BlobError: the folder cannot be created.
        """
        try:
            self._staging.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BlobError(f"cannot create the staging folder {self._staging}: {exc}") from exc
        return self._staging

    def put_file(self, key: str, source: Path) -> int:
        """Upload the file at `source` under `key` (multipart when large), then remove the file.

        Raises:
            BlobExists: `key` is taken (blobs are write-once).
            InvalidBlobKey: `key` is malformed.
            BlobError: the source is missing or the store failed.
        """
        name = self._name(key)
        try:
            size = source.stat().st_size
        except OSError as exc:
            raise BlobError(f"cannot store {source} under blob key {key!r}: {exc}") from exc
        try:
            # SHA-256 per request (or per part): the server refuses bytes that do not match.
            if size < self._multipart_threshold:
                # One request; a transfer manager (threads, futures) costs more than the upload here.
                with source.open("rb") as body:
                    self._client.put_object(Bucket=self.bucket, Key=name, Body=body, ChecksumAlgorithm="SHA256")
            else:
                with create_transfer_manager(self._client, self._transfer) as manager:
                    manager.upload(str(source), self.bucket, name, extra_args={"ChecksumAlgorithm": "SHA256"}).result()
        except ClientError as exc:
            if _code(exc) in _TAKEN:
                raise BlobExists(f"a blob is already stored under key {key!r}; blobs are write-once") from exc
            raise self._failed(f"cannot store {source} under blob key {key!r}", exc) from exc
        except (BotoCoreError, OSError) as exc:
            raise BlobError(f"cannot store {source} under blob key {key!r}: {exc}") from exc
        source.unlink(missing_ok=True)
        return size

    def open_range(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Stream bytes [start, end) of the blob (end=None: to its end) in chunks of CHUNK_SIZE at most.

        Raises:
            BlobNotFound: nothing is stored under `key` (raised on the first next()).
            InvalidBlobKey: `key` is malformed (raised on the first next()).
            ValueError: start is negative or end is before start.
        """
        check_range(start, None if end is None else end - start)
        body = self._get(key, start, end)
        if body is None:
            return
        try:
            yield from body.iter_chunks(CHUNK_SIZE)
        except (BotoCoreError, ClientError) as exc:  # a checksum mismatch or a broken connection
            raise BlobError(f"reading the blob under key {key!r} failed: {exc}") from exc
        finally:
            body.close()

    def read_range(self, key: str, start: int, length: int) -> bytes:
        """Return `length` bytes from `start` (fewer if the blob ends first), with one ranged GET.

        Raises:
            BlobNotFound: nothing is stored under `key`.
            InvalidBlobKey: `key` is malformed.
            ValueError: start or length is negative.
        """
        check_range(start, length)
        body = self._get(key, start, start + length)
        if body is None:
            return b""
        try:
            data: bytes = body.read()
        except (BotoCoreError, ClientError) as exc:
            raise BlobError(f"reading the blob under key {key!r} failed: {exc}") from exc
        finally:
            body.close()
        return data

    def local_path(self, key: str) -> None:
        """None: objects have no local file (the archive copies one to staging when a codec needs it)."""
        return None

    def size(self, key: str) -> int:
        """Size in bytes (a HEAD request).

        Raises:
            BlobNotFound: nothing is stored under `key`.
            InvalidBlobKey: `key` is malformed.
        """
        name = self._name(key)
        try:
            head = self._client.head_object(Bucket=self.bucket, Key=name)
        except ClientError as exc:
            if _code(exc) in _NOT_FOUND:
                raise BlobNotFound(f"no blob under key {key!r}") from exc
            raise self._failed(f"cannot read the size of blob {key!r}", exc) from exc
        except BotoCoreError as exc:
            raise BlobError(f"cannot read the size of blob {key!r}: {exc}") from exc
        size: int = head["ContentLength"]
        return size

    def delete(self, key: str) -> None:
        """Remove the object; S3 answers a delete of a missing key with success, as the port wants.

        Raises:
            InvalidBlobKey: `key` is malformed.
            BlobError: the store failed.
        """
        name = self._name(key)
        try:
            self._client.delete_object(Bucket=self.bucket, Key=name)
        except ClientError as exc:
            raise self._failed(f"cannot delete the blob under key {key!r}", exc) from exc
        except BotoCoreError as exc:
            raise BlobError(f"cannot delete the blob under key {key!r}: {exc}") from exc

    def keys(self, prefix: str = "") -> Iterator[str]:
        """Every stored key starting with `prefix`, in key order (ListObjectsV2 pages).

        Raises:
            InvalidBlobKey: `prefix` could not start any valid key.
            BlobError: the store failed.
        """
        check_prefix(prefix)
        base = f"{self.prefix}/" if self.prefix else ""
        pages = self._client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=base + prefix)
        try:
            for page in pages:
                for item in page.get("Contents", ()):
                    yield item["Key"][len(base) :]
        except ClientError as exc:
            raise self._failed("cannot list the blobs", exc) from exc
        except BotoCoreError as exc:
            raise BlobError(f"cannot list the blobs: {exc}") from exc

    def check(self) -> None:
        """Raise BlobError when the bucket is missing or the credentials are refused (HEAD bucket).

        Raises:
            BlobError: naming the bucket, the endpoint and what to fix.
        """
        try:
            self._client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if _code(exc) in {"404", "NoSuchBucket", "NotFound"}:
                raise BlobError(
                    f"the bucket {self.bucket!r} does not exist at {self._endpoint()}: create it, or fix "
                    "WEBPACS_BLOB_URL / WEBPACS_S3_ENDPOINT_URL"
                ) from exc
            raise self._failed(f"the bucket {self.bucket!r} at {self._endpoint()} cannot be used", exc) from exc
        except BotoCoreError as exc:
            raise BlobError(f"the object store at {self._endpoint()} is unreachable: {exc}") from exc

    def _name(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _get(self, key: str, start: int, end: int | None) -> Any:
        """The streaming body of a (ranged) GET; None when the range is empty or starts past the end.

        Raises:
            BlobNotFound: nothing is stored under `key`.
        """
        name = self._name(key)
        if end is not None and end <= start:
            self.size(key)  # an empty range of a missing blob is still a missing blob
            return None
        arguments: dict[str, Any] = {"Bucket": self.bucket, "Key": name}
        if start == 0 and end is None:
            arguments["ChecksumMode"] = "ENABLED"  # botocore checks the stored SHA-256 while reading
        else:
            # RFC 9110 §14.1.2: last-byte-pos is inclusive.
            arguments["Range"] = f"bytes={start}-" if end is None else f"bytes={start}-{end - 1}"
        try:
            return self._client.get_object(**arguments)["Body"]
        except ClientError as exc:
            code = _code(exc)
            if code in _NOT_FOUND:
                raise BlobNotFound(f"no blob under key {key!r}") from exc
            if code in _RANGE_PAST_END:
                return None
            raise self._failed(f"cannot read the blob under key {key!r}", exc) from exc
        except BotoCoreError as exc:
            raise BlobError(f"cannot read the blob under key {key!r}: {exc}") from exc

    def _endpoint(self) -> str:
        endpoint: str = self._client.meta.endpoint_url
        return endpoint

    def _failed(self, what: str, exc: ClientError) -> BlobError:
        if _code(exc) in _BAD_CREDENTIALS:
            return BlobError(
                f"{what}: the object store at {self._endpoint()} refused the credentials ({_code(exc)}); "
                "check WEBPACS_S3_ACCESS_KEY_ID / WEBPACS_S3_SECRET_ACCESS_KEY and the bucket policy"
            )
        return BlobError(f"{what}: {exc}")


def _if_none_match(params: dict[str, Any], **_: Any) -> None:
    params["IfNoneMatch"] = "*"


def _code(exc: ClientError) -> str:
    code: str = exc.response.get("Error", {}).get("Code", "")
    return code
