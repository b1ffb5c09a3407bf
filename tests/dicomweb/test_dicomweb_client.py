"""Interoperability: dicomweb-client (a client nobody here wrote) drives STOW, QIDO and WADO."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pytest
from dicomdata import (
    Patient,
    SeriesSpec,
    StudySpec,
    build_instances,
    bundled,
    dataset_of,
    expected_metadata,
    frames_of,
    new_uid,
    normalize_metadata,
    part10,
    uids_of,
)
from dicomweb_client.api import DICOMwebClient
from live_pacs import first, sequence
from pydicom.dataset import Dataset

if TYPE_CHECKING:
    from live_pacs import Pacs


@dataclass(frozen=True)
class Stored:
    """What the client stored: two SMITH* studies of generated images, and bundled compressed files."""

    studies: tuple[StudySpec, ...]
    datasets: dict[str, Dataset]  # SOP Instance UID -> what the client sent
    files: dict[str, bytes]  # bundled file name -> bytes (stored by the client as datasets)


@pytest.fixture(scope="module")
def client(pacs: Pacs) -> DICOMwebClient:
    return DICOMwebClient(url=f"{pacs.url}/dicomweb", headers=pacs.auth())


@pytest.fixture(scope="module")
def stored(client: DICOMwebClient) -> Stored:
    studies = (
        StudySpec(
            Patient("SMITH^ALICE", f"DWC-{new_uid()[-8:]}"),
            "20210707",
            "DWC0001",
            (SeriesSpec("CT", 2, 1, size=64), SeriesSpec("CT", 1, 2, size=64, frames=4)),
        ),
        StudySpec(Patient("SMITHERS^BOB", f"DWC-{new_uid()[-8:]}"), "20210808", "DWC0002", (SeriesSpec("MR", 2, 1),)),
    )
    datasets = {}
    for spec in studies:
        instances = [dataset_of(part10(ds)) for ds in build_instances(spec)]
        answer = client.store_instances(datasets=instances)
        assert len(answer.ReferencedSOPSequence) == len(instances)
        assert "FailedSOPSequence" not in answer
        datasets.update({str(ds.SOPInstanceUID): ds for ds in instances})
    files = {
        name: bundled(name) for name in ("examples_ybr_color.dcm", "MR_small_jp2klossless.dcm", "SC_rgb_rle_2frame.dcm")
    }
    answer = client.store_instances(datasets=[dataset_of(data) for data in files.values()])
    assert len(answer.ReferencedSOPSequence) == len(files)
    return Stored(studies, datasets, files)


class TestStoreAndSearch:
    def test_search_filter_with_a_wildcard_finds_both_smith_studies(
        self, client: DICOMwebClient, stored: Stored
    ) -> None:
        results = client.search_for_studies(search_filters={"PatientName": "SMITH*"})
        assert {first(row, "0020000D") for row in results} == {spec.study_uid for spec in stored.studies}

    def test_search_filters_by_id_and_fields(self, client: DICOMwebClient, stored: Stored) -> None:
        spec = stored.studies[0]
        (row,) = client.search_for_studies(search_filters={"PatientID": spec.patient.id}, fields=["StudyDescription"])
        assert first(row, "00081030") == "CT study of " + spec.patient.id
        assert first(row, "00201208") == spec.instance_count

    def test_search_with_limit_and_offset(self, client: DICOMwebClient, stored: Stored) -> None:
        pages = [
            client.search_for_studies(search_filters={"PatientName": "SMITH*"}, limit=1, offset=offset)
            for offset in (0, 1, 2)
        ]
        assert [len(page) for page in pages] == [1, 1, 0]
        assert first(pages[0][0], "0020000D") != first(pages[1][0], "0020000D")

    def test_search_for_series_and_instances(self, client: DICOMwebClient, stored: Stored) -> None:
        spec = stored.studies[0]
        series = client.search_for_series(study_instance_uid=spec.study_uid)
        assert {first(row, "0020000E") for row in series} == {s.series_uid for s in spec.series}
        instances = client.search_for_instances(
            study_instance_uid=spec.study_uid, series_instance_uid=spec.series[0].series_uid
        )
        assert len(instances) == spec.series[0].instances
        everywhere = client.search_for_instances(search_filters={"PatientID": spec.patient.id})
        assert len(everywhere) == spec.instance_count


class TestRetrieve:
    def test_study_metadata_equals_pydicom_json(self, client: DICOMwebClient, stored: Stored) -> None:
        spec = stored.studies[0]
        metadata = client.retrieve_study_metadata(study_instance_uid=spec.study_uid)
        assert len(metadata) == spec.instance_count
        for item in metadata:
            sent = stored.datasets[first(item, "00080018")]
            assert normalize_metadata(item) == expected_metadata(part10(sent))

    def test_retrieve_instance_gives_the_same_data_set(self, client: DICOMwebClient, stored: Stored) -> None:
        sent = next(iter(stored.datasets.values()))
        received = client.retrieve_instance(sent.StudyInstanceUID, sent.SeriesInstanceUID, sent.SOPInstanceUID)
        assert received.PatientName == sent.PatientName
        np.testing.assert_array_equal(received.pixel_array, sent.pixel_array)

    def test_retrieve_compressed_instance_as_stored(self, client: DICOMwebClient, stored: Stored) -> None:
        data = stored.files["MR_small_jp2klossless.dcm"]
        study, series, sop = uids_of(data)
        received = client.retrieve_instance(study, series, sop, media_types=(("application/dicom", "*"),))
        assert received.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.90"
        np.testing.assert_array_equal(received.pixel_array, dataset_of(data).pixel_array)

    def test_native_frames(self, client: DICOMwebClient, stored: Stored) -> None:
        spec = stored.studies[0]
        multiframe = next(ds for ds in stored.datasets.values() if ds.SeriesInstanceUID == spec.series[1].series_uid)
        frames = client.retrieve_instance_frames(
            spec.study_uid, spec.series[1].series_uid, multiframe.SOPInstanceUID, frame_numbers=[2, 4]
        )
        expected = frames_of(part10(multiframe))
        assert frames == [expected[1], expected[3]]

    @pytest.mark.parametrize(
        ("name", "media_type"),
        [
            ("examples_ybr_color.dcm", "image/jpeg"),
            ("MR_small_jp2klossless.dcm", "image/jp2"),
            ("SC_rgb_rle_2frame.dcm", "image/x-dicom-rle"),
        ],
    )
    def test_compressed_frames_with_an_explicit_media_type(
        self, client: DICOMwebClient, stored: Stored, name: str, media_type: str
    ) -> None:
        data = stored.files[name]
        study, series, sop = uids_of(data)
        frames = client.retrieve_instance_frames(study, series, sop, frame_numbers=[1], media_types=(media_type,))
        assert frames == frames_of(data)[:1]

    def test_bulk_data_uri_from_metadata(self, pacs: Pacs, client: DICOMwebClient, stored: Stored) -> None:
        # The metadata is read with a client that sends the port in its Host header: dicomweb-client
        # sends "Host: 127.0.0.1" alone, so URIs made from it would name port 80 (as for any proxy).
        spec = stored.studies[1]
        item = pacs.http.get(f"/dicomweb/studies/{spec.study_uid}/metadata").json()[0]
        sent = stored.datasets[first(item, "00080018")]
        (pixels,) = client.retrieve_bulkdata(item["7FE00010"]["BulkDataURI"])
        assert pixels == sent.PixelData


class TestStoreResponse:
    def test_a_study_mismatch_is_reported_as_a_failed_sop(self, client: DICOMwebClient, stored: Stored) -> None:
        from requests.exceptions import HTTPError

        ds = dataset_of(part10(build_instances(stored.studies[1])[0]))
        with pytest.raises(HTTPError) as raised:
            client.store_instances(datasets=[ds], study_instance_uid=stored.studies[0].study_uid)
        assert raised.value.response.status_code == 409
        answer = raised.value.response.json()
        assert first(sequence(answer, "00081198")[0], "00081155") == ds.SOPInstanceUID
