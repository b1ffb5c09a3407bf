"""ParsedInstance builders and database helpers for the index tests (no pydicom parsing here)."""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import psycopg
import pytest

if TYPE_CHECKING:
    from pathlib import Path

from storage.dicom.records import (
    BULK_BASE,
    Frame,
    InstanceAttributes,
    ParsedInstance,
    SeriesAttributes,
    StudyAttributes,
)
from storage.index import AddOutcome, Index, NewInstance
from storage.index.database import open_engine

__all__ = [
    "CT_IMAGE",
    "MR_IMAGE",
    "SR_DOCUMENT",
    "Spec",
    "add_in_process",
    "create_database",
    "drop_database",
    "make_instance",
    "pn_json",
]

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"
SR_DOCUMENT = "1.2.840.10008.5.1.4.1.1.88.11"
EXPLICIT_LE = "1.2.840.10008.1.2.1"


def pn_json(value: str) -> dict[str, Any]:
    """DICOM JSON of a PN value (PS3.18 §F.2.2): one object with a key per component group."""
    if not value:
        return {"vr": "PN"}
    groups = dict(zip(("Alphabetic", "Ideographic", "Phonetic"), value.split("="), strict=False))
    return {"vr": "PN", "Value": [{k: v for k, v in groups.items() if v}]}


def _attr(vr: str, value: str | int | None) -> dict[str, Any]:
    if value is None or value == "":
        return {"vr": vr}
    return {"vr": vr, "Value": [value]}


@dataclass
class Spec:
    """What a test instance looks like; every field has a harmless default."""

    study_uid: str = "1.2.3.1"
    series_uid: str = "1.2.3.1.1"
    sop_uid: str = "1.2.3.1.1.1"
    patient_id: str = "PID1"
    patient_name: str = "DOE^JOHN"
    birth_date: str = "19700101"
    sex: str = "M"
    study_date: str = "20200101"
    study_time: str = "120000"
    accession: str = "ACC1"
    study_id: str = "S1"
    study_description: str = "CT HEAD"
    referring: str = "WELBY^MARCUS"
    institution: str = "GENERAL HOSPITAL"
    modality: str = "CT"
    series_number: int | None = 1
    series_description: str = "AXIAL"
    body_part: str = "HEAD"
    pps_date: str = "20200101"
    pps_time: str = "120500"
    sop_class: str = CT_IMAGE
    instance_number: int | None = 1
    rows: int | None = 512
    columns: int | None = 512
    bits: int | None = 16
    frames: int = 1
    payload: str = "v1"  # changes the bytes (hence sha256) without changing the keys
    extra_instance_json: dict[str, Any] = field(default_factory=dict)


def make_instance(spec: Spec) -> tuple[ParsedInstance, str]:
    """The ParsedInstance of `spec` and the sha256 of its (pretend) bytes."""
    study_json = {
        "00080020": _attr("DA", spec.study_date),
        "00080030": _attr("TM", spec.study_time),
        "00080050": _attr("SH", spec.accession),
        "00080080": _attr("LO", spec.institution),
        "00080090": pn_json(spec.referring),
        "00081030": _attr("LO", spec.study_description),
        "00100010": pn_json(spec.patient_name),
        "00100020": _attr("LO", spec.patient_id),
        "00100030": _attr("DA", spec.birth_date),
        "00100040": _attr("CS", spec.sex),
        "0020000D": _attr("UI", spec.study_uid),
        "00200010": _attr("SH", spec.study_id),
    }
    series_json = {
        "00080060": _attr("CS", spec.modality),
        "0008103E": _attr("LO", spec.series_description),
        "00180015": _attr("CS", spec.body_part),
        "0020000E": _attr("UI", spec.series_uid),
        "00200011": _attr("IS", spec.series_number),
        "00400244": _attr("DA", spec.pps_date),
        "00400245": _attr("TM", spec.pps_time),
    }
    instance_json = {
        "00080016": _attr("UI", spec.sop_class),
        "00080018": _attr("UI", spec.sop_uid),
        "00200013": _attr("IS", spec.instance_number),
        "00280010": _attr("US", spec.rows),
        "00280011": _attr("US", spec.columns),
        "00280100": _attr("US", spec.bits),
        **({"00280008": _attr("IS", spec.frames)} if spec.frames > 1 else {}),
        **spec.extra_instance_json,
    }
    pixel = {"7FE00010": {"vr": "OW", "BulkDataURI": f"{BULK_BASE}/studies/{spec.study_uid}"}}
    metadata = json.dumps(
        {**study_json, **series_json, **instance_json, **pixel, "payload": spec.payload},
        ensure_ascii=False,
    ).encode()
    frame_size = (spec.rows or 0) * (spec.columns or 0) * (spec.bits or 8) // 8
    parsed = ParsedInstance(
        study=StudyAttributes(
            study_instance_uid=spec.study_uid,
            patient_id=spec.patient_id,
            patient_name=spec.patient_name,
            patient_birth_date=spec.birth_date,
            patient_sex=spec.sex,
            study_date=spec.study_date,
            study_time=spec.study_time,
            accession_number=spec.accession,
            study_id=spec.study_id,
            study_description=spec.study_description,
            referring_physician_name=spec.referring,
            institution_name=spec.institution,
            json=study_json,
        ),
        series=SeriesAttributes(
            series_instance_uid=spec.series_uid,
            modality=spec.modality,
            series_number=spec.series_number,
            series_description=spec.series_description,
            body_part_examined=spec.body_part,
            performed_procedure_step_start_date=spec.pps_date,
            performed_procedure_step_start_time=spec.pps_time,
            json=series_json,
        ),
        instance=InstanceAttributes(
            sop_instance_uid=spec.sop_uid,
            sop_class_uid=spec.sop_class,
            instance_number=spec.instance_number,
            transfer_syntax_uid=EXPLICIT_LE,
            rows=spec.rows,
            columns=spec.columns,
            bits_allocated=spec.bits,
            number_of_frames=spec.frames,
            json=instance_json,
        ),
        metadata=metadata,
        frames=tuple(Frame(((1000 + index * frame_size, frame_size),)) for index in range(spec.frames)),
    )
    return parsed, hashlib.sha256(metadata).hexdigest()


PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/{name}"


def _admin() -> psycopg.Connection[tuple[object, ...]]:
    try:
        return psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL at 127.0.0.1:5432 is unreachable (start it): {exc}")


def create_database(kind: str, tmp_path: Path) -> str:
    """A new empty database of `kind` (sqlite | postgresql); its URL."""
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'index.sqlite3'}"
    name = f"webpacs_test_{uuid.uuid4().hex[:12]}"
    with _admin() as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    return PG_URL.format(name=name)


def drop_database(url: str) -> None:
    """Drop a PostgreSQL database made by create_database (SQLite files go with tmp_path)."""
    if url.startswith("postgresql"):
        name = url.rsplit("/", 1)[1]
        with _admin() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def add_in_process(url: str, specs: list[Spec], batch: int) -> list[str]:
    """Index `specs` through an engine of this process (one add per spec, or batches of `batch`).

    Module-level, so that a spawned process can run it; the outcomes' kinds come back.
    """
    engine = open_engine(url)
    try:
        index = Index(engine)
        items = []
        for spec in specs:
            parsed, sha = make_instance(spec)
            items.append(NewInstance(parsed, f"blobs/{spec.sop_uid}/{spec.payload}", 100, sha))
        outcomes: list[AddOutcome | Exception] = []
        if batch <= 1:
            for item in items:
                outcomes.append(index.add_instance(item.parsed, blob_key=item.blob_key, size=100, sha256=item.sha256))
        else:
            for first in range(0, len(items), batch):
                outcomes.extend(index.add_instances(items[first : first + batch]))
        return [outcome.kind if isinstance(outcome, AddOutcome) else type(outcome).__name__ for outcome in outcomes]
    finally:
        engine.dispose()
