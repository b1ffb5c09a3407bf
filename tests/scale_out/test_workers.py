"""Two workers on PostgreSQL + S3: concurrent STOW, QIDO and WADO, and a worker killed mid-STOW."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from dicomdata import (
    Patient,
    SeriesSpec,
    StudySpec,
    build_instances,
    multipart_body,
    new_uid,
    part10,
    split_multipart,
    uids_of,
)
from polling import wait_for

if TYPE_CHECKING:
    import httpx
    from conftest import ServerFactory  # tests/conftest.py
    from scale_out_pacs import ScaleOut

CLIENTS = 4
AS_STORED = 'multipart/related; type="application/dicom"; transfer-syntax=*'


def study_of(series: int, per_series: int) -> tuple[StudySpec, list[bytes]]:
    patient = Patient(f"SCALE^{new_uid()[-6:]}", f"P-{new_uid()[-10:]}")
    spec = StudySpec(patient, "20240102", "ACC1", tuple(SeriesSpec("CT", per_series, number=n) for n in range(series)))
    return spec, [part10(ds) for ds in build_instances(spec)]


def in_parallel(count: int, work: object) -> list[object]:
    barrier = threading.Barrier(count)

    def run(n: int) -> object:
        barrier.wait()
        return work(n)  # type: ignore[operator]

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(run, range(count)))


def client(scale_out: ScaleOut) -> httpx.Client:
    # A connection of its own per thread: the load balancer (here the kernel) spreads them on workers.
    return scale_out.server.client()


class TestTwoWorkersRun:
    def test_serve_runs_two_worker_processes(self, scale_out: ScaleOut) -> None:
        assert len(scale_out.worker_pids()) == 2


class TestConcurrentStowOfOneStudy:
    def test_clients_storing_parts_of_one_study_at_once_leave_exact_counts_and_no_duplicates(
        self, scale_out: ScaleOut
    ) -> None:
        spec, instances = study_of(series=3, per_series=8)
        shares = [instances[n::CLIENTS] for n in range(CLIENTS)]

        def store(n: int) -> int:
            with client(scale_out) as http:
                return sum(scale_out.stow([part], http).status_code == 200 for part in shares[n])

        assert in_parallel(CLIENTS, store) == [len(share) for share in shares]
        (study,) = scale_out.http.get("/dicomweb/studies", params={"StudyInstanceUID": spec.study_uid}).json()
        assert study["00201206"]["Value"] == [3]  # NumberOfStudyRelatedSeries
        assert study["00201208"]["Value"] == [24]  # NumberOfStudyRelatedInstances
        series = scale_out.http.get(f"/dicomweb/studies/{spec.study_uid}/series").json()
        assert sorted(item["00201209"]["Value"][0] for item in series) == [8, 8, 8]
        rows = scale_out.sql(
            "SELECT count(*), count(DISTINCT sop_instance_uid) FROM instance i JOIN study s ON s.id = i.study_id "
            "WHERE s.study_instance_uid = %s",
            spec.study_uid,
        )
        assert rows == [(24, 24)]

    def test_clients_sending_the_same_instance_at_once_store_it_once(self, scale_out: ScaleOut) -> None:
        _, (instance,) = study_of(series=1, per_series=1)
        _, _, sop = uids_of(instance)

        def store(_: int) -> int:
            with client(scale_out) as http:
                return scale_out.stow([instance], http).status_code

        assert in_parallel(CLIENTS, store) == [200] * CLIENTS
        assert scale_out.sql("SELECT count(*) FROM instance WHERE sop_instance_uid = %s", sop) == [(1,)]
        # Every write had a blob of its own; all but the indexed one were removed again.
        (key,) = scale_out.sql("SELECT blob_key FROM instance WHERE sop_instance_uid = %s", sop)[0]
        assert [k for k in scale_out.blob_keys() if sop in k] == [key]


class TestWorkersOnSqlite:
    def test_two_workers_on_the_embedded_default_also_keep_one_study_exact(self, live_servers: ServerFactory) -> None:
        """SQLite in WAL mode takes writers from several processes in turn (BEGIN IMMEDIATE)."""
        server = live_servers.start("sqlite", extra=("--workers", "2"))
        spec, instances = study_of(series=2, per_series=6)

        def store(n: int) -> int:
            with server.client() as http:
                body, content_type = multipart_body(instances[n::CLIENTS])
                return http.post("/dicomweb/studies", content=body, headers={"Content-Type": content_type}).status_code

        try:
            assert in_parallel(CLIENTS, store) == [200] * CLIENTS
            with server.client() as http:
                (study,) = http.get("/dicomweb/studies", params={"StudyInstanceUID": spec.study_uid}).json()
        finally:
            live_servers.stop(server)
        assert (study["00201206"]["Value"], study["00201208"]["Value"]) == ([2], [12])


class TestConcurrentRetrieve:
    def test_concurrent_searches_and_retrieves_return_the_stored_bytes(self, scale_out: ScaleOut) -> None:
        spec, instances = study_of(series=2, per_series=5)
        assert scale_out.stow(instances).status_code == 200

        def read(n: int) -> bool:
            with client(scale_out) as http:
                found = http.get("/dicomweb/instances", params={"StudyInstanceUID": spec.study_uid}).json()
                data = instances[n % len(instances)]
                study, series, sop = uids_of(data)
                path = f"/dicomweb/studies/{study}/series/{series}/instances/{sop}"
                answer = http.get(
                    path, headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'}
                )
                metadata = http.get(path + "/metadata").json()
                return len(found) == 10 and data in answer.content and metadata[0]["00080018"]["Value"] == [sop]

        assert in_parallel(8, read) == [True] * 8


class TestWorkerKilledDuringStow:
    BOUNDARY = "scale-out-kill-test"

    def test_a_worker_killed_mid_stow_loses_nothing_stored_and_indexes_nothing_by_half(
        self, scale_out: ScaleOut
    ) -> None:
        spec, instances = study_of(series=1, per_series=12)
        release = threading.Event()
        connected: list[int] = []  # the STOW connection's local port

        def send() -> None:
            """The STOW by hand over one socket, so that the worker serving it can be told apart."""
            port = int(scale_out.server.url.rsplit(":", 1)[1])
            content_type = f'multipart/related; type="application/dicom"; boundary={self.BOUNDARY}'
            with socket.create_connection(("127.0.0.1", port)) as connection, contextlib.suppress(OSError):
                connected.append(connection.getsockname()[1])
                connection.sendall(
                    "POST /dicomweb/studies HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    f"Authorization: Bearer {scale_out.server.token}\r\nTransfer-Encoding: chunked\r\n"
                    f"Content-Type: {content_type}\r\n\r\n".encode()
                )
                for number, data in enumerate(instances):
                    part = f"--{self.BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode() + data + b"\r\n"
                    connection.sendall(f"{len(part):X}\r\n".encode() + part + b"\r\n")
                    if number == 5:
                        release.wait(30)  # half the study is sent: the test kills its worker now
                closing = f"--{self.BOUNDARY}--\r\n".encode()
                connection.sendall(f"{len(closing):X}\r\n".encode() + closing + b"\r\n0\r\n\r\n")
                connection.recv(1024)

        sender = threading.Thread(target=send)
        sender.start()
        indexed = lambda: scale_out.sql(_COUNT, spec.study_uid)[0][0] >= 1  # noqa: E731
        wait_for("the first instances to be indexed", indexed, timeout=60)
        serving = scale_out.worker_serving(connected[0])
        others = set(scale_out.worker_pids()) - {serving}
        os.kill(serving, signal.SIGKILL)
        release.set()
        sender.join(60)
        assert others and others <= set(scale_out.worker_pids()), "the other worker went down too"
        with client(scale_out) as http:  # the other worker answers meanwhile, on new connections
            listed = http.get("/dicomweb/instances", params={"StudyInstanceUID": spec.study_uid})
        assert listed.status_code == 200
        scale_out.restart()  # serve again: its start-up sweep removes what the killed worker left
        indexed = scale_out.sql(
            "SELECT i.sop_instance_uid, i.blob_key FROM instance i JOIN study s ON s.id = i.study_id "
            "WHERE s.study_instance_uid = %s",
            spec.study_uid,
        )
        assert 1 <= len(indexed) < len(instances)
        by_sop = {uids_of(data)[2]: data for data in instances}
        stored_keys = scale_out.blob_keys()
        for sop, key in indexed:  # every indexed instance has all its bytes
            assert retrieve(scale_out, by_sop[sop]) == [by_sop[sop]]
            assert key in stored_keys
        (study,) = scale_out.http.get("/dicomweb/studies", params={"StudyInstanceUID": spec.study_uid}).json()
        assert study["00201208"]["Value"] == [len(indexed)]  # the counts agree with the rows
        referenced = {key for (key,) in scale_out.sql("SELECT blob_key FROM instance")}
        assert stored_keys == referenced  # no orphan left in the bucket
        assert scale_out.sql("SELECT count(*) FROM blob_journal") == [(0,)]
        # Sending the study again completes it.
        assert scale_out.stow(instances).status_code == 200
        assert scale_out.sql(_COUNT, spec.study_uid) == [(len(instances),)]


_COUNT = "SELECT count(*) FROM instance i JOIN study s ON s.id = i.study_id WHERE s.study_instance_uid = %s"


def retrieve(scale_out: ScaleOut, data: bytes) -> list[bytes]:
    study, series, sop = uids_of(data)
    response = scale_out.http.get(
        f"/dicomweb/studies/{study}/series/{series}/instances/{sop}",
        headers={"Accept": AS_STORED},
    )
    assert response.status_code == 200, response.text
    return [part.content for part in split_multipart(response.content, response.headers["content-type"])]
