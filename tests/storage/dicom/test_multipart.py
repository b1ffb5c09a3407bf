from __future__ import annotations

import hashlib
import os
import random
import tracemalloc
from typing import TYPE_CHECKING

import pytest

from storage.dicom.multipart import MultipartReader, MultipartWriter, Part, multipart_boundary
from storage.errors import MalformedMultipart, MultipartLimitExceeded

if TYPE_CHECKING:
    from collections.abc import Iterable
    from pathlib import Path

BOUNDARY = "b0undary"
# Payloads that look like delimiters without being ones: a CRLF, the dash-boundary without its
# CRLF, a prefix of the delimiter at the very end, every byte value.
PAYLOADS = (
    b"\x00DICM first\r\n--b0undar\r\n",
    b"--b0undary is not a delimiter unless it starts a line\r\n\r\n--b0undaryX\r\n\r",
    bytes(range(256)) + b"\r\n--b0",
)


def body(
    payloads: Iterable[bytes],
    *,
    preamble: bytes = b"",
    epilogue: bytes = b"",
    headers: bytes = b"Content-Type: application/dicom\r\n",
    boundary: str = BOUNDARY,
) -> bytes:
    """A body laid out by hand as RFC 2046 §5.1.1 says, independent of MultipartWriter."""
    delimiter = b"--" + boundary.encode()
    pieces = [preamble + delimiter]
    for payload in payloads:
        pieces.append(b"\r\n" + headers + b"\r\n" + payload + b"\r\n" + delimiter)
    return b"".join(pieces) + b"--" + epilogue


def read_all(data: bytes, spool: Path, chunk_sizes: Iterable[int] | None = None, **limits: int) -> list[Part]:
    sizes = iter(chunk_sizes) if chunk_sizes is not None else None
    parts: list[Part] = []
    with MultipartReader(BOUNDARY, spool, **limits) as reader:
        offset = 0
        while offset < len(data):
            size = next(sizes) if sizes is not None else len(data)
            parts += reader.feed(data[offset : offset + size])
            offset += size
        reader.finish()
    return parts


def contents(parts: Iterable[Part]) -> list[bytes]:
    return [part.path.read_bytes() for part in parts]


class TestSplitChunks:
    def test_every_split_point_of_the_body_gives_the_same_parts(self, tmp_path: Path) -> None:
        data = body(PAYLOADS, preamble=b"\r\n")
        for split in range(1, len(data)):
            spool = tmp_path / str(split)
            spool.mkdir()
            parts = read_all(data, spool, [split, len(data)])
            assert contents(parts) == list(PAYLOADS), f"split at {split}"

    def test_one_byte_chunks_give_the_same_parts(self, tmp_path: Path) -> None:
        parts = read_all(body(PAYLOADS), tmp_path, iter(lambda: 1, 0))
        assert contents(parts) == list(PAYLOADS)

    def test_random_chunk_sizes_give_the_same_parts(self, tmp_path: Path) -> None:
        rng = random.Random(2387)  # reproducible test data, not a secret
        payloads = [rng.randbytes(rng.randrange(0, 5000)) + b"\r\n--b0undar" for _ in range(20)]
        for attempt in range(10):
            spool = tmp_path / str(attempt)
            spool.mkdir()
            parts = read_all(body(payloads), spool, iter(lambda: rng.randrange(1, 3000), 0))
            assert contents(parts) == payloads

    def test_an_empty_part_is_a_part(self, tmp_path: Path) -> None:
        assert contents(read_all(body([b"", b"x"]), tmp_path)) == [b"", b"x"]


class TestPartsAsTheyComplete:
    def test_a_part_is_returned_by_the_chunk_that_completes_it(self, tmp_path: Path) -> None:
        data = body([b"first", b"second"])
        second_starts = data.index(b"second")
        with MultipartReader(BOUNDARY, tmp_path) as reader:
            first = reader.feed(data[:second_starts])
            assert contents(first) == [b"first"]
            second = reader.feed(data[second_starts:])
            assert contents(second) == [b"second"]
            reader.finish()

    def test_the_delimiter_alone_completes_a_part_only_once_its_line_ends(self, tmp_path: Path) -> None:
        data = body([b"first", b"second"])
        after_delimiter = data.index(b"--" + BOUNDARY.encode(), data.index(b"first")) + len(BOUNDARY) + 2
        with MultipartReader(BOUNDARY, tmp_path) as reader:
            assert reader.feed(data[:after_delimiter]) == []
            assert contents(reader.feed(data[after_delimiter : after_delimiter + 2])) == [b"first"]

    def test_the_chunk_ending_the_body_returns_the_last_part_and_the_reader_has_ended(self, tmp_path: Path) -> None:
        data = body([b"first", b"last"])
        with MultipartReader(BOUNDARY, tmp_path) as reader:
            assert contents(reader.feed(data[:-1])) == [b"first"]
            assert not reader.ended
            assert contents(reader.feed(data[-1:])) == [b"last"]
            assert reader.ended

    def test_parts_are_numbered_from_one(self, tmp_path: Path) -> None:
        assert [part.number for part in read_all(body(PAYLOADS), tmp_path)] == [1, 2, 3]


class TestPreambleAndEpilogue:
    @pytest.mark.parametrize(
        "preamble",
        [b"\r\n", b"This is a multipart message in MIME format.\r\n", b"-- a line\r\n--b0undar\r\n"],
    )
    def test_a_preamble_before_the_first_delimiter_is_ignored(self, tmp_path: Path, preamble: bytes) -> None:
        assert contents(read_all(body(PAYLOADS, preamble=preamble), tmp_path)) == list(PAYLOADS)

    def test_a_preamble_split_over_chunks_is_ignored(self, tmp_path: Path) -> None:
        data = body(PAYLOADS, preamble=b"pre\r\namble\r\n")
        assert contents(read_all(data, tmp_path, iter(lambda: 3, 0))) == list(PAYLOADS)

    @pytest.mark.parametrize("epilogue", [b"", b"\r\n", b"\r\nepilogue text\r\n--b0undary\r\nnot a part"])
    def test_the_epilogue_after_the_closing_delimiter_is_ignored(self, tmp_path: Path, epilogue: bytes) -> None:
        assert contents(read_all(body(PAYLOADS, epilogue=epilogue), tmp_path)) == list(PAYLOADS)


class TestHeaders:
    def test_header_names_are_lower_cased_and_values_kept(self, tmp_path: Path) -> None:
        headers = (
            b"CONTENT-TYPE: Application/DICOM; transfer-syntax=1.2.840.10008.1.2.4.50\r\n"
            b"Content-Location: https://pacs.example/studies/1\r\n"
        )
        [part] = read_all(body([b"x"], headers=headers), tmp_path)
        assert dict(part.headers) == {
            "content-type": "Application/DICOM; transfer-syntax=1.2.840.10008.1.2.4.50",
            "content-location": "https://pacs.example/studies/1",
        }
        assert part.content_type == "application/dicom"

    def test_a_part_without_content_type_has_none(self, tmp_path: Path) -> None:
        [part] = read_all(body([b"x"], headers=b"Content-ID: <1>\r\n"), tmp_path)
        assert part.content_type is None
        assert dict(part.headers) == {"content-id": "<1>"}

    def test_a_repeated_header_is_joined(self, tmp_path: Path) -> None:
        [part] = read_all(body([b"x"], headers=b"X-Note: a\r\nx-note: b\r\n"), tmp_path)
        assert part.headers["x-note"] == "a, b"

    def test_a_malformed_header_line_is_refused_and_its_part_file_removed(self, tmp_path: Path) -> None:
        with pytest.raises(MalformedMultipart, match="part 1"):
            read_all(body([b"x"], headers=b"Bad Header Name: x\r\n"), tmp_path)
        assert list(tmp_path.iterdir()) == []


class TestPartFiles:
    def test_bytes_are_kept_exactly_and_hashed_with_sha256(self, tmp_path: Path) -> None:
        parts = read_all(body(PAYLOADS), tmp_path)
        assert [part.sha256 for part in parts] == [hashlib.sha256(payload).hexdigest() for payload in PAYLOADS]
        assert [part.size for part in parts] == [len(payload) for payload in PAYLOADS]
        assert all(part.complete for part in parts)

    def test_a_reader_told_not_to_digest_keeps_the_bytes_and_leaves_the_hash_empty(self, tmp_path: Path) -> None:
        with MultipartReader(BOUNDARY, tmp_path, digest=False) as reader:
            parts = reader.feed(body(PAYLOADS))
            reader.finish()
        assert contents(parts) == list(PAYLOADS)
        assert [part.sha256 for part in parts] == [""] * len(PAYLOADS)

    def test_part_files_are_created_in_the_spool_folder(self, tmp_path: Path) -> None:
        parts = read_all(body(PAYLOADS), tmp_path)
        assert sorted(path.name for path in tmp_path.iterdir()) == sorted(part.path.name for part in parts)

    def test_a_50_mb_part_is_spooled_with_bounded_memory(self, tmp_path: Path) -> None:
        block = os.urandom(64 * 1024)
        blocks = 800  # 50 MiB
        head, tail = body([b"PAYLOAD"]).split(b"PAYLOAD")
        expected = hashlib.sha256()
        tracemalloc.start()
        try:
            with MultipartReader(BOUNDARY, tmp_path) as reader:
                parts = reader.feed(head)
                for _ in range(blocks):
                    parts += reader.feed(block)
                    expected.update(block)
                parts += reader.feed(tail)
                reader.finish()
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        [part] = parts
        assert part.size == blocks * len(block)
        assert part.path.stat().st_size == part.size
        assert part.sha256 == expected.hexdigest()
        assert peak < 512 * 1024


class TestTruncatedBody:
    def test_a_body_cut_in_a_part_raises_and_reports_that_part_incomplete(self, tmp_path: Path) -> None:
        data = body([b"complete", b"cut in the middle"])
        cut = data.index(b"in the middle")
        with MultipartReader(BOUNDARY, tmp_path) as reader:
            [first] = reader.feed(data[:cut])
            with pytest.raises(MalformedMultipart, match=r"cut short in part 2.*'--b0undary--' never arrived"):
                reader.finish()
            incomplete = reader.incomplete_part
        assert first.complete
        assert first.path.read_bytes() == b"complete"
        assert incomplete is not None
        assert (incomplete.number, incomplete.complete, incomplete.content_type) == (2, False, "application/dicom")
        assert not incomplete.path.exists()
        assert list(tmp_path.iterdir()) == [first.path]

    def test_a_body_without_its_closing_delimiter_raises_and_the_last_part_is_incomplete(self, tmp_path: Path) -> None:
        data = body([b"one", b"two"]).removesuffix(b"--")  # ends "\r\n--b0undary": the delimiter never closes
        with MultipartReader(BOUNDARY, tmp_path) as reader:
            parts = reader.feed(data)
            with pytest.raises(MalformedMultipart, match="cut short in part 2"):
                reader.finish()
            assert reader.incomplete_part is not None
        assert contents(parts) == [b"one"]

    def test_a_body_ending_after_a_delimiter_line_reports_the_next_part_incomplete(self, tmp_path: Path) -> None:
        data = body([b"one"]).removesuffix(b"--") + b"\r\n"
        with MultipartReader(BOUNDARY, tmp_path) as reader:
            assert contents(reader.feed(data)) == [b"one"]
            with pytest.raises(MalformedMultipart, match="cut short in part 2"):
                reader.finish()
            assert reader.incomplete_part is not None
            assert dict(reader.incomplete_part.headers) == {}


class TestMalformedBody:
    def test_an_empty_body_is_refused(self, tmp_path: Path) -> None:
        with MultipartReader(BOUNDARY, tmp_path) as reader, pytest.raises(MalformedMultipart, match="empty"):
            reader.finish()

    def test_a_body_with_another_boundary_is_refused_naming_the_expected_delimiter(self, tmp_path: Path) -> None:
        data = body([b"one", b"two"], boundary="other")
        with pytest.raises(MalformedMultipart, match=r"no delimiter line '--b0undary'.*does not match"):
            read_all(data, tmp_path)

    def test_garbage_without_a_delimiter_is_refused_before_the_whole_body_is_read(self, tmp_path: Path) -> None:
        with MultipartReader(BOUNDARY, tmp_path) as reader:
            reader.feed(b"x" * 60_000)
            with pytest.raises(MalformedMultipart, match="first 65536 bytes"):
                reader.feed(b"x" * 10_000)

    def test_garbage_glued_to_the_first_delimiter_is_refused_not_skipped_as_a_preamble(self, tmp_path: Path) -> None:
        with pytest.raises(MalformedMultipart, match="'--b0undary' at byte 7 does not start a line"):
            read_all(b"garbage" + body(PAYLOADS), tmp_path)

    def test_a_closing_delimiter_alone_is_a_body_without_parts(self, tmp_path: Path) -> None:
        with pytest.raises(MalformedMultipart, match="no parts"):
            read_all(b"--b0undary--\r\n", tmp_path)

    def test_feeding_after_an_error_is_refused(self, tmp_path: Path) -> None:
        with MultipartReader(BOUNDARY, tmp_path) as reader:
            with pytest.raises(MalformedMultipart):
                reader.feed(body([b"x"], headers=b"Bad Header Name: x\r\n"))
            with pytest.raises(MalformedMultipart, match="already finished or abandoned"):
                reader.feed(b"more")


class TestLimits:
    def test_a_part_over_the_size_limit_is_refused_and_its_file_removed(self, tmp_path: Path) -> None:
        with pytest.raises(MultipartLimitExceeded, match="part 2 is larger than the 10-byte limit"):
            read_all(body([b"small", b"far too large"]), tmp_path, max_part_size=10)
        # Part 1 came in the chunk that failed, so it was never handed out: removed with part 2.
        assert list(tmp_path.iterdir()) == []

    def test_parts_handed_out_before_the_limit_stay_the_caller_s(self, tmp_path: Path) -> None:
        data = body([b"small", b"far too large"])
        reader = MultipartReader(BOUNDARY, tmp_path, max_part_size=10)
        first = reader.feed(data[: data.index(b"far")])
        with pytest.raises(MultipartLimitExceeded):
            reader.feed(data[data.index(b"far") :])
        assert [part.path for part in first] == list(tmp_path.iterdir())

    def test_more_parts_than_allowed_are_refused(self, tmp_path: Path) -> None:
        with pytest.raises(MultipartLimitExceeded, match="more than 2 parts"):
            read_all(body([b"a", b"b", b"c"]), tmp_path, max_parts=2)


class TestClose:
    def test_closing_mid_part_removes_its_file(self, tmp_path: Path) -> None:
        data = body([b"a part that never finishes"])
        reader = MultipartReader(BOUNDARY, tmp_path)
        reader.feed(data[:-20])
        assert len(list(tmp_path.iterdir())) == 1
        reader.close()
        assert list(tmp_path.iterdir()) == []

    def test_parts_completed_in_a_chunk_that_then_fails_leave_no_file(self, tmp_path: Path) -> None:
        good = body([b"first part", b"second part"])
        broken = (
            good[: good.rindex(b"--" + BOUNDARY.encode() + b"--")]
            + b"--"
            + BOUNDARY.encode()
            + b"\r\nBad Header Name: x\r\n\r\n"
        )
        reader = MultipartReader(BOUNDARY, tmp_path)
        with pytest.raises(MalformedMultipart):
            reader.feed(broken)  # completes two parts, then trips over the third part's header
        assert list(tmp_path.iterdir()) == []


class TestBoundaryFromContentType:
    @pytest.mark.parametrize(
        ("content_type", "boundary"),
        [
            ('multipart/related; type="application/dicom"; boundary=b0undary', "b0undary"),
            ('Multipart/Related; Boundary="with:colon=and space"; type="application/dicom"', "with:colon=and space"),
            ("multipart/related;type=application/dicom;boundary=abc", "abc"),
        ],
    )
    def test_the_boundary_parameter_is_returned_unquoted(self, content_type: str, boundary: str) -> None:
        assert multipart_boundary(content_type) == boundary

    def test_a_quoted_boundary_with_special_characters_reads_the_body(self, tmp_path: Path) -> None:
        boundary = multipart_boundary('multipart/related; boundary="a:b=c (d)"')
        data = body(PAYLOADS, boundary=boundary)
        with MultipartReader(boundary, tmp_path) as reader:
            parts = reader.feed(data)
            reader.finish()
        assert contents(parts) == list(PAYLOADS)

    def test_a_missing_boundary_is_named(self) -> None:
        with pytest.raises(MalformedMultipart, match="no boundary parameter"):
            multipart_boundary('multipart/related; type="application/dicom"')

    def test_a_non_multipart_content_type_is_refused(self) -> None:
        with pytest.raises(MalformedMultipart, match="not multipart"):
            multipart_boundary("application/dicom")

    @pytest.mark.parametrize("boundary", ["", "x" * 257, "caf\u00e9", "line\nbreak"])
    def test_unusable_boundaries_are_refused(self, tmp_path: Path, boundary: str) -> None:
        with pytest.raises(MalformedMultipart, match="boundary"):
            MultipartReader(boundary, tmp_path)


class TestWriter:
    def test_the_content_type_names_the_part_type_and_the_boundary(self) -> None:
        writer = MultipartWriter("abc")
        assert writer.content_type("application/dicom") == 'multipart/related; type="application/dicom"; boundary=abc'

    def test_a_boundary_with_special_characters_is_quoted(self) -> None:
        assert MultipartWriter("a:b").content_type("image/jp2").endswith('boundary="a:b"')

    def test_generated_boundaries_differ(self) -> None:
        assert MultipartWriter().boundary != MultipartWriter().boundary

    def test_the_first_part_header_has_no_leading_crlf_and_later_ones_do(self) -> None:
        writer = MultipartWriter("abc")
        assert writer.part_header("application/dicom") == b"--abc\r\nContent-Type: application/dicom\r\n\r\n"
        assert writer.part_header(
            "application/dicom",
            transfer_syntax="1.2.840.10008.1.2.1",
            content_location="/dicomweb/studies/1",
            content_length=12,
        ) == (
            b"\r\n--abc\r\nContent-Type: application/dicom; transfer-syntax=1.2.840.10008.1.2.1\r\n"
            b"Content-Location: /dicomweb/studies/1\r\nContent-Length: 12\r\n\r\n"
        )
        assert writer.closing_delimiter() == b"\r\n--abc--\r\n"

    def test_a_header_value_with_a_line_break_is_refused(self) -> None:
        with pytest.raises(ValueError, match="single lines"):
            MultipartWriter().part_header("application/dicom", content_location="/x\r\nInjected: 1")

    def test_what_the_writer_streams_the_reader_reads_back(self, tmp_path: Path) -> None:
        writer = MultipartWriter()
        chunks = []
        for payload in PAYLOADS:
            chunks += [writer.part_header("application/dicom", transfer_syntax="1.2.840.10008.1.2.1"), payload]
        chunks.append(writer.closing_delimiter())
        content_type = writer.content_type("application/dicom")
        with MultipartReader(multipart_boundary(content_type), tmp_path) as reader:
            parts = [part for chunk in chunks for part in reader.feed(chunk)]
            reader.finish()
        assert contents(parts) == list(PAYLOADS)
        assert {part.headers["content-type"] for part in parts} == {
            "application/dicom; transfer-syntax=1.2.840.10008.1.2.1"
        }
