"""Streaming multipart/related (RFC 2387) for STOW-RS requests and WADO-RS responses (PS3.18 §8.6.1.2).

`MultipartReader` is push-style: the async edge feeds it each received chunk and gets back the parts
that chunk completed, each spooled to its own file, so the first instance can be stored while the
next is still arriving and no part is ever held in memory. `MultipartWriter` makes the delimiters and
part headers of a response whose bodies the edge streams from the blob store.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import IO, TYPE_CHECKING, Final

from python_multipart import MultipartParser
from python_multipart.exceptions import MultipartParseError

from storage.dicom.media_types import parse_content_type
from storage.errors import InvalidMediaType, MalformedMultipart, MultipartLimitExceeded

if TYPE_CHECKING:
    from types import TracebackType
    from typing import Self

__all__ = [
    "DEFAULT_MAX_PARTS",
    "DEFAULT_MAX_PART_SIZE",
    "MultipartReader",
    "MultipartWriter",
    "Part",
    "multipart_boundary",
]

DEFAULT_MAX_PART_SIZE: Final = 8 * 1024**3  # a whole-slide or long cine instance, well beyond 2 GB
DEFAULT_MAX_PARTS: Final = 100_000

# RFC 2046 §5.1.1 lets a preamble precede the first delimiter; more than this is no preamble but a
# body with the wrong boundary, which we refuse instead of scanning gigabytes for it.
_MAX_PREAMBLE: Final = 64 * 1024
_MAX_BOUNDARY: Final = 256  # RFC 2046 says 70; python_multipart allows 256 for clients that exceed it
_MAX_HEADER_COUNT: Final = 32
_MAX_HEADER_SIZE: Final = 8192
_HEADER_VALUE_FORBIDDEN = re.compile(r"[\r\n\x00]")


@dataclass(frozen=True, slots=True)
class Part:
    """One body part, spooled to a file with its bytes exactly as received.

    Attributes:
        number: 1-based position in the body, for per-part error reports.
        headers: the part's header fields, names lower-cased (repeated fields joined by ", ").
        content_type: the media type of the part's Content-Type, lower-cased, without parameters
            (the transfer-syntax parameter stays in `headers`); None when absent or unparsable, in
            which case RFC 2387 points to the `type` parameter of the multipart/related body.
        path: the spooled file, owned by the caller (move it into the blob store or delete it).
            An incomplete part's file has already been removed.
        size: bytes in the part body.
        sha256: hex SHA-256 of the part body; empty when the reader was told not to compute it.
        complete: the part's closing delimiter arrived; an incomplete part must never be stored.
    """

    number: int
    headers: Mapping[str, str]
    content_type: str | None
    path: Path
    size: int
    sha256: str
    complete: bool


def multipart_boundary(content_type: str) -> str:
    """Return the boundary parameter of a multipart Content-Type value.

    Raises:
        MalformedMultipart: the value is not a multipart media type or has no usable boundary.
    """
    try:
        media_type, params = parse_content_type(content_type)
    except InvalidMediaType as exc:
        raise MalformedMultipart(str(exc)) from exc
    if not media_type.startswith("multipart/"):
        raise MalformedMultipart(
            f"Content-Type {content_type!r} is not multipart: STOW-RS takes "
            'multipart/related; type="application/dicom"; boundary=...'
        )
    boundary = params.get("boundary")
    if not boundary:
        raise MalformedMultipart(
            f"Content-Type {content_type!r} has no boundary parameter: add boundary=<the delimiter string>"
        )
    _check_boundary(boundary)
    return boundary


class MultipartReader:
    """Push parser that spools each part of a multipart body to a file in `spool_dir`.

    Use `feed` for each chunk received, then `finish` at the end of the body, and `close` in all
    cases (it removes the file of a part still being received). Memory stays bounded by the chunk size.

    Example:
        with MultipartReader(boundary, spool_dir) as reader:
            for chunk in chunks:
                for part in reader.feed(chunk):
                    store(part)
            reader.finish()
    """

    def __init__(
        self,
        boundary: str,
        spool_dir: Path,
        *,
        max_part_size: int = DEFAULT_MAX_PART_SIZE,
        max_parts: int = DEFAULT_MAX_PARTS,
        digest: bool = True,
    ) -> None:
        """Prepare to read a body delimited by `boundary`; `digest=False` skips each part's SHA-256.

        Raises:
            MalformedMultipart: the boundary is empty, too long or not ASCII.
        """
        _check_boundary(boundary)
        self._spool_dir = spool_dir
        self._max_part_size = max_part_size
        self._max_parts = max_parts
        self._digest = digest
        self._dash_boundary = b"--" + boundary.encode("ascii")
        self._parser = MultipartParser(
            self._dash_boundary[2:],
            {
                "on_part_begin": self._on_part_begin,
                "on_header_field": self._on_header_field,
                "on_header_value": self._on_header_value,
                "on_header_end": self._on_header_end,
                "on_part_data": self._on_part_data,
                "on_part_end": self._on_part_end,
                "on_end": self._on_end,
            },
            max_header_count=_MAX_HEADER_COUNT,
            max_header_size=_MAX_HEADER_SIZE,
        )
        self._preamble: bytearray | None = bytearray()  # None once the first delimiter is found
        self._received = 0  # body bytes fed so far, for messages
        self._parts = 0
        self._ended = False
        self._closed = False
        self._completed: list[Part] = []
        self._incomplete: Part | None = None
        # The part being received.
        self._headers: dict[str, str] = {}
        self._field = bytearray()
        self._value = bytearray()
        self._file: IO[bytes] | None = None
        self._path: Path | None = None
        self._hash = hashlib.sha256()
        self._size = 0

    @property
    def ended(self) -> bool:
        """The closing delimiter has been read: every part of the body was returned by `feed`."""
        return self._ended

    @property
    def incomplete_part(self) -> Part | None:
        """The part the body was cut in, after `finish` raised for a truncated body (complete=False)."""
        return self._incomplete

    def feed(self, chunk: bytes) -> list[Part]:
        """Parse the next chunk of the body and return the parts it completed, in order.

        Raises:
            MalformedMultipart: the body is not well formed (wrong boundary, bad part headers...).
            MultipartLimitExceeded: a part is larger, or there are more parts, than allowed.
        """
        if self._closed:
            raise MalformedMultipart("the multipart body was already finished or abandoned")
        offset = self._received  # where `chunk` starts in the body
        self._received += len(chunk)
        if self._preamble is not None:
            self._preamble += chunk
            offset = self._first_delimiter()
            if offset < 0:
                return []
            chunk = bytes(self._preamble[offset:])
            self._preamble = None
        try:
            self._parser.write(chunk)
        except MultipartParseError as exc:
            self.close()
            raise MalformedMultipart(
                f"malformed multipart body in part {self._parts}, near byte {offset + max(exc.offset, 0)}: {exc}"
            ) from exc
        except BaseException:
            self.close()  # never leave a partial part file behind, whatever failed (disk full...)
            raise
        completed, self._completed = self._completed, []
        return completed

    def finish(self) -> None:
        """Check the body ended with its closing delimiter, after the last `feed`.

        Parts completed before a cut stay valid and were already returned by `feed`; the cut part
        is then reported by `incomplete_part`.

        Raises:
            MalformedMultipart: the body is empty, has no delimiter, no parts, or is cut short.
        """
        if self._closed:
            raise MalformedMultipart("the multipart body was already finished or abandoned")
        delimiter = self._dash_boundary.decode("ascii")
        if self._preamble is not None:
            size = len(self._preamble)
            self.close()
            if size == 0:
                raise MalformedMultipart("the multipart body is empty: STOW-RS needs at least one part")
            raise MalformedMultipart(
                f"no delimiter line {delimiter!r} in the {size}-byte body: "
                "the boundary parameter does not match the body"
            )
        if not self._ended:
            cut = f"in part {self._parts}" if self._path is not None else "between parts"
            if self._path is not None:
                self._incomplete = Part(
                    number=self._parts,
                    headers=MappingProxyType(self._headers),
                    content_type=_media_type(self._headers),
                    path=self._path,
                    size=self._size,
                    sha256=self._sha256(),
                    complete=False,
                )
            self.close()
            raise MalformedMultipart(
                f"the multipart body was cut short {cut}: its closing delimiter {delimiter + '--'!r} "
                f"never arrived after {self._received} bytes"
            )
        self.close()
        if self._parts == 0:
            raise MalformedMultipart(f"the multipart body has no parts, only its closing delimiter {delimiter}--")

    def close(self) -> None:
        """Stop reading and remove the files no caller holds (idempotent).

        Those are the part still being received and parts completed in a `feed` that then failed.
        """
        self._closed = True
        self._preamble = None
        for part in self._completed:
            part.path.unlink(missing_ok=True)
        self._completed = []
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._path is not None:
            self._path.unlink(missing_ok=True)
            self._path = None

    def __enter__(self) -> Self:
        """Return the reader; `close` runs on exit."""
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Close the reader."""
        self.close()

    def _first_delimiter(self) -> int:
        """Offset of the first delimiter line in the buffered preamble, or -1 while still unknown.

        Raises:
            MalformedMultipart: the boundary occurs in the preamble without starting a line, or no
                delimiter comes within the allowed preamble size.
        """
        buffer = self._preamble
        assert buffer is not None  # noqa: S101  # only called while looking for the first delimiter
        if buffer.startswith(self._dash_boundary):
            return 0
        found = buffer.find(b"\r\n" + self._dash_boundary)
        # A sender picks a boundary that occurs nowhere else, so one that does not start a line is
        # a broken body, not a preamble: skipping to the next delimiter would silently drop a part.
        stray = buffer.find(self._dash_boundary, 0, found if found >= 0 else len(buffer))
        if stray >= 0:
            self.close()
            raise MalformedMultipart(
                f"bytes before the first delimiter: {self._dash_boundary.decode('ascii')!r} at byte {stray} "
                "does not start a line"
            )
        if found >= 0:
            return found + 2
        if len(buffer) > _MAX_PREAMBLE:
            self.close()
            raise MalformedMultipart(
                f"no delimiter line {self._dash_boundary.decode('ascii')!r} in the first {_MAX_PREAMBLE} "
                "bytes of the body: the boundary parameter does not match the body"
            )
        return -1

    def _sha256(self) -> str:
        return self._hash.hexdigest() if self._digest else ""

    def _on_part_begin(self) -> None:
        self._parts += 1
        if self._parts > self._max_parts:
            raise MultipartLimitExceeded(
                f"the multipart body has more than {self._max_parts} parts; send them in several requests"
            )
        self._headers = {}
        self._hash = hashlib.sha256()
        self._size = 0
        # Created now rather than after the headers, so even a part cut in its headers has a path.
        fd, name = tempfile.mkstemp(prefix="part-", dir=self._spool_dir)
        self._path = Path(name)
        self._file = os.fdopen(fd, "wb")

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _on_header_end(self) -> None:
        # RFC 9110 §5.5: field values are octets, decoded as ISO-8859-1 where not ASCII.
        name = self._field.decode("latin-1").strip().lower()
        value = self._value.decode("latin-1").strip()
        self._headers[name] = f"{self._headers[name]}, {value}" if name in self._headers else value
        self._field.clear()
        self._value.clear()

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        # The parser hands out slices of the chunk it was given; a memoryview avoids copying them.
        view = memoryview(data)[start:end]
        self._size += len(view)
        if self._size > self._max_part_size:
            raise MultipartLimitExceeded(
                f"part {self._parts} is larger than the {self._max_part_size}-byte limit per part"
            )
        if self._digest:
            self._hash.update(view)
        assert self._file is not None  # noqa: S101  # data only follows on_part_begin
        self._file.write(view)

    def _on_part_end(self) -> None:
        assert self._file is not None  # noqa: S101
        assert self._path is not None  # noqa: S101
        self._file.close()
        self._completed.append(
            Part(
                number=self._parts,
                headers=MappingProxyType(self._headers),
                content_type=_media_type(self._headers),
                path=self._path,
                size=self._size,
                sha256=self._sha256(),
                complete=True,
            )
        )
        self._file = None
        self._path = None

    def _on_end(self) -> None:
        self._ended = True


class MultipartWriter:
    """Delimiters and part headers of a multipart/related response, as bytes to stream.

    The edge writes `part_header(...)`, then the part body chunk by chunk, for each part, then
    `closing_delimiter()`.
    """

    def __init__(self, boundary: str | None = None) -> None:
        """Use `boundary`, or a random one that cannot occur in the bodies by chance.

        Raises:
            MalformedMultipart: the boundary given is empty, too long or not ASCII.
        """
        if boundary is None:
            boundary = secrets.token_hex(16)
        _check_boundary(boundary)
        self.boundary = boundary
        self._started = False

    def content_type(self, type_param: str) -> str:
        """The response's Content-Type value, e.g. multipart/related; type="application/dicom"; boundary=..."""
        boundary = self.boundary if re.fullmatch(r"[0-9A-Za-z'+_\-.]+", self.boundary) else f'"{self.boundary}"'
        return f'multipart/related; type="{type_param}"; boundary={boundary}'

    def part_header(
        self,
        content_type: str,
        *,
        transfer_syntax: str | None = None,
        content_location: str | None = None,
        content_length: int | None = None,
    ) -> bytes:
        """The delimiter and header fields that open the next part (PS3.18 §8.6.1.2).

        Raises:
            ValueError: a header value is not a single line of ASCII.
        """
        if transfer_syntax is not None:
            content_type = f"{content_type}; transfer-syntax={transfer_syntax}"
        fields = [f"Content-Type: {content_type}"]
        if content_location is not None:
            fields.append(f"Content-Location: {content_location}")
        if content_length is not None:
            fields.append(f"Content-Length: {content_length}")
        if any(_HEADER_VALUE_FORBIDDEN.search(field) for field in fields):
            raise ValueError(f"part header values must be single lines: {fields!r}")
        lines = [self._delimiter(), *fields, "", ""]
        self._started = True
        return "\r\n".join(lines).encode("ascii")

    def closing_delimiter(self) -> bytes:
        """The delimiter that ends the body, after the last part."""
        return f"{self._delimiter()}--\r\n".encode("ascii")

    def _delimiter(self) -> str:
        # RFC 2046 §5.1.1: the CRLF before a delimiter belongs to it, so only later ones start with it.
        return ("\r\n--" if self._started else "--") + self.boundary


def _check_boundary(boundary: str) -> None:
    usable = 0 < len(boundary) <= _MAX_BOUNDARY and boundary.isascii() and boundary.isprintable()
    if not usable:
        raise MalformedMultipart(
            f"boundary {boundary!r} is not usable: RFC 2046 §5.1.1 asks for 1 to 70 ASCII characters "
            f"(up to {_MAX_BOUNDARY} accepted), without line breaks"
        )


def _media_type(headers: Mapping[str, str]) -> str | None:
    value = headers.get("content-type")
    if value is None:
        return None
    try:
        return parse_content_type(value)[0]
    except InvalidMediaType:
        return None
