"""DIMSE command sets packed by the bridge are byte for byte what pydicom writes."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset
from pydicom.tag import Tag
from pynetdicom import dimse_messages, dimse_primitives
from pynetdicom.dsutils import encode as pydicom_encode

from dimse_bridge.command_set import _fast_command_set, encode_command_set

CT = "1.2.840.10008.5.1.4.1.1.2"
MOVE = "1.2.840.10008.5.1.4.1.2.2.2"


def _store_rq() -> dimse_primitives.C_STORE:
    primitive = dimse_primitives.C_STORE()
    primitive.MessageID = 7
    primitive.AffectedSOPClassUID = CT
    primitive.AffectedSOPInstanceUID = "1.2.826.0.1.3680043.8.498.1"  # odd length: padded with NUL
    primitive.Priority = 2
    primitive.MoveOriginatorApplicationEntityTitle = "MOVESCU"  # odd length: padded with a space
    primitive.MoveOriginatorMessageID = 3
    return primitive


def _store_rsp() -> dimse_primitives.C_STORE:
    primitive = dimse_primitives.C_STORE()
    primitive.MessageIDBeingRespondedTo = 7
    primitive.AffectedSOPClassUID = CT
    primitive.AffectedSOPInstanceUID = "1.2.3.44"
    primitive.Status = 0xB000
    primitive.OffendingElement = [Tag(0x00100010), Tag(0x00100020)]
    primitive.ErrorComment = "coerced a value"
    return primitive


def _move_rsp() -> dimse_primitives.C_MOVE:
    primitive = dimse_primitives.C_MOVE()
    primitive.MessageIDBeingRespondedTo = 1
    primitive.AffectedSOPClassUID = MOVE
    primitive.Status = 0xFF00
    primitive.NumberOfRemainingSuboperations = 99
    primitive.NumberOfCompletedSuboperations = 1
    primitive.NumberOfFailedSuboperations = 0
    primitive.NumberOfWarningSuboperations = 0
    return primitive


def _echo_rq() -> dimse_primitives.C_ECHO:
    primitive = dimse_primitives.C_ECHO()
    primitive.MessageID = 1
    primitive.AffectedSOPClassUID = "1.2.840.10008.1.1"
    return primitive


@pytest.mark.parametrize(
    ("message", "primitive"),
    [
        (dimse_messages.C_STORE_RQ, _store_rq),
        (dimse_messages.C_STORE_RSP, _store_rsp),
        (dimse_messages.C_MOVE_RSP, _move_rsp),
        (dimse_messages.C_ECHO_RQ, _echo_rq),
    ],
    ids=["C-STORE-RQ", "C-STORE-RSP with warning details", "C-MOVE-RSP pending", "C-ECHO-RQ"],
)
def test_pynetdicom_command_sets_encode_as_pydicom_does(message: type, primitive: object) -> None:
    built = message()
    built.primitive_to_message(primitive())  # type: ignore[operator]
    fast = _fast_command_set(built.command_set)
    assert fast is not None
    assert fast == pydicom_encode(built.command_set, True, True)
    assert built.command_set.CommandGroupLength == len(fast) - 12  # the group length excludes itself


def test_anything_but_a_command_set_goes_to_pydicom() -> None:
    identifier = Dataset()
    identifier.PatientName = "Doe^John"
    identifier.QueryRetrieveLevel = "STUDY"
    assert _fast_command_set(identifier) is None
    assert encode_command_set(identifier, True, True) == pydicom_encode(identifier, True, True)


def test_explicit_vr_goes_to_pydicom() -> None:
    built = dimse_messages.C_ECHO_RQ()
    built.primitive_to_message(_echo_rq())
    assert encode_command_set(built.command_set, False, True) == pydicom_encode(built.command_set, False, True)


def test_non_ascii_text_goes_to_pydicom() -> None:
    command = Dataset()
    command.ErrorComment = "Tête"
    assert _fast_command_set(command) is None


def test_install_replaces_pynetdicom_s_encoder(monkeypatch: pytest.MonkeyPatch) -> None:
    from dimse_bridge.command_set import install

    monkeypatch.setattr(dimse_messages, "encode", getattr(dimse_messages, "encode"))  # noqa: B009  # undone after
    install()
    assert getattr(dimse_messages, "encode") is encode_command_set  # noqa: B009
