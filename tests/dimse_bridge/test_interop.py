"""The bridge end to end: real DCMTK tools and pynetdicom peers -> bridge process -> server process."""

from __future__ import annotations

import socket
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np
import pydicom
import pytest
from dimse_helpers import (
    bundled,
    copy_as_new_instance,
    echo_ok,
    free_port,
    run,
    start_bridge,
    stop,
    wait_for_port,
)
from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pynetdicom import AE, AllStoragePresentationContexts, build_role, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]  # generated at import
    CTImageStorage,
    MRImageStorage,
    PatientRootQueryRetrieveInformationModelFind,
    SecondaryCaptureImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from storage.dicom.multipart import MultipartReader, multipart_boundary

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from dimse_helpers import LiveServer, RunningBridge

pytestmark = [pytest.mark.dcmtk, pytest.mark.usefixtures("dcmtk")]


def api(server: LiveServer) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.token}"}, timeout=60)


def qido(server: LiveServer, path: str, **params: str) -> list[dict[str, Any]]:
    with api(server) as client:
        response = client.get(f"/dicomweb{path}", params=params)
    assert response.status_code == 200, response.text
    return response.json() if response.content else []


def wado_instances(server: LiveServer, path: str, spool: Path) -> list[pydicom.Dataset]:
    """Every instance of a WADO-RS retrieve, as stored (transfer-syntax=*)."""
    headers = {"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'}
    datasets: list[Dataset] = []
    with api(server) as client, client.stream("GET", f"/dicomweb{path}", headers=headers) as response:
        assert response.status_code == 200
        with MultipartReader(multipart_boundary(response.headers["content-type"]), spool) as reader:
            for chunk in response.iter_bytes():
                datasets += [pydicom.dcmread(part.path) for part in reader.feed(chunk)]
            reader.finish()
    return datasets


def register(server: LiveServer, ae_title: str, port: int, **flags: bool) -> None:
    with api(server) as client:
        client.delete(f"/api/dicom-nodes/{ae_title}")
        response = client.post(
            "/api/dicom-nodes", json={"ae_title": ae_title, "host": "127.0.0.1", "port": port, **flags}
        )
    assert response.status_code == 201, response.text


def storescu(bridge: RunningBridge, *files: Path, flags: tuple[str, ...] = (), calling: str = "STORESCU") -> None:
    result = run(
        "storescu", "-aet", calling, "-aec", bridge.ae_title, *flags, "127.0.0.1", str(bridge.port), *map(str, files)
    )
    assert result.returncode == 0, result.stdout + result.stderr


def make_study(directory: Path, count: int, *, source: str = "CT_small.dcm", **attributes: object) -> list[Path]:
    """`count` copies of a bundled file as one new study and series."""
    study, series = generate_uid(), generate_uid()
    paths = []
    for n in range(count):
        path = directory / f"{study[-12:]}-{n}.dcm"
        copy_as_new_instance(bundled(source), path, study=study, series=series, InstanceNumber=n + 1, **attributes)
        paths.append(path)
    return paths


class TestEcho:
    def test_echoscu_gets_success(self, bridge: RunningBridge) -> None:
        result = run("echoscu", "-aec", "WEBPACS", "127.0.0.1", str(bridge.port))
        assert result.returncode == 0, result.stderr

    def test_wrong_called_ae_title_is_rejected(self, bridge: RunningBridge) -> None:
        result = run("echoscu", "-aec", "SOMEONE", "127.0.0.1", str(bridge.port))
        assert result.returncode != 0
        assert "Called AE Title Not Recognized" in result.stdout + result.stderr


class TestStore:
    @pytest.mark.parametrize(
        ("source", "flags"),
        [
            ("CT_small.dcm", ()),
            ("MR_small_RLE.dcm", ("-xr",)),
            ("MR_small_jp2klossless.dcm", ("-xv",)),
            ("SC_rgb_jpeg_gdcm.dcm", ("-xs",)),
            ("SC_rgb_jpeg_dcmtk.dcm", ("-xy",)),
        ],
    )
    def test_instance_is_archived_in_the_syntax_it_was_sent_in(
        self, bridge: RunningBridge, live_server: LiveServer, tmp_path: Path, source: str, flags: tuple[str, ...]
    ) -> None:
        [path] = make_study(tmp_path, 1, source=source)
        original = pydicom.dcmread(path)
        storescu(bridge, path, flags=flags)
        [stored] = wado_instances(live_server, f"/studies/{original.StudyInstanceUID}", tmp_path)
        assert stored.SOPInstanceUID == original.SOPInstanceUID
        assert stored.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
        assert stored.PixelData == original.PixelData

    def test_four_parallel_associations_store_a_whole_study(
        self, bridge: RunningBridge, live_server: LiveServer, tmp_path: Path
    ) -> None:
        paths = make_study(tmp_path, 24)
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda part: storescu(bridge, *part), [paths[n::4] for n in range(4)]))
        study = pydicom.dcmread(paths[0], stop_before_pixels=True).StudyInstanceUID
        assert len(qido(live_server, f"/studies/{study}/instances")) == 24

    def test_failed_store_is_reported_to_the_modality(self, bridge: RunningBridge, tmp_path: Path) -> None:
        path = tmp_path / "bad.dcm"
        dataset = pydicom.dcmread(bundled("CT_small.dcm"))
        with pytest.warns(UserWarning, match="Invalid value for VR UI"):
            dataset.SOPInstanceUID = UID("not a uid")
            dataset.file_meta.MediaStorageSOPInstanceUID = UID("1.2.3")
            dataset.save_as(path, enforce_file_format=True)
        result = run("storescu", "-v", "-aec", "WEBPACS", "127.0.0.1", str(bridge.port), str(path))
        [response] = [line for line in result.stderr.splitlines() if "Received Store Response" in line]
        assert "Success" not in response
        assert result.returncode != 0


@pytest.fixture(scope="module")
def find_data(bridge: RunningBridge, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    directory = tmp_path_factory.mktemp("find")
    patient = "FIND-" + generate_uid()[-8:]
    first = make_study(directory, 3, PatientID=patient, PatientName="MÜLLER^JÖRG", SpecificCharacterSet="ISO_IR 192")
    second = make_study(
        directory,
        2,
        source="MR_small.dcm",
        PatientID=patient,
        PatientName="MÜLLER^JÖRG",
        SpecificCharacterSet="ISO_IR 192",
    )
    storescu(bridge, *first, *second)
    a = pydicom.dcmread(first[0], stop_before_pixels=True)
    b = pydicom.dcmread(second[0], stop_before_pixels=True)
    return {
        "patient": patient,
        "study_ct": a.StudyInstanceUID,
        "series_ct": a.SeriesInstanceUID,
        "study_mr": b.StudyInstanceUID,
        "sop_ct": a.SOPInstanceUID,
    }


@pytest.fixture(scope="module")
def large_study(bridge: RunningBridge, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A 40-instance study: enough responses for a C-CANCEL to land while they are being sent."""
    paths = make_study(tmp_path_factory.mktemp("large"), 40)
    storescu(bridge, *paths)
    return str(pydicom.dcmread(paths[0], stop_before_pixels=True).StudyInstanceUID)


def findscu(
    bridge: RunningBridge, directory: Path, root: str, *keys: str, extra: tuple[str, ...] = ()
) -> list[Dataset]:
    result = run(
        "findscu",
        "-aec",
        "WEBPACS",
        root,
        "-X",
        "-od",
        str(directory),
        *extra,
        *[arg for key in keys for arg in ("-k", key)],
        "127.0.0.1",
        str(bridge.port),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return [pydicom.dcmread(path) for path in sorted(directory.glob("rsp*.dcm"))]


class TestFind:
    def test_patient_level_counts_the_patients_studies(
        self, bridge: RunningBridge, find_data: dict[str, str], tmp_path: Path
    ) -> None:
        [response] = findscu(
            bridge,
            tmp_path,
            "-P",
            "QueryRetrieveLevel=PATIENT",
            f"PatientID={find_data['patient']}",
            "PatientName",
            "NumberOfPatientRelatedStudies",
            "NumberOfPatientRelatedInstances",
        )
        assert response.NumberOfPatientRelatedStudies == 2
        assert response.NumberOfPatientRelatedInstances == 5

    @pytest.mark.parametrize("root", ["-S", "-P"])
    def test_study_level_answers_in_both_roots_with_exactly_the_requested_keys(
        self, bridge: RunningBridge, find_data: dict[str, str], tmp_path: Path, root: str
    ) -> None:
        responses = findscu(
            bridge,
            tmp_path,
            root,
            "QueryRetrieveLevel=STUDY",
            f"PatientID={find_data['patient']}",
            "StudyInstanceUID",
            "ModalitiesInStudy",
            "NumberOfStudyRelatedInstances",
        )
        assert {r.StudyInstanceUID: r.ModalitiesInStudy for r in responses} == {
            find_data["study_ct"]: "CT",
            find_data["study_mr"]: "MR",
        }
        assert {e.keyword for e in responses[0]} == {
            "SpecificCharacterSet",
            "QueryRetrieveLevel",
            "PatientID",
            "StudyInstanceUID",
            "ModalitiesInStudy",
            "NumberOfStudyRelatedInstances",
        }

    def test_utf8_name_reaches_findscu_intact(
        self, bridge: RunningBridge, find_data: dict[str, str], tmp_path: Path
    ) -> None:
        responses = findscu(
            bridge,
            tmp_path,
            "-S",
            "QueryRetrieveLevel=STUDY",
            "SpecificCharacterSet=ISO_IR 192",
            "PatientName=MÜLLER*",
            f"PatientID={find_data['patient']}",
        )
        assert len(responses) == 2
        assert responses[0].SpecificCharacterSet == "ISO_IR 192"
        assert str(responses[0].PatientName) == "MÜLLER^JÖRG"

    def test_series_level_lists_the_series_of_a_study(
        self, bridge: RunningBridge, find_data: dict[str, str], tmp_path: Path
    ) -> None:
        [response] = findscu(
            bridge,
            tmp_path,
            "-S",
            "QueryRetrieveLevel=SERIES",
            f"StudyInstanceUID={find_data['study_ct']}",
            "SeriesInstanceUID",
            "Modality",
        )
        assert (response.SeriesInstanceUID, response.Modality) == (find_data["series_ct"], "CT")
        assert response.StudyInstanceUID == find_data["study_ct"]

    def test_image_level_in_patient_root_lists_the_instances(
        self, bridge: RunningBridge, find_data: dict[str, str], tmp_path: Path
    ) -> None:
        responses = findscu(
            bridge,
            tmp_path,
            "-P",
            "QueryRetrieveLevel=IMAGE",
            f"PatientID={find_data['patient']}",
            f"StudyInstanceUID={find_data['study_ct']}",
            f"SeriesInstanceUID={find_data['series_ct']}",
            "SOPInstanceUID",
            "InstanceNumber",
        )
        assert sorted(int(r.InstanceNumber) for r in responses) == [1, 2, 3]
        assert all(r.PatientID == find_data["patient"] for r in responses)

    def test_findscu_cancel_stops_the_responses(self, paged_bridge: RunningBridge, large_study: str) -> None:
        result = run(
            "findscu",
            "-v",
            "-aec",
            "WEBPACS",
            "-S",
            "--cancel",
            "1",
            "-k",
            "QueryRetrieveLevel=IMAGE",
            "-k",
            f"StudyInstanceUID={large_study}",
            "-k",
            "SOPInstanceUID",
            "127.0.0.1",
            str(paged_bridge.port),
        )
        output = result.stdout + result.stderr
        assert result.returncode == 0, output
        assert "Cancel: MatchingTerminatedDueToCancelRequest" in output
        assert output.count("(Pending)") < 40


@pytest.fixture
def paged_bridge(live_server: LiveServer, tmp_path: Path) -> Iterator[RunningBridge]:
    """A bridge reading QIDO-RS 2 results a page, so matches keep coming while a C-CANCEL travels.

    With one page for all 40 matches, every Pending response can leave before the peer's C-CANCEL
    arrives, and the test would depend on timing.
    """
    running = start_bridge(live_server, tmp_path, "--accept-unregistered", "--qido-page-size", "2")
    yield running
    stop(running.process)


class TestCancelWithPynetdicom:
    def test_c_find_cancelled_after_the_first_match_ends_with_cancel(
        self, paged_bridge: RunningBridge, large_study: str
    ) -> None:
        ae = AE("CANCELSCU")
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
        assoc = ae.associate("127.0.0.1", paged_bridge.port, ae_title="WEBPACS")
        query = Dataset()
        query.QueryRetrieveLevel = "IMAGE"
        query.StudyInstanceUID = large_study
        query.SOPInstanceUID = ""
        statuses = []
        # pynetdicom's SCP forgets a C-CANCEL that arrives before it starts serving the request,
        # so the cancel goes once the first match is in, as a user's would.
        for status, _ in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind, msg_id=7):
            statuses.append(status.Status)
            if len(statuses) == 1:
                assoc.send_c_cancel(7, assoc.accepted_contexts[0].context_id)
        assoc.release()
        assert statuses[-1] == 0xFE00
        assert statuses.count(0xFF00) < 40

    def test_c_get_cancelled_during_the_first_sub_operation_reports_the_remaining(
        self, bridge: RunningBridge, find_data: dict[str, str]
    ) -> None:
        ae = AE("CANCELGET")
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
        ae.add_requested_context(CTImageStorage)
        stores: list[str] = []
        holder: list[Any] = []

        def on_store(event: Any) -> int:
            stores.append(str(event.request.AffectedSOPInstanceUID))
            if len(stores) == 1:
                holder[0].send_c_cancel(9, holder[1])
            return 0x0000

        assoc = ae.associate(
            "127.0.0.1",
            bridge.port,
            ae_title="WEBPACS",
            ext_neg=[build_role(CTImageStorage, scp_role=True)],
            evt_handlers=[(evt.EVT_C_STORE, on_store)],
        )
        get_context = next(
            cx for cx in assoc.accepted_contexts if cx.abstract_syntax == StudyRootQueryRetrieveInformationModelGet
        )
        holder[:] = [assoc, get_context.context_id]
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = find_data["study_ct"]
        final = [status for status, _ in assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet, msg_id=9)][
            -1
        ]
        assoc.release()
        assert final.Status == 0xFE00
        assert len(stores) == 1
        assert final.NumberOfRemainingSuboperations == 2


@pytest.fixture
def storescp(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """DCMTK storescp as a C-MOVE destination, AE STORESCP, files into a folder."""
    port = free_port()
    received = tmp_path / "received"
    received.mkdir()
    log = tmp_path / "storescp.log"
    process = subprocess.Popen(
        ["storescp", "-aet", "STORESCP", "+xa", "-od", str(received), str(port)],
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )
    wait_for_port(port, process, log)
    yield port, received
    stop(process)


class TestMove:
    def test_study_goes_to_the_registered_destination(
        self, bridge: RunningBridge, live_server: LiveServer, storescp: tuple[int, Path], tmp_path: Path
    ) -> None:
        port, received = storescp
        register(live_server, "STORESCP", port)
        paths = make_study(tmp_path, 4)
        storescu(bridge, *paths)
        study = pydicom.dcmread(paths[0]).StudyInstanceUID
        result = run(
            "movescu",
            "-aec",
            "WEBPACS",
            "-aem",
            "STORESCP",
            "-S",
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            f"StudyInstanceUID={study}",
            "127.0.0.1",
            str(bridge.port),
        )
        assert result.returncode == 0, result.stdout + result.stderr
        got = sorted(pydicom.dcmread(path).SOPInstanceUID for path in received.iterdir())
        assert got == sorted(pydicom.dcmread(path).SOPInstanceUID for path in paths)

    def test_compressed_instance_goes_as_stored_when_accepted(
        self, bridge: RunningBridge, live_server: LiveServer, storescp: tuple[int, Path], tmp_path: Path
    ) -> None:
        port, received = storescp
        register(live_server, "STORESCP", port)
        [path] = make_study(tmp_path, 1, source="MR_small_jp2klossless.dcm")
        storescu(bridge, path, flags=("-xv",))
        original = pydicom.dcmread(path)
        result = run(
            "movescu",
            "-aec",
            "WEBPACS",
            "-aem",
            "STORESCP",
            "-S",
            "-k",
            "QueryRetrieveLevel=IMAGE",
            "-k",
            f"StudyInstanceUID={original.StudyInstanceUID}",
            "-k",
            f"SeriesInstanceUID={original.SeriesInstanceUID}",
            "-k",
            f"SOPInstanceUID={original.SOPInstanceUID}",
            "127.0.0.1",
            str(bridge.port),
        )
        assert result.returncode == 0, result.stdout + result.stderr
        [arrived] = [pydicom.dcmread(p) for p in received.iterdir()]
        assert arrived.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
        assert arrived.PixelData == original.PixelData

    def test_unknown_destination_is_refused_with_a801(self, bridge: RunningBridge, find_data: dict[str, str]) -> None:
        result = run(
            "movescu",
            "-v",
            "-aec",
            "WEBPACS",
            "-aem",
            "NOBODY",
            "-S",
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            f"StudyInstanceUID={find_data['study_ct']}",
            "127.0.0.1",
            str(bridge.port),
        )
        assert "Refused: MoveDestinationUnknown" in result.stdout + result.stderr


class TestGet:
    def test_getscu_receives_every_instance_of_a_series(
        self, bridge: RunningBridge, find_data: dict[str, str], tmp_path: Path
    ) -> None:
        result = run(
            "getscu",
            "-aec",
            "WEBPACS",
            "-S",
            "-k",
            "QueryRetrieveLevel=SERIES",
            "-k",
            f"StudyInstanceUID={find_data['study_ct']}",
            "-k",
            f"SeriesInstanceUID={find_data['series_ct']}",
            "-od",
            str(tmp_path),
            "127.0.0.1",
            str(bridge.port),
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert len(list(tmp_path.iterdir())) == 3

    def test_patient_root_get_of_a_patient_gets_both_studies(
        self, bridge: RunningBridge, find_data: dict[str, str], tmp_path: Path
    ) -> None:
        result = run(
            "getscu",
            "-aec",
            "WEBPACS",
            "-P",
            "-k",
            "QueryRetrieveLevel=PATIENT",
            "-k",
            f"PatientID={find_data['patient']}",
            "-od",
            str(tmp_path),
            "127.0.0.1",
            str(bridge.port),
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert len(list(tmp_path.iterdir())) == 5


def _implicit_only_scp(received: list[Dataset]) -> AE:
    ae = AE("IMPLICIT")
    for context in AllStoragePresentationContexts:
        if context.abstract_syntax:
            ae.add_supported_context(context.abstract_syntax, ImplicitVRLittleEndian)

    def on_store(event: Any) -> int:
        dataset = event.dataset
        dataset.file_meta = event.file_meta
        received.append(dataset)
        return 0x0000

    ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    return ae


class TestConversionForAnImplicitOnlyPeer:
    @pytest.fixture
    def compressed_study(self, bridge: RunningBridge, tmp_path: Path) -> list[Dataset]:
        study = generate_uid()
        sources = [("MR_small_jp2klossless.dcm", "-xv"), ("MR_small_RLE.dcm", "-xr"), ("SC_rgb_jpeg_gdcm.dcm", "-xs")]
        originals = []
        for n, (source, flag) in enumerate(sources):
            path = tmp_path / f"{n}.dcm"
            originals.append(copy_as_new_instance(bundled(source), path, study=study))
            storescu(bridge, path, flags=(flag,))
        return originals

    def test_c_move_decompresses_to_implicit_vr_with_identical_pixels(
        self, bridge: RunningBridge, live_server: LiveServer, compressed_study: list[Dataset]
    ) -> None:
        received: list[Dataset] = []
        peer = _implicit_only_scp(received)
        try:
            port = peer._servers[0].server_address[1]  # the port the OS picked
            register(live_server, "IMPLICIT", port)
            ae = AE("MOVER")
            ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
            assoc = ae.associate("127.0.0.1", bridge.port, ae_title="WEBPACS")
            query = Dataset()
            query.QueryRetrieveLevel = "STUDY"
            query.StudyInstanceUID = compressed_study[0].StudyInstanceUID
            final = [s for s, _ in assoc.send_c_move(query, "IMPLICIT", StudyRootQueryRetrieveInformationModelMove)][-1]
            assoc.release()
        finally:
            peer.shutdown()
        assert final.Status == 0x0000
        by_uid = {str(d.SOPInstanceUID): d for d in received}
        assert set(by_uid) == {str(d.SOPInstanceUID) for d in compressed_study}
        for original in compressed_study:
            arrived = by_uid[str(original.SOPInstanceUID)]
            assert arrived.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
            assert np.array_equal(arrived.pixel_array, original.pixel_array)

    def test_c_get_with_only_uncompressed_contexts_gets_decompressed_instances(
        self, bridge: RunningBridge, compressed_study: list[Dataset]
    ) -> None:
        received: list[Dataset] = []

        def on_store(event: Any) -> int:
            dataset = event.dataset
            dataset.file_meta = event.file_meta
            received.append(dataset)
            return 0x0000

        ae = AE("GETTER")
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
        roles: list[Any] = []
        for sop_class in (MRImageStorage, SecondaryCaptureImageStorage):
            ae.add_requested_context(sop_class, [ExplicitVRLittleEndian])
            roles.append(build_role(sop_class, scp_role=True))
        assoc = ae.associate(
            "127.0.0.1", bridge.port, ae_title="WEBPACS", ext_neg=roles, evt_handlers=[(evt.EVT_C_STORE, on_store)]
        )
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = compressed_study[0].StudyInstanceUID
        final = [s for s, _ in assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet)][-1]
        assoc.release()
        assert final.Status == 0x0000
        assert len(received) == 3
        assert {str(d.file_meta.TransferSyntaxUID) for d in received} == {ExplicitVRLittleEndian}

    def test_instance_without_an_acceptable_context_is_a_counted_failure(
        self, bridge: RunningBridge, compressed_study: list[Dataset]
    ) -> None:
        ae = AE("PARTIAL")
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
        ae.add_requested_context(MRImageStorage, [ImplicitVRLittleEndian])
        assoc = ae.associate(
            "127.0.0.1",
            bridge.port,
            ae_title="WEBPACS",
            ext_neg=[build_role(MRImageStorage, scp_role=True)],
            evt_handlers=[(evt.EVT_C_STORE, lambda event: 0x0000)],
        )
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = compressed_study[0].StudyInstanceUID
        final, identifier = [(s, i) for s, i in assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet)][-1]
        assoc.release()
        assert final.Status == 0xB000
        assert (final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations) == (2, 1)
        assert identifier is not None
        assert identifier.FailedSOPInstanceUIDList == compressed_study[2].SOPInstanceUID


class TestRegisteredCallersOnly:
    @pytest.fixture
    def strict_bridge(self, live_server: LiveServer, tmp_path: Path) -> Iterator[RunningBridge]:
        running = start_bridge(live_server, tmp_path)
        yield running
        stop(running.process)

    def test_unregistered_caller_is_rejected_and_registered_one_accepted(
        self, strict_bridge: RunningBridge, live_server: LiveServer
    ) -> None:
        assert not echo_ok(strict_bridge.port, calling="STRANGER")
        result = run("echoscu", "-aet", "STRANGER", "-aec", "WEBPACS", "127.0.0.1", str(strict_bridge.port))
        # PS3.8 §9.3.4: an A-ASSOCIATE-RJ naming the reason, not an abort.
        assert "Calling AE Title Not Recognized" in result.stdout + result.stderr
        register(live_server, "KNOWNCT", 104)
        assert echo_ok(strict_bridge.port, calling="KNOWNCT")

    def test_caller_without_find_permission_is_refused(
        self, strict_bridge: RunningBridge, live_server: LiveServer
    ) -> None:
        register(live_server, "NOFIND", 104, allow_find=False)
        ae = AE("NOFIND")
        ae.add_requested_context(PatientRootQueryRetrieveInformationModelFind)
        assoc = ae.associate("127.0.0.1", strict_bridge.port, ae_title="WEBPACS")
        query = Dataset()
        query.QueryRetrieveLevel = "PATIENT"
        query.PatientID = "*"
        statuses = [s.Status for s, _ in assoc.send_c_find(query, PatientRootQueryRetrieveInformationModelFind)]
        assoc.release()
        assert statuses == [0x0124]


class TestMisbehavingPeers:
    def test_garbage_and_aborts_leave_the_bridge_serving(self, bridge: RunningBridge) -> None:
        with socket.create_connection(("127.0.0.1", bridge.port)) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + bytes(range(256)) * 8)
        ae = AE("ABORTER")
        ae.add_requested_context(CTImageStorage)
        assoc = ae.associate("127.0.0.1", bridge.port, ae_title="WEBPACS")
        assoc.abort()
        with socket.create_connection(("127.0.0.1", bridge.port)) as sock:
            sock.sendall(b"\x01\x00\x00\x00\x10\x00")  # an A-ASSOCIATE-RQ header cut short
        threads = [threading.Thread(target=echo_ok, args=(bridge.port,)) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert echo_ok(bridge.port)
        assert bridge.process.poll() is None
