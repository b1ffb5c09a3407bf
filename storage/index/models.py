"""The index tables (SQLModel metadata); the schema itself is created by Alembic (`migrations/`).

Patient attributes live on the study row (denormalised: QIDO matches and returns them with the study
without a join). `*_norm` columns hold `normalize_person_name` of the PN value, for case- and
accent-insensitive Person Name matching.

Every text column that is matched or sorted uses the "C" collation on PostgreSQL: byte order equals
code point order there as in SQLite's BINARY collation, so prefix ranges (`>= 'SMITH' AND < 'SMITI'`)
and LIKE prefixes can use the B-tree indexes and both databases order rows the same way.
"""

from __future__ import annotations

import unicodedata
from datetime import UTC, datetime
from typing import Any, ClassVar, Final

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlmodel import Field, SQLModel

__all__ = [
    "BlobJournal",
    "Change",
    "FeedState",
    "Instance",
    "Series",
    "Study",
    "StudyModality",
    "StudySopClass",
    "UtcDateTime",
    "blob_journal_table",
    "change_table",
    "feed_state_table",
    "id_type",
    "instance_table",
    "normalize_person_name",
    "series_table",
    "study_modality_table",
    "study_sop_class_table",
    "study_table",
    "text_type",
]


def text_type() -> String:
    """Unbounded text, "C" collation on PostgreSQL (see the module docstring)."""
    return String().with_variant(String(collation="C"), "postgresql")


def id_type() -> BigInteger:
    """64-bit surrogate key; plain INTEGER on SQLite so that the column is the rowid alias."""
    return BigInteger().with_variant(Integer(), "sqlite")


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on both databases (SQLite keeps no offset: it is UTC by rule)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Refuse naive datetimes, store UTC.

        Raises:
            ValueError: `value` is naive.
        """
        if value is None:
            return None
        if value.tzinfo is None:
            msg = f"naive datetime {value!r}: the index stores timezone-aware UTC only"
            raise ValueError(msg)
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Attach UTC to what SQLite hands back naive."""
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# Combining diacritical mark blocks only: dakuten (U+3099/U+309A) and other marks that change the
# letter itself in non-Latin scripts must stay, so Japanese kana keep matching exactly.
_DIACRITIC_BLOCKS = (
    (0x0300, 0x036F),
    (0x1AB0, 0x1AFF),
    (0x1DC0, 0x1DFF),
    (0x20D0, 0x20FF),
    (0xFE20, 0xFE2F),
)
# str.translate table deleting them: one C-level pass instead of a Python test per character.
_DROP_DIACRITICS: Final[dict[int, None]] = {
    code: None for low, high in _DIACRITIC_BLOCKS for code in range(low, high + 1)
}


def normalize_person_name(value: str) -> str:
    """Upper-case, accent-folded form of a PN value (or pattern): `Müller^Hans` -> `MULLER^HANS`.

    NFKD, diacritical marks dropped, NFC again (so kana and Hangul stay composed), upper-cased.
    Wildcards `*` and `?` and the PN delimiters `^` and `=` pass through unchanged.
    """
    if value.isascii():  # every normalization form leaves ASCII as it is; the common case, per add
        return value.upper()
    folded = unicodedata.normalize("NFKD", value).translate(_DROP_DIACRITICS)
    return unicodedata.normalize("NFC", folded).upper()


def _now() -> datetime:
    return datetime.now(UTC)


def _text_column(name: str, *, nullable: bool = False) -> Any:
    """A matching-key text column: '' when the attribute is absent, never NULL."""
    if nullable:
        return Field(default=None, sa_column=Column(name, text_type(), nullable=True))
    return Field(default="", sa_column=Column(name, text_type(), nullable=False, server_default=""))


def _int_column(name: str, *, nullable: bool = True) -> Any:
    if nullable:
        return Field(default=None, sa_column=Column(name, Integer(), nullable=True))
    return Field(default=0, sa_column=Column(name, Integer(), nullable=False, server_default=text("0")))


def _id_column() -> Any:
    return Field(default=None, sa_column=Column("id", id_type(), primary_key=True, autoincrement=True))


def _fk_column(name: str, target: str, constraint: str) -> Any:
    return Field(
        sa_column=Column(name, id_type(), ForeignKey(target, ondelete="CASCADE", name=constraint), nullable=False)
    )


def _uid_column(name: str) -> Any:
    return Field(sa_column=Column(name, text_type(), nullable=False))


def _time_column(name: str) -> Any:
    return Field(default_factory=_now, sa_column=Column(name, UtcDateTime(), nullable=False))


class Study(SQLModel, table=True):
    """One study, with its patient's attributes (updated from the newest stored instance)."""

    __tablename__ = "study"
    __table_args__: ClassVar[Any] = (
        UniqueConstraint("study_instance_uid", name="uq_study_study_instance_uid"),
        Index("ix_study_patient_id", "patient_id"),
        Index("ix_study_patient_name_norm", "patient_name_norm"),
        # The QIDO default order (newest first) and StudyDate/StudyTime ranges; `id` makes it a
        # total order and lets the paging subquery be answered from the index alone.
        Index("ix_study_date_time", "study_date", "study_time", "id"),
        Index("ix_study_accession_number", "accession_number"),
        Index("ix_study_study_id", "study_id"),
        Index("ix_study_referring_physician_name_norm", "referring_physician_name_norm"),
        # The change feed's publisher finds the studies that went quiet (storage/index/changes.py).
        Index("ix_study_updated_at", "updated_at"),
    )

    id: int | None = _id_column()
    study_instance_uid: str = _uid_column("study_instance_uid")
    patient_id: str = _text_column("patient_id")
    patient_name: str = _text_column("patient_name")
    patient_name_norm: str = _text_column("patient_name_norm")
    patient_birth_date: str = _text_column("patient_birth_date")
    patient_sex: str = _text_column("patient_sex")
    study_date: str = _text_column("study_date")
    study_time: str = _text_column("study_time")
    accession_number: str = _text_column("accession_number")
    study_id: str = _text_column("study_id")
    study_description: str = _text_column("study_description")
    referring_physician_name: str = _text_column("referring_physician_name")
    referring_physician_name_norm: str = _text_column("referring_physician_name_norm")
    institution_name: str = _text_column("institution_name")
    num_series: int = _int_column("num_series", nullable=False)
    num_instances: int = _int_column("num_instances", nullable=False)
    json_: str = Field(sa_column=Column("json", Text(), nullable=False))
    created_at: datetime = _time_column("created_at")
    updated_at: datetime = _time_column("updated_at")


class StudyModality(SQLModel, table=True):
    """ModalitiesInStudy (0008,0061): the distinct Modality values of the study's series."""

    __tablename__ = "study_modality"
    __table_args__: ClassVar[Any] = (Index("ix_study_modality_modality", "modality", "study_id"),)

    study_id: int = Field(
        sa_column=Column(
            "study_id",
            id_type(),
            ForeignKey("study.id", ondelete="CASCADE", name="fk_study_modality_study_id_study"),
            primary_key=True,
        )
    )
    modality: str = Field(sa_column=Column("modality", text_type(), primary_key=True))


class StudySopClass(SQLModel, table=True):
    """SOPClassesInStudy (0008,0062): the distinct SOP Class UIDs of the study's instances."""

    __tablename__ = "study_sop_class"
    __table_args__: ClassVar[Any] = (Index("ix_study_sop_class_sop_class_uid", "sop_class_uid", "study_id"),)

    study_id: int = Field(
        sa_column=Column(
            "study_id",
            id_type(),
            ForeignKey("study.id", ondelete="CASCADE", name="fk_study_sop_class_study_id_study"),
            primary_key=True,
        )
    )
    sop_class_uid: str = Field(sa_column=Column("sop_class_uid", text_type(), primary_key=True))


class Series(SQLModel, table=True):
    """One series of a study."""

    __tablename__ = "series"
    __table_args__: ClassVar[Any] = (
        UniqueConstraint("series_instance_uid", name="uq_series_series_instance_uid"),
        # Foreign key + the series order inside a study (SeriesNumber, then arrival).
        Index("ix_series_study_order", "study_id", "series_number", "id"),
        Index("ix_series_order", "series_number", "id"),
        Index("ix_series_modality", "modality"),
    )

    id: int | None = _id_column()
    study_id: int = _fk_column("study_id", "study.id", "fk_series_study_id_study")
    series_instance_uid: str = _uid_column("series_instance_uid")
    modality: str = _text_column("modality")
    series_number: int | None = _int_column("series_number")
    series_description: str = _text_column("series_description")
    body_part_examined: str = _text_column("body_part_examined")
    pps_start_date: str = _text_column("pps_start_date")
    pps_start_time: str = _text_column("pps_start_time")
    num_instances: int = _int_column("num_instances", nullable=False)
    json_: str = Field(sa_column=Column("json", Text(), nullable=False))
    created_at: datetime = _time_column("created_at")


class Instance(SQLModel, table=True):
    """One stored SOP instance: its keys, its metadata and where its bytes are."""

    __tablename__ = "instance"
    __table_args__: ClassVar[Any] = (
        UniqueConstraint("sop_instance_uid", name="uq_instance_sop_instance_uid"),
        # Foreign key + the instance order inside a series (InstanceNumber, then arrival).
        Index("ix_instance_series_order", "series_id", "instance_number", "id"),
        Index("ix_instance_study_id", "study_id"),
        Index("ix_instance_sop_class_uid", "sop_class_uid"),
        Index("ix_instance_blob_key", "blob_key"),
    )

    id: int | None = _id_column()
    series_id: int = _fk_column("series_id", "series.id", "fk_instance_series_id_series")
    study_id: int = _fk_column("study_id", "study.id", "fk_instance_study_id_study")
    sop_instance_uid: str = _uid_column("sop_instance_uid")
    sop_class_uid: str = _text_column("sop_class_uid")
    instance_number: int | None = _int_column("instance_number")
    transfer_syntax_uid: str = _text_column("transfer_syntax_uid")
    rows: int | None = _int_column("rows")
    columns: int | None = _int_column("columns")
    bits_allocated: int | None = _int_column("bits_allocated")
    number_of_frames: int = _int_column("number_of_frames", nullable=False)
    json_: str = Field(sa_column=Column("json", Text(), nullable=False))
    # The whole instance as UTF-8 DICOM JSON, kept as bytes: WADO-RS /metadata sends it untouched.
    metadata_: bytes = Field(sa_column=Column("metadata", LargeBinary(), nullable=False))
    # JSON [[[offset, length], ...], ...]: one list of fragments per frame; NULL = offsets unknown.
    frames: str | None = Field(default=None, sa_column=Column("frames", Text(), nullable=True))
    blob_key: str = Field(sa_column=Column("blob_key", text_type(), nullable=False))
    size: int = Field(sa_column=Column("size", BigInteger(), nullable=False))
    sha256: str = Field(sa_column=Column("sha256", String(64), nullable=False))
    created_at: datetime = _time_column("created_at")


_UNPUBLISHED: Final = text("feed_seq IS NULL")


class Change(SQLModel, table=True):
    """The append-only change feed: one row per stored, replaced or deleted instance, or stable study.

    `seq` is taken at insert, `feed_seq` after commit by the feed publisher (storage/index/changes.py):
    readers follow `feed_seq`, which never gains a row below a number they have already seen.
    """

    __tablename__ = "change"
    __table_args__: ClassVar[Any] = (
        Index("ix_change_feed_seq", "feed_seq", unique=True),
        Index("ix_change_unpublished", "seq", sqlite_where=_UNPUBLISHED, postgresql_where=_UNPUBLISHED),
        # AUTOINCREMENT on SQLite: a sequence number is never reused, even after the newest row is gone.
        {"sqlite_autoincrement": True},
    )

    seq: int | None = Field(default=None, sa_column=Column("seq", id_type(), primary_key=True, autoincrement=True))
    feed_seq: int | None = Field(default=None, sa_column=Column("feed_seq", BigInteger(), nullable=True))
    kind: str = Field(sa_column=Column("kind", String(8), nullable=False))
    study_instance_uid: str = Field(sa_column=Column("study_instance_uid", text_type(), nullable=False))
    series_instance_uid: str = Field(sa_column=Column("series_instance_uid", text_type(), nullable=False))
    sop_instance_uid: str = Field(sa_column=Column("sop_instance_uid", text_type(), nullable=False))
    at: datetime = _time_column("at")


class FeedState(SQLModel, table=True):
    """The change feed publisher's single row: its lock, and up to when quiet studies were announced."""

    __tablename__ = "feed_state"

    id: int = Field(sa_column=Column("id", Integer(), primary_key=True, autoincrement=False))
    stable_until: datetime | None = Field(default=None, sa_column=Column("stable_until", UtcDateTime(), nullable=True))


class BlobJournal(SQLModel, table=True):
    """A blob being written: committed before the put, removed by the index transaction referencing it."""

    __tablename__ = "blob_journal"

    blob_key: str = Field(sa_column=Column("blob_key", text_type(), primary_key=True))
    host: str = Field(sa_column=Column("host", String(255), nullable=False))
    created_at: datetime = _time_column("created_at")


# Core handles for the hot paths (SQLAlchemy Core statements, no ORM sessions).
study_table: Final = SQLModel.metadata.tables["study"]
study_modality_table: Final = SQLModel.metadata.tables["study_modality"]
study_sop_class_table: Final = SQLModel.metadata.tables["study_sop_class"]
series_table: Final = SQLModel.metadata.tables["series"]
instance_table: Final = SQLModel.metadata.tables["instance"]
change_table: Final = SQLModel.metadata.tables["change"]
feed_state_table: Final = SQLModel.metadata.tables["feed_state"]
blob_journal_table: Final = SQLModel.metadata.tables["blob_journal"]
