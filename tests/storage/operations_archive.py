"""An archive on SQLite or PostgreSQL with a folder of blobs, filled with generated studies (operations tests)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from dicomdata import Patient, SeriesSpec, StudySpec, build_instances, new_uid, part10
from postgres_databases import create_postgres_database, drop_postgres_database
from sqlalchemy.engine import Engine

from storage.archive import Archive
from storage.blobs import open_blob_store
from storage.index import Index
from storage.index.database import migrate, open_engine

__all__ = ["OperationsArchive", "open_archive"]


@dataclass
class OperationsArchive:
    """An archive in a temporary folder (and a PostgreSQL database for that backend)."""

    url: str
    engine: Engine
    archive: Archive
    blob_dir: Path

    def store_study(
        self, *, modality: str = "CT", study_date: str = "20230405", instances: int = 1, study_uid: str | None = None
    ) -> tuple[str, list[bytes]]:
        """Store a generated study; its UID and the Part-10 bytes of its instances."""
        spec = StudySpec(
            Patient(f"OPS^{new_uid()[-6:]}", f"P{new_uid()[-8:]}"),
            study_date,
            "A1",
            (SeriesSpec(modality, instances, size=8),),
            study_uid=study_uid or new_uid(),
        )
        parts = [part10(ds) for ds in build_instances(spec)]
        for data in parts:
            staging = self.archive.blobs.staging_dir()
            path = staging / f"part-{hashlib.sha256(data).hexdigest()[:16]}"
            path.write_bytes(data)
            self.archive.store(path, hashlib.sha256(data).hexdigest())
        return spec.study_uid, parts

    def blob_path(self, study_uid: str, index: int = 0) -> Path:
        """The file holding an instance's bytes."""
        key = self.archive.instances(study_uid)[index].blob_key
        return self.blob_dir / key

    def close(self) -> None:
        """Dispose of the engine and drop the PostgreSQL database."""
        self.engine.dispose()
        if self.url.startswith("postgresql"):
            drop_postgres_database(self.url)


def open_archive(backend: str, folder: Path) -> OperationsArchive:
    """A new, migrated, empty archive on `backend` (sqlite or postgresql) with blobs under `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    url = create_postgres_database() if backend == "postgresql" else f"sqlite:///{folder / 'index.sqlite3'}"
    migrate(url)
    engine = open_engine(url)
    blob_dir = folder / "blobs"
    return OperationsArchive(url, engine, Archive(Index(engine), open_blob_store(str(blob_dir))), blob_dir)
