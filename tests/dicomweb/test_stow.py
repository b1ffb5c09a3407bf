"""STOW-RS (PS3.18 §10.5): response codes, per-instance failures, re-sending, and an archive that a bad
request leaves exactly as it was."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest
from dicomdata import bundled, dataset_of, multipart_body, new_uid, part10, sample_study, uids_of
from live_pacs import STOW_STATUS, first, sequence

if TYPE_CHECKING:
    from collections.abc import Callable

    import httpx
    from live_pacs import Pacs

FAILED = STOW_STATUS["FailedSOPSequence"]
REFERENCED = STOW_STATUS["ReferencedSOPSequence"]
SOP_UID = STOW_STATUS["ReferencedSOPInstanceUID"]
REASON = STOW_STATUS["FailureReason"]
COMMENT = STOW_STATUS["ErrorComment"]
RETRIEVE_URL = STOW_STATUS["RetrieveURL"]


@dataclass(frozen=True)
class Snapshot:
    """What must not change when a request stores nothing: counts, blob files, a known instance's bytes."""

    counts: tuple[int, int, int]
    blobs: frozenset[str]
    known: bytes


@pytest.fixture
def unchanged(pacs: Pacs) -> Callable[[], None]:
    """Take a snapshot of the archive now; calling the result asserts the archive still matches it."""
    _, (known,) = sample_study()
    pacs.store(known)
    before = Snapshot(pacs.counts(), frozenset(map(str, pacs.blob_files())), pacs.stored_bytes(known))

    def check() -> None:
        after = Snapshot(pacs.counts(), frozenset(map(str, pacs.blob_files())), pacs.stored_bytes(known))
        assert after == before, "a request that stored nothing changed the archive"
        assert before.known == known

    return check


def _raw_post(pacs: Pacs, body: bytes, content_type: str, study: str | None = None) -> httpx.Response:
    path = "/dicomweb/studies" + (f"/{study}" if study else "")
    return pacs.http.post(path, content=body, headers={"Content-Type": content_type})


def _failed_uids(answer: dict) -> list[str | None]:
    return [first(item, SOP_UID) for item in sequence(answer, FAILED)]


def _assert_failure_items_explain(answer: dict) -> None:
    for item in sequence(answer, FAILED):
        assert isinstance(first(item, REASON), int), item
        comment = first(item, COMMENT)
        assert isinstance(comment, str), item
        assert len(comment) > 10, item


class TestAllInstancesStored:
    def test_answers_200_with_a_referenced_sop_item_per_instance(self, pacs: Pacs) -> None:
        spec, files = sample_study(instances=3)
        response = pacs.stow(files)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("application/dicom+json")
        answer = response.json()
        assert FAILED not in answer
        referenced = sequence(answer, REFERENCED)
        assert [first(item, SOP_UID) for item in referenced] == [uids_of(data)[2] for data in files]
        assert all(
            first(item, STOW_STATUS["ReferencedSOPClassUID"]) == dataset_of(files[0]).SOPClassUID for item in referenced
        )
        assert first(answer, RETRIEVE_URL).endswith(f"/dicomweb/studies/{spec.study_uid}")

    def test_referenced_retrieve_url_serves_the_instance(self, pacs: Pacs) -> None:
        _, (data,) = sample_study()
        (item,) = sequence(pacs.store(data), REFERENCED)
        response = pacs.http.get(
            first(item, RETRIEVE_URL),
            headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'},
        )
        assert response.status_code == 200
        assert data in response.content

    def test_stores_into_the_study_named_in_the_url(self, pacs: Pacs) -> None:
        spec, files = sample_study(instances=2)
        response = pacs.stow(files, study=spec.study_uid)
        assert response.status_code == 200, response.text
        assert len(pacs.search(f"/studies/{spec.study_uid}/instances")) == 2


class TestSomeInstancesFail:
    def test_a_non_dicom_part_gives_202_with_its_failure_and_the_good_instance_is_stored(self, pacs: Pacs) -> None:
        _, (good,) = sample_study()
        response = pacs.stow([good, b"this is a text file, not DICOM" * 20])
        assert response.status_code == 202, response.text
        answer = response.json()
        assert [first(item, SOP_UID) for item in sequence(answer, REFERENCED)] == [uids_of(good)[2]]
        assert len(sequence(answer, FAILED)) == 1
        _assert_failure_items_explain(answer)
        assert pacs.stored_bytes(good) == good

    def test_an_instance_of_another_study_than_the_url_fails_and_is_not_stored(self, pacs: Pacs) -> None:
        spec, (matching,) = sample_study()
        _, (stranger,) = sample_study()
        response = pacs.stow([matching, stranger], study=spec.study_uid)
        assert response.status_code == 202, response.text
        answer = response.json()
        assert _failed_uids(answer) == [uids_of(stranger)[2]]
        _assert_failure_items_explain(answer)
        assert uids_of(stranger)[0] in first(sequence(answer, FAILED)[0], COMMENT)
        assert pacs.has_instance(uids_of(matching)[2])
        assert not pacs.has_instance(uids_of(stranger)[2])

    def test_a_body_cut_off_inside_the_second_part_keeps_the_first(self, pacs: Pacs) -> None:
        _, (good, cut) = sample_study(instances=2, size=64)
        body, content_type = multipart_body([good, cut])
        response = _raw_post(pacs, body[: body.index(cut) + len(cut) // 2], content_type)
        assert response.status_code == 202, response.text
        answer = response.json()
        assert [first(item, SOP_UID) for item in sequence(answer, REFERENCED)] == [uids_of(good)[2]]
        assert pacs.has_instance(uids_of(good)[2])
        assert not pacs.has_instance(uids_of(cut)[2])


class TestNothingStored:
    def test_only_bad_instances_give_409_with_every_failure(self, pacs: Pacs, unchanged: Callable[[], None]) -> None:
        response = pacs.stow([b"\x00" * 300, b"not dicom either"])
        assert response.status_code == 409, response.text
        answer = response.json()
        assert REFERENCED not in answer
        assert len(sequence(answer, FAILED)) == 2
        _assert_failure_items_explain(answer)
        unchanged()

    def test_instance_of_another_study_than_the_url_gives_409(self, pacs: Pacs, unchanged: Callable[[], None]) -> None:
        _, (data,) = sample_study()
        response = pacs.stow([data], study=new_uid())
        assert response.status_code == 409, response.text
        assert _failed_uids(response.json()) == [uids_of(data)[2]]
        unchanged()

    @pytest.mark.parametrize("kind", ["native", "encapsulated"])
    def test_truncated_pixel_data_fails_and_is_not_stored(
        self, pacs: Pacs, unchanged: Callable[[], None], kind: str
    ) -> None:
        data = sample_study(size=64)[1][0] if kind == "native" else bundled("examples_ybr_color.dcm")
        cut = data[: len(data) - 1000]
        response = pacs.stow([cut])
        assert response.status_code == 409, response.text
        answer = response.json()
        assert _failed_uids(answer) == [uids_of(data)[2]]
        assert "truncated" in first(sequence(answer, FAILED)[0], COMMENT)
        assert not pacs.has_instance(uids_of(data)[2])
        unchanged()

    def test_header_without_required_uid_fails(self, pacs: Pacs, unchanged: Callable[[], None]) -> None:
        _, (data,) = sample_study()
        ds = dataset_of(data)
        del ds.StudyInstanceUID
        response = pacs.stow([part10(ds)])
        assert response.status_code == 409, response.text
        assert "StudyInstanceUID" in first(sequence(response.json(), FAILED)[0], COMMENT)
        unchanged()


class TestMalformedRequest:
    def test_missing_final_delimiter_gives_400_and_stores_nothing(
        self, pacs: Pacs, unchanged: Callable[[], None]
    ) -> None:
        _, (data,) = sample_study()
        body, content_type = multipart_body([data])
        response = _raw_post(pacs, body[: body.rindex(b"\r\n--")], content_type)
        assert response.status_code == 400, response.text
        assert not pacs.has_instance(uids_of(data)[2])
        unchanged()

    @pytest.mark.parametrize(
        "body",
        [b"garbage that has no boundary at all", b"", b"--webpacs-test-boundary--\r\n"],
        ids=["garbage", "empty-body", "no-parts"],
    )
    def test_a_body_without_instances_gives_400(self, pacs: Pacs, unchanged: Callable[[], None], body: bytes) -> None:
        response = _raw_post(pacs, body, 'multipart/related; type="application/dicom"; boundary=webpacs-test-boundary')
        assert response.status_code == 400, response.text
        unchanged()

    def test_multipart_without_boundary_gives_400(self, pacs: Pacs, unchanged: Callable[[], None]) -> None:
        response = _raw_post(pacs, b"--x\r\n\r\n--x--", 'multipart/related; type="application/dicom"')
        assert response.status_code == 400, response.text
        unchanged()

    @pytest.mark.parametrize(
        "content_type",
        [
            "application/json",
            "text/plain",
            'multipart/related; type="image/jpeg"; boundary=b',
            "multipart/related; type*; type*0=x",  # RFC 2231 parameters the email parser trips over
        ],
    )
    def test_other_media_types_give_415(self, pacs: Pacs, unchanged: Callable[[], None], content_type: str) -> None:
        _, (data,) = sample_study()
        body = b'{"00100010": {"vr": "PN"}}' if content_type == "application/json" else data
        response = _raw_post(pacs, body, content_type)
        assert response.status_code == 415, response.text
        assert response.json()["detail"]
        assert not pacs.has_instance(uids_of(data)[2])
        unchanged()


class TestResending:
    def test_identical_bytes_succeed_without_a_duplicate(self, pacs: Pacs) -> None:
        spec, files = sample_study(instances=2)
        pacs.store(*files)
        counts, blobs = pacs.counts(), pacs.blob_files()
        answer = pacs.store(*files)
        assert [first(item, SOP_UID) for item in sequence(answer, REFERENCED)] == [uids_of(data)[2] for data in files]
        assert pacs.counts() == counts
        assert pacs.blob_files() == blobs
        (study,) = pacs.search("/studies", {"StudyInstanceUID": spec.study_uid})
        assert first(study, "00201208") == 2  # NumberOfStudyRelatedInstances

    def test_same_sop_instance_with_other_bytes_replaces_it(self, pacs: Pacs) -> None:
        """Documented policy: the newest bytes received for a SOP Instance UID are the ones served."""
        spec, (old,) = sample_study()
        pacs.store(old)
        counts, blob_count = pacs.counts(), len(pacs.blob_files())
        ds = dataset_of(old)
        ds.SeriesDescription = "corrected description"
        new = part10(ds)
        assert new != old
        pacs.store(new)
        assert pacs.stored_bytes(new) == new
        assert pacs.counts() == counts
        assert len(pacs.blob_files()) == blob_count, "the replaced instance's blob was not removed"
        (series,) = pacs.search(f"/studies/{spec.study_uid}/series")
        assert first(series, "0008103E") == "corrected description"
