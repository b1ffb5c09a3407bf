from __future__ import annotations

import re
from typing import TYPE_CHECKING

import pytest
from pydicom.uid import UID

from storage.dicom import media_types
from storage.dicom.media_types import (
    APPLICATION_DICOM,
    APPLICATION_OCTET_STREAM,
    EXPLICIT_VR_LITTLE_ENDIAN,
    TRANSFER_SYNTAXES,
    AcceptableMediaType,
    Resource,
    SelectedMediaType,
    is_known_transfer_syntax,
    negotiate,
    parse_accept,
    parse_content_type,
)
from storage.errors import InvalidMediaType, NotAcceptable

if TYPE_CHECKING:
    from collections.abc import Callable

IMPLICIT_LE = "1.2.840.10008.1.2"
BIG_ENDIAN = "1.2.840.10008.1.2.2"
DEFLATED = "1.2.840.10008.1.2.1.99"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
JPEG_LOSSLESS_SV1 = "1.2.840.10008.1.2.4.70"
JPEG_LS = "1.2.840.10008.1.2.4.80"
J2K_LOSSLESS = "1.2.840.10008.1.2.4.90"
J2K = "1.2.840.10008.1.2.4.91"
HTJ2K_LOSSLESS = "1.2.840.10008.1.2.4.201"
MPEG4 = "1.2.840.10008.1.2.4.102"
HEVC = "1.2.840.10008.1.2.4.107"


def never(_source: str, _target: str) -> bool:
    return False


def always(_source: str, _target: str) -> bool:
    return True


def pick(
    accept: str, stored: str, resource: Resource = "instance", can_transcode: Callable[[str, str], bool] = never
) -> tuple[str, str]:
    selected = negotiate(parse_accept(accept), stored, resource, can_transcode)
    return selected.media_type, selected.transfer_syntax_uid


class TestTable:
    def test_every_uid_is_a_transfer_syntax_pydicom_knows(self) -> None:
        for uid, row in TRANSFER_SYNTAXES.items():
            assert row.uid == uid
            assert UID(uid).is_transfer_syntax, uid
            assert row.name != uid

    def test_each_media_type_has_exactly_one_default(self) -> None:
        media_types = {row.bulk_media_type for row in TRANSFER_SYNTAXES.values()}
        for media_type in media_types:
            rows = TRANSFER_SYNTAXES.values()
            defaults = [row.uid for row in rows if row.bulk_media_type == media_type and row.default]
            assert len(defaults) == 1, media_type

    @pytest.mark.parametrize(
        ("media_type", "default", "others"),
        [
            # PS3.18 Table 8.7.3-4 and Table 8.7.3-5.
            (APPLICATION_OCTET_STREAM, EXPLICIT_VR_LITTLE_ENDIAN, {IMPLICIT_LE, BIG_ENDIAN, DEFLATED}),
            ("image/jpeg", JPEG_LOSSLESS_SV1, {JPEG_BASELINE, "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57"}),
            ("image/jls", JPEG_LS, {"1.2.840.10008.1.2.4.81"}),
            ("image/jp2", J2K_LOSSLESS, {J2K}),
            ("image/jpx", "1.2.840.10008.1.2.4.92", {"1.2.840.10008.1.2.4.93"}),
            ("image/jphc", HTJ2K_LOSSLESS, {"1.2.840.10008.1.2.4.202", "1.2.840.10008.1.2.4.203"}),
            ("image/dicom-rle", "1.2.840.10008.1.2.5", set()),
            ("video/mpeg", "1.2.840.10008.1.2.4.100", {"1.2.840.10008.1.2.4.101"}),
            ("video/mp4", MPEG4, {"1.2.840.10008.1.2.4.103", "1.2.840.10008.1.2.4.106"}),
            ("video/H265", HEVC, {"1.2.840.10008.1.2.4.108"}),
        ],
    )
    def test_media_types_carry_the_standard_transfer_syntaxes(
        self, media_type: str, default: str, others: set[str]
    ) -> None:
        rows = {uid: row for uid, row in TRANSFER_SYNTAXES.items() if row.bulk_media_type == media_type}
        assert rows[default].default
        assert others <= set(rows)
        assert not any(rows[uid].default for uid in others)

    def test_only_lossy_capable_syntaxes_are_marked_lossy(self) -> None:
        lossy = {uid for uid, row in TRANSFER_SYNTAXES.items() if row.lossy}
        assert {JPEG_BASELINE, J2K, MPEG4, HEVC} <= lossy
        assert not lossy & {EXPLICIT_VR_LITTLE_ENDIAN, JPEG_LOSSLESS_SV1, JPEG_LS, J2K_LOSSLESS, HTJ2K_LOSSLESS}


class TestKnownTransferSyntaxes:
    @pytest.mark.parametrize(
        "uid",
        [IMPLICIT_LE, EXPLICIT_VR_LITTLE_ENDIAN, BIG_ENDIAN, DEFLATED, JPEG_BASELINE, JPEG_LS, J2K_LOSSLESS,
         HTJ2K_LOSSLESS, "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.100", MPEG4, HEVC],
    )  # fmt: skip
    def test_standard_storage_syntaxes_are_accepted_on_stow(self, uid: str) -> None:
        assert is_known_transfer_syntax(uid)

    @pytest.mark.parametrize(
        "uid",
        ["", "1.2.3", "1.2.840.10008.1.2.4.52", "1.2.840.10008.1.2.4.94", "1.2.840.10008.1.2.7.1",
         "1.2.840.10008.5.1.4.1.1.2"],
    )  # fmt: skip
    def test_retired_referenced_unknown_and_non_transfer_syntax_uids_are_not(self, uid: str) -> None:
        assert not is_known_transfer_syntax(uid)


class TestParseContentType:
    @pytest.mark.parametrize(
        ("value", "media_type", "params"),
        [
            ("application/dicom", "application/dicom", {}),
            ('Multipart/Related; Type="application/dicom"; boundary="a;b,c"', "multipart/related",
             {"type": "application/dicom", "boundary": "a;b,c"}),
            ("multipart/related;type=application/dicom;boundary=x", "multipart/related",
             {"type": "application/dicom", "boundary": "x"}),
            ('application/dicom; transfer-syntax="1.2.840.10008.1.2.1"', "application/dicom",
             {"transfer-syntax": "1.2.840.10008.1.2.1"}),
            ('a/b; note="say \\"hi\\""', "a/b", {"note": 'say "hi"'}),
            (' Multipart/Related ; BOUNDARY = "a b" ;type=application/dicom ', "multipart/related",
             {"boundary": "a b", "type": "application/dicom"}),
            ("a/b; name*=utf-8''caf%C3%A9", "a/b", {"name": "caf\u00e9"}),  # RFC 2231 extended value
            ("a/b; x=1; x=2", "a/b", {"x": "2"}),
            ("a/b;", "a/b", {}),
            ("a/b; flag", "a/b", {"flag": ""}),
        ],
    )  # fmt: skip
    def test_media_type_and_parameters_are_split_and_unquoted(
        self, value: str, media_type: str, params: dict[str, str]
    ) -> None:
        assert parse_content_type(value) == (media_type, params)

    @pytest.mark.parametrize(
        "value", ["", "dicom", "application/", "/dicom", "application/dicom/x", "a b/c", "a/b; x*; x*0=v"]
    )
    def test_a_value_without_type_slash_subtype_is_refused(self, value: str) -> None:
        with pytest.raises(InvalidMediaType, match="not a media type"):
            parse_content_type(value)

    @pytest.mark.parametrize(
        "value",
        [
            'multipart/related; type="application/dicom"; boundary=0123abc',
            'Multipart/Related;TYPE=application/dicom;boundary="a b;c"',
            " Application/DICOM ; Transfer-Syntax = 1.2.840.10008.1.2.4.50 ",
            'a/b; x=""; y=; z="(c)=d"; padded=" p "',
            "image/jpeg; q=0.5",
        ],
    )
    def test_the_quick_reading_agrees_with_the_email_parser(self, value: str, monkeypatch: pytest.MonkeyPatch) -> None:
        assert media_types._PLAIN_CONTENT_TYPE.fullmatch(value)  # the quick way is taken
        quick = parse_content_type(value)
        monkeypatch.setattr(media_types, "_PLAIN_CONTENT_TYPE", re.compile(r"(?!)"))  # never matches
        assert parse_content_type(value) == quick


class TestParseAccept:
    def test_ranges_are_ordered_by_weight_keeping_the_written_order_on_ties(self) -> None:
        acceptable = parse_accept('image/jp2;q=0.5, multipart/related; type="application/dicom", */*;q=0.1, image/jls')
        assert [(choice.media_type, choice.q) for choice in acceptable] == [
            ("application/dicom", 1.0),
            ("image/jls", 1.0),
            ("image/jp2", 0.5),
            ("*/*", 0.1),
        ]

    def test_several_header_fields_are_one_list(self) -> None:
        acceptable = parse_accept(["image/jp2; q=0.2", 'multipart/related; type="application/octet-stream"'])
        assert [choice.media_type for choice in acceptable] == ["application/octet-stream", "image/jp2"]

    def test_multipart_ranges_carry_their_type_and_transfer_syntax(self) -> None:
        [choice] = parse_accept(
            'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50; q=0.8'
        )
        assert choice == AcceptableMediaType("application/dicom", JPEG_BASELINE, 0.8, multipart=True)

    def test_a_bare_dicom_media_type_is_single_part(self) -> None:
        assert parse_accept("application/dicom") == [AcceptableMediaType("application/dicom")]

    def test_the_any_transfer_syntax_wildcard_is_kept(self) -> None:
        [choice] = parse_accept('multipart/related; type="application/octet-stream"; transfer-syntax=*')
        assert (choice.media_type, choice.transfer_syntax, choice.multipart) == (APPLICATION_OCTET_STREAM, "*", True)

    def test_a_comma_inside_a_quoted_parameter_does_not_split_ranges(self) -> None:
        assert len(parse_accept('multipart/related; type="application/dicom"; boundary="a,b", image/jp2')) == 2

    def test_zero_weight_ranges_are_not_acceptable_and_dropped(self) -> None:
        assert [choice.media_type for choice in parse_accept("image/jp2;q=0, image/jls")] == ["image/jls"]

    def test_pre_registration_names_are_read_as_the_registered_ones(self) -> None:
        acceptable = parse_accept('multipart/related; type="image/x-jls", image/x-dicom-rle, video/mpeg2')
        assert [choice.media_type for choice in acceptable] == ["image/jls", "image/dicom-rle", "video/mpeg"]

    def test_multipart_related_without_type_accepts_any_part_type(self) -> None:
        assert parse_accept("multipart/related")[0].media_type == "*/*"

    def test_no_header_gives_an_empty_list(self) -> None:
        assert parse_accept([]) == []

    @pytest.mark.parametrize("q", ["2", "0.5555", "-1", "high", "1.5"])
    def test_a_malformed_weight_is_refused(self, q: str) -> None:
        with pytest.raises(InvalidMediaType, match=f"q='{q}'"):
            parse_accept(f"image/jp2;q={q}")

    def test_a_malformed_range_is_refused(self) -> None:
        with pytest.raises(InvalidMediaType):
            parse_accept("image/jp2, nonsense")

    def test_a_range_prints_as_a_client_writes_it(self) -> None:
        [choice] = parse_accept('multipart/related; type="application/dicom"; transfer-syntax=*')
        assert str(choice) == 'multipart/related; type="application/dicom"; transfer-syntax=*'


INSTANCE = 'multipart/related; type="application/dicom"'


class TestNegotiateInstances:
    @pytest.mark.parametrize("stored", [EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_LE, BIG_ENDIAN, DEFLATED])
    def test_a_default_request_gets_explicit_vr_little_endian_from_any_native_syntax(self, stored: str) -> None:
        assert pick(INSTANCE, stored) == (APPLICATION_DICOM, EXPLICIT_VR_LITTLE_ENDIAN)

    def test_a_default_request_gets_compressed_data_decoded_when_the_server_can(self) -> None:
        calls: list[tuple[str, str]] = []

        def can_transcode(source: str, target: str) -> bool:
            calls.append((source, target))
            return True

        selected = pick(INSTANCE, J2K_LOSSLESS, can_transcode=can_transcode)
        assert selected == (APPLICATION_DICOM, EXPLICIT_VR_LITTLE_ENDIAN)
        assert calls == [(J2K_LOSSLESS, EXPLICIT_VR_LITTLE_ENDIAN)]

    def test_a_default_request_for_undecodable_lossless_data_is_not_acceptable_and_says_what_to_ask(self) -> None:
        with pytest.raises(NotAcceptable) as caught:
            pick(INSTANCE, J2K_LOSSLESS)
        message = str(caught.value)
        assert "stored as JPEG 2000 Image Compression (Lossless Only) (1.2.840.10008.1.2.4.90)" in message
        assert "transfer-syntax=*" in message
        assert INSTANCE in message

    def test_a_default_request_for_undecodable_lossy_data_gets_it_as_stored(self) -> None:
        # PS3.18 §8.7.3: the default does not apply when only lossy compressed pixel data exists.
        assert pick(INSTANCE, JPEG_BASELINE) == (APPLICATION_DICOM, JPEG_BASELINE)

    def test_any_transfer_syntax_keeps_the_stored_one_even_when_decoding_is_possible(self) -> None:
        assert pick(INSTANCE + "; transfer-syntax=*", J2K_LOSSLESS, can_transcode=always) == (
            APPLICATION_DICOM,
            J2K_LOSSLESS,
        )

    @pytest.mark.parametrize("stored", [IMPLICIT_LE, BIG_ENDIAN])
    def test_any_transfer_syntax_never_serves_syntaxes_forbidden_on_the_web(self, stored: str) -> None:
        assert pick(INSTANCE + "; transfer-syntax=*", stored) == (APPLICATION_DICOM, EXPLICIT_VR_LITTLE_ENDIAN)

    def test_an_explicit_syntax_is_served_as_stored_or_transcoded(self) -> None:
        assert pick(f"{INSTANCE}; transfer-syntax={J2K_LOSSLESS}", J2K_LOSSLESS) == (APPLICATION_DICOM, J2K_LOSSLESS)
        assert pick(f"{INSTANCE}; transfer-syntax={JPEG_LS}", J2K_LOSSLESS, can_transcode=always) == (
            APPLICATION_DICOM,
            JPEG_LS,
        )
        with pytest.raises(NotAcceptable):
            pick(f"{INSTANCE}; transfer-syntax={JPEG_LS}", J2K_LOSSLESS)

    def test_implicit_vr_is_not_served_even_when_asked_for(self) -> None:
        with pytest.raises(NotAcceptable, match=r"transfer-syntax=1\.2\.840\.10008\.1\.2\.1\b"):
            pick(f"{INSTANCE}; transfer-syntax={IMPLICIT_LE}", IMPLICIT_LE, can_transcode=always)

    def test_the_most_preferred_servable_range_wins(self) -> None:
        accept = f"{INSTANCE}; transfer-syntax={JPEG_LS}, {INSTANCE}; transfer-syntax=*; q=0.5"
        assert pick(accept, J2K_LOSSLESS) == (APPLICATION_DICOM, J2K_LOSSLESS)
        assert pick(accept, J2K_LOSSLESS, can_transcode=always) == (APPLICATION_DICOM, JPEG_LS)

    @pytest.mark.parametrize("accept", ["*/*", "application/*", 'multipart/related; type="*/*"'])
    def test_wildcards_get_application_dicom(self, accept: str) -> None:
        assert pick(accept, EXPLICIT_VR_LITTLE_ENDIAN) == (APPLICATION_DICOM, EXPLICIT_VR_LITTLE_ENDIAN)

    def test_no_accept_header_gets_the_default(self) -> None:
        selected = negotiate([], DEFLATED, "instance", never)
        assert selected == SelectedMediaType(APPLICATION_DICOM, EXPLICIT_VR_LITTLE_ENDIAN, multipart=False)

    def test_the_selection_says_whether_multipart_was_asked(self) -> None:
        assert negotiate(parse_accept(INSTANCE), EXPLICIT_VR_LITTLE_ENDIAN, "instance", never).multipart
        assert not negotiate(parse_accept(APPLICATION_DICOM), EXPLICIT_VR_LITTLE_ENDIAN, "instance", never).multipart

    def test_bulk_media_types_do_not_serve_instances(self) -> None:
        with pytest.raises(NotAcceptable, match=r"cannot serve this instance as image/jp2"):
            pick("image/jp2", J2K_LOSSLESS)


FRAMES = 'multipart/related; type="application/octet-stream"'


class TestNegotiateFrames:
    @pytest.mark.parametrize("stored", [EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_LE, BIG_ENDIAN, DEFLATED])
    @pytest.mark.parametrize("resource", ["frame", "bulkdata"])
    def test_octet_stream_gets_native_little_endian_frames(self, stored: str, resource: Resource) -> None:
        assert pick(FRAMES, stored, resource) == (APPLICATION_OCTET_STREAM, EXPLICIT_VR_LITTLE_ENDIAN)

    def test_octet_stream_gets_compressed_frames_decoded_when_the_server_can(self) -> None:
        assert pick(FRAMES, J2K_LOSSLESS, "frame", always) == (APPLICATION_OCTET_STREAM, EXPLICIT_VR_LITTLE_ENDIAN)

    def test_octet_stream_for_undecodable_frames_is_not_acceptable_and_names_the_media_type(self) -> None:
        with pytest.raises(NotAcceptable, match=r"ask with transfer-syntax=\* or image/jp2"):
            pick(FRAMES, J2K_LOSSLESS, "frame")

    def test_octet_stream_with_any_transfer_syntax_gets_the_stored_frames(self) -> None:
        assert pick(FRAMES + "; transfer-syntax=*", J2K_LOSSLESS, "frame", always) == (
            APPLICATION_OCTET_STREAM,
            J2K_LOSSLESS,
        )

    def test_a_compressed_media_type_maps_to_the_stored_syntax_of_that_type(self) -> None:
        assert pick('multipart/related; type="image/jp2"', J2K, "frame") == ("image/jp2", J2K)
        assert pick('multipart/related; type="image/jpeg"', JPEG_BASELINE, "frame") == ("image/jpeg", JPEG_BASELINE)

    def test_a_compressed_media_type_of_another_codec_gets_its_default_when_transcodable(self) -> None:
        assert pick("image/jpeg", J2K_LOSSLESS, "frame", always) == ("image/jpeg", JPEG_LOSSLESS_SV1)
        with pytest.raises(NotAcceptable):
            pick("image/jpeg", J2K_LOSSLESS, "frame")

    def test_a_transfer_syntax_that_does_not_belong_to_the_media_type_is_not_served(self) -> None:
        with pytest.raises(NotAcceptable):
            pick(f"image/jpeg; transfer-syntax={J2K_LOSSLESS}", J2K_LOSSLESS, "frame", always)

    def test_an_image_wildcard_gets_the_stored_media_type(self) -> None:
        assert pick('multipart/related; type="image/*"', JPEG_LS, "frame") == ("image/jls", JPEG_LS)

    def test_any_media_type_prefers_decoded_frames_then_the_stored_ones(self) -> None:
        assert pick("*/*", HTJ2K_LOSSLESS, "frame", always) == (APPLICATION_OCTET_STREAM, EXPLICIT_VR_LITTLE_ENDIAN)
        assert pick("*/*", HTJ2K_LOSSLESS, "frame") == ("image/jphc", HTJ2K_LOSSLESS)

    def test_any_media_type_with_any_transfer_syntax_gets_the_stored_media_type(self) -> None:
        accept = 'multipart/related; type="*/*"; transfer-syntax=*'
        assert pick(accept, J2K_LOSSLESS, "frame", always) == ("image/jp2", J2K_LOSSLESS)

    def test_video_bulk_data_is_served_in_its_video_media_type(self) -> None:
        assert pick("video/mp4", MPEG4, "bulkdata") == ("video/mp4", MPEG4)
        assert pick('multipart/related; type="video/h265"', HEVC, "bulkdata") == ("video/H265", HEVC)
        assert pick("video/mpeg2", "1.2.840.10008.1.2.4.100", "bulkdata") == ("video/mpeg", "1.2.840.10008.1.2.4.100")
