"""Crash safety (DESIGN.md §1, store step 6): a server killed in the middle of a large STOW-RS leaves
every instance either complete and retrievable or absent, and a restart removes what is orphaned."""

from __future__ import annotations

import shutil
import signal
import threading
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final

import httpx
import pytest
from dicomdata import Patient, SeriesSpec, StudySpec, iter_instances, new_uid, part10, sample_study, uids_of
from live_pacs import Pacs, first

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from conftest import LiveServer, ServerFactory  # tests/conftest.py

INSTANCES: Final = 200  # of 512 x 512 x 16 bits: 0.5 MB each
KILL_AT: Final = 120  # the server is killed while this part (0-based) is half sent
CHUNK: Final = 64 * 1024
WAIT: Final = 120.0  # seconds; a bound on waiting for the other thread, never a pause


def _pacs(server: LiveServer, backend: str) -> Pacs:
    return Pacs(server.url, server.token, server.data_dir, backend)


def _dot_files(pacs: Pacs) -> list[Path]:
    """Files in the blob tree that are not blobs (temporary and staging files)."""
    root = pacs.data_dir / "blobs"
    return [path for path in root.rglob("*") if path.is_file() and path not in pacs.blob_files()]


class _SlowStow:
    """STOW-RS of a big study from a background thread, holding the body at part KILL_AT until released."""

    def __init__(self, pacs: Pacs, study: StudySpec) -> None:
        self.sent: dict[str, bytes] = {}
        self.paused = threading.Event()
        self.release = threading.Event()
        self.error: BaseException | None = None
        self._pacs = pacs
        self._study = study
        self._boundary = f"crash-{new_uid()}"
        self._thread = threading.Thread(target=self._post, name="slow-stow", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self) -> None:
        self.release.set()
        self._thread.join(WAIT)
        assert not self._thread.is_alive(), "the STOW thread did not end after the server was killed"

    def _body(self) -> Iterator[bytes]:
        for index, ds in enumerate(iter_instances(self._study)):
            data = part10(ds)
            self.sent[str(ds.SOPInstanceUID)] = data
            yield f"--{self._boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
            if index == KILL_AT:
                yield data[: len(data) // 2]
                self.paused.set()
                self.release.wait(WAIT)
                return
            for start in range(0, len(data), CHUNK):
                yield data[start : start + CHUNK]
            yield b"\r\n"
        yield f"--{self._boundary}--\r\n".encode()

    def _post(self) -> None:
        content_type = f'multipart/related; type="application/dicom"; boundary={self._boundary}'
        try:
            self._pacs.http.post("/dicomweb/studies", content=self._body(), headers={"Content-Type": content_type})
        except httpx.HTTPError as exc:  # the server was killed under it: expected
            self.error = exc


@pytest.fixture
def server(backend: str, live_servers: ServerFactory) -> Iterator[LiveServer]:
    started = live_servers.start(backend)
    yield started
    live_servers.stop(started)


class TestKilledDuringALargeStow:
    def test_every_listed_instance_is_complete_and_nothing_else_remains(
        self, server: LiveServer, backend: str, live_servers: ServerFactory
    ) -> None:
        pacs = _pacs(server, backend)
        study = StudySpec(
            Patient("CRASH^TEST", f"C-{new_uid()[-8:]}"),
            "20240601",
            "CRASH01",
            (SeriesSpec("CT", INSTANCES, size=512),),
        )
        stow = _SlowStow(pacs, study)
        stow.start()
        assert stow.paused.wait(WAIT), "the STOW body never reached the kill point"
        # Kill once something is indexed, while the held part and the queued ones are still in flight.
        deadline = time.monotonic() + WAIT
        while not pacs.search("/instances", {"StudyInstanceUID": study.study_uid, "limit": "1"}):
            assert time.monotonic() < deadline, "nothing was indexed while the body was held"
        server.process.send_signal(signal.SIGKILL)
        server.process.wait(WAIT)
        stow.join()
        pacs.close()
        left_by_the_crash = {path.name for path in pacs.blob_files()}

        restarted = live_servers.restart(server)
        pacs = _pacs(restarted, backend)
        listed = {first(row, "00080018") for row in pacs.search("/instances", {"StudyInstanceUID": study.study_uid})}
        assert 0 < len(listed) <= KILL_AT, f"{len(listed)} instances listed; the kill came at part {KILL_AT}"
        for sop_uid, data in stow.sent.items():
            if sop_uid in listed:
                assert pacs.stored_bytes(data) == data, f"instance {sop_uid} is listed but not intact"
            else:
                response = pacs.http.get(pacs.instance_path(data), headers={"Accept": "*/*"})
                assert response.status_code == 404, f"instance {sop_uid} is not listed but served"
        metadata = pacs.http.get(f"/dicomweb/studies/{study.study_uid}/metadata").json()
        assert {first(item, "00080018") for item in metadata} == listed
        (row,) = pacs.search("/studies", {"StudyInstanceUID": study.study_uid})
        assert first(row, "00201208") == len(listed)

        blobs = {path.name.rsplit(".", 3)[0] for path in pacs.blob_files()}  # <sop>.<sha256 prefix>.<write id>.dcm
        assert blobs == listed, (
            f"blob files the index does not reference after restart: {sorted(blobs - listed)}; "
            f"{len(left_by_the_crash)} blob files were left by the crash for {len(listed)} indexed instances"
        )
        assert not _dot_files(pacs), f"staging or temporary files left: {_dot_files(pacs)}"
        pacs.close()


class TestStartUpSweep:
    def test_a_blob_no_index_row_references_is_removed_at_restart(
        self, server: LiveServer, backend: str, live_servers: ServerFactory
    ) -> None:
        """As a crash between 'bytes durable' and 'indexed' leaves it (DESIGN.md §1, store step 6)."""
        pacs = _pacs(server, backend)
        _, (kept,) = sample_study()
        pacs.store(kept)
        (existing,) = pacs.blob_files()
        pacs.close()
        live_servers.stop(server)
        _, (orphan,) = sample_study()
        study, series, sop = uids_of(orphan)
        day = datetime.now(UTC).strftime("%Y%m%d")
        planted = pacs.data_dir / "blobs" / day / study / series / f"{sop}.{'0' * 24}.dcm"
        planted.parent.mkdir(parents=True)
        planted.write_bytes(orphan)
        staged = pacs.data_dir / "blobs" / ".staging" / "part-1.spool"
        shutil.copyfile(existing, staged)

        pacs = _pacs(live_servers.restart(server), backend)
        assert not planted.exists(), "the start-up sweep left a blob that no index row references"
        assert not staged.exists(), "the staging folder was not emptied at start"
        assert pacs.stored_bytes(kept) == kept
        assert pacs.blob_files() == {existing}
        pacs.close()
