"""The P-DATA-TF PDUs of one DIMSE message reach the DUL in batches, each sent with one write.

pynetdicom cuts a message into PDUs no longer than the peer's maximum (16 KB is common: a 0.5 MB
CT image is 33 PDUs) and queues each for its DUL thread, which takes them one by one: a pass of its
loop (with a `select()`), a state-machine transition, an encode and a `send()` per PDU, about
40 µs each, two milliseconds per image of a C-MOVE or C-GET. Here the PDUs of a message are
collected while pynetdicom produces them and handed over up to `_BATCH_BYTES` at a time: one queue
entry, one transition (Sta6 + Evt9 -> DT-1 -> Sta6, as for a single PDU), one write of the PDUs
back to back. The bytes on the wire are the same PDUs in the same order.

Two pynetdicom internals are touched: `DIMSEServiceProvider.send_msg` (wrapped, not rewritten) and
the name `P_DATA_TF` the state machine's DT-1 action builds its PDU with; tests/dimse_bridge/test_pdu_batching.py
checks both still exist and that a peer receives every message intact.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any, Final

import pynetdicom.fsm
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.pdu_primitives import P_DATA

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["install"]

# Bounds the bytes held at once: a batch is encoded in one buffer before it is written.
_BATCH_BYTES: Final = 1024 * 1024
_ORIGINAL_SEND_MSG: Final = DIMSEServiceProvider.send_msg
_P_DATA_TF_TYPE: Final = 0x04
_PDU_HEADER: Final = struct.Struct(">BBI")  # PDU type, reserved, PDU length
_PDV_HEADER: Final = struct.Struct(">IB")  # item length, presentation context ID


class _PDataBatch(P_DATA):
    """Several P-DATA requests of one DIMSE message, in order; the DUL treats it as one."""

    def __init__(self, primitives: list[P_DATA]) -> None:
        super().__init__()
        self.primitives = primitives


def _p_data_tf(primitive: P_DATA | None = None) -> P_DATA_TF:
    """What DT-1 builds from a queued P-DATA request: a batch is its PDUs encoded back to back.

    The PDU object handed on is the batch's first (pynetdicom looks PDUs up by exact class), whose
    `encode()` returns all of them.
    """
    if not isinstance(primitive, _PDataBatch):
        return P_DATA_TF(primitive)
    encoded = _encode_pdus(primitive.primitives)
    first = P_DATA_TF(primitive.primitives[0])
    first.encode = lambda: encoded  # type: ignore[method-assign]  # this one object's write
    return first


def _encode_pdus(primitives: list[P_DATA]) -> bytes:
    """The P-DATA-TF PDUs of `primitives` back to back (PS3.8 §9.3.5), in one join.

    The same bytes as `P_DATA_TF(p).encode()` for each (tested), without building a PDU object and
    an intermediate copy of every 16 KB fragment.
    """
    pieces: list[bytes] = []
    for primitive in primitives:
        items = primitive.presentation_data_value_list
        # PDU length: per item, its 4-byte length, 1-byte context ID and the data (header byte included).
        pieces.append(_PDU_HEADER.pack(_P_DATA_TF_TYPE, 0, sum(5 + len(data) for _, data in items)))
        for context_id, data in items:
            pieces.append(_PDV_HEADER.pack(len(data) + 1, context_id))
            pieces.append(data)
    return b"".join(pieces)


class _Collector:
    """Stands in for `dul.send_pdu` while one message is encoded; passes batches to the real one."""

    def __init__(self, send_pdu: Callable[[Any], None]) -> None:
        self._send_pdu = send_pdu
        self._pending: list[P_DATA] = []
        self._size = 0

    def __call__(self, primitive: Any) -> None:
        if type(primitive) is not P_DATA:
            # Anything else (an abort from another thread) keeps its place after what came before.
            self.flush()
            self._send_pdu(primitive)
            return
        self._pending.append(primitive)
        self._size += sum(len(data) for _, data in primitive.presentation_data_value_list)
        if self._size >= _BATCH_BYTES:
            self.flush()

    def flush(self) -> None:
        pending, self._pending, self._size = self._pending, [], 0
        if len(pending) == 1:
            self._send_pdu(pending[0])
        elif pending:
            self._send_pdu(_PDataBatch(pending))


def _send_msg_in_batches(self: DIMSEServiceProvider, primitive: Any, context_id: int) -> None:
    dul = self.dul
    collector = _Collector(dul.send_pdu)
    # An instance attribute shadows the method for as long as this message is being cut up.
    dul.send_pdu = collector  # type: ignore[method-assign]
    try:
        _ORIGINAL_SEND_MSG(self, primitive, context_id)
    finally:
        del dul.send_pdu
        collector.flush()


def install() -> None:
    """Batch the PDUs of every DIMSE message sent from now on in this process."""
    setattr(pynetdicom.fsm, "P_DATA_TF", _p_data_tf)  # noqa: B010
    DIMSEServiceProvider.send_msg = _send_msg_in_batches  # type: ignore[method-assign]
