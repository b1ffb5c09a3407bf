"""PDUs batched per DIMSE message: the peer still receives standard PDUs and every message intact."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pynetdicom.fsm
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, evt
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.pdu_primitives import A_ABORT, P_DATA
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]  # generated at import

from dimse_bridge import pdu_batching

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture(autouse=True)
def _batching(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # install() patches pynetdicom for the whole process; undo it after each test.
    monkeypatch.setattr(pynetdicom.fsm, "P_DATA_TF", pynetdicom.fsm.P_DATA_TF)
    monkeypatch.setattr(DIMSEServiceProvider, "send_msg", DIMSEServiceProvider.send_msg)
    pdu_batching.install()
    yield


def _ct(rows: int) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.PatientName = "Batch^Test"
    ds.Rows = ds.Columns = rows
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.PixelData = np.random.default_rng(rows).integers(0, 4096, (rows, rows), dtype=np.uint16).tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def test_messages_of_many_pdus_arrive_intact_in_fewer_writes() -> None:
    received: list[Dataset] = []
    pdus_received: list[int] = []
    writes: list[int] = []

    def on_store(event: Any) -> int:
        received.append(event.dataset)
        return 0x0000

    scp = AE("SCP")
    scp.maximum_pdu_size = 16382  # a 0.5 MB image is 33 PDUs, as for a common peer
    scp.add_supported_context(CTImageStorage, ExplicitVRLittleEndian)
    server = scp.start_server(
        ("127.0.0.1", 0),
        block=False,
        evt_handlers=[(evt.EVT_C_STORE, on_store), (evt.EVT_PDU_RECV, lambda e: pdus_received.append(1))],
    )
    try:
        scu = AE("SCU")
        scu.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
        assoc = scu.associate(
            "127.0.0.1",
            server.server_address[1],
            evt_handlers=[(evt.EVT_DATA_SENT, lambda e: writes.append(len(e.data)))],
        )
        assert assoc.is_established
        sent = [_ct(512), _ct(64), _ct(700)]
        for dataset in sent:
            assert assoc.send_c_store(dataset).Status == 0x0000
        assoc.release()
    finally:
        server.shutdown()
    assert [bytes(d.PixelData) for d in received] == [bytes(d.PixelData) for d in sent]
    assert [str(d.SOPInstanceUID) for d in received] == [str(d.SOPInstanceUID) for d in sent]
    # The receiver decoded standard PDUs no longer than its maximum: at least 33 + 1 + 61 data PDUs.
    assert len(pdus_received) >= 95
    # The sender wrote them in a handful of writes (associate, release and one batch per MB or less).
    assert len(writes) < 20


def test_an_abort_from_another_thread_keeps_its_place_after_the_collected_pdus() -> None:
    sent: list[object] = []
    collector = pdu_batching._Collector(sent.append)
    first, second = P_DATA(), P_DATA()
    first.presentation_data_value_list = [[1, b"\x00" + b"a" * 10]]
    second.presentation_data_value_list = [[1, b"\x02" + b"b" * 10]]
    abort = A_ABORT()
    collector(first)
    collector(abort)
    collector(second)
    collector.flush()
    assert sent == [first, abort, second]


def test_a_batch_encodes_as_its_pdus_back_to_back() -> None:
    parts = []
    # One PDV per PDU as pynetdicom cuts messages, and a PDU of two PDVs on different contexts.
    for items in ([[3, b"\x01" + b"c" * 40]], [[3, b"\x00" + b"x" * 100]], [[5, b"\x02y"], [7, b"\x00" + b"z" * 9]]):
        primitive = P_DATA()
        primitive.presentation_data_value_list = items
        parts.append(primitive)
    batch = pdu_batching._p_data_tf(pdu_batching._PDataBatch(parts))
    single = [pynetdicom.pdu.P_DATA_TF(p).encode() for p in parts]
    assert batch.encode() == b"".join(single)
