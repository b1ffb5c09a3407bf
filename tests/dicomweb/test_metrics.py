"""`/metrics`: Prometheus text that prometheus_client parses, counting STOW requests and stored instances."""

from __future__ import annotations

import json
from contextlib import contextmanager
from typing import TYPE_CHECKING

from dicomdata import sample_study
from live_pacs import Pacs
from prometheus_client.parser import text_string_to_metric_families

if TYPE_CHECKING:
    from collections.abc import Iterator

    from conftest import LiveServer, ServerFactory  # tests/conftest.py

STOW_ROUTE = {"route": "/dicomweb/studies", "method": "POST", "status": "200"}


def scrape(pacs: Pacs) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics, by (name, sorted labels)."""
    response = pacs.http.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


class TestMetrics:
    def test_a_stow_is_counted_by_route_status_and_in_the_archive_figures(self, pacs: Pacs) -> None:
        before = scrape(pacs)
        _, files = sample_study(instances=2)
        pacs.store(*files)
        after = scrape(pacs)
        counted = value(after, "webpacs_http_requests_total", **STOW_ROUTE)
        assert counted == value(before, "webpacs_http_requests_total", **STOW_ROUTE) + 1
        assert value(after, "webpacs_instances") == value(before, "webpacs_instances") + 2
        assert value(after, "webpacs_stored_bytes") >= value(before, "webpacs_stored_bytes") + sum(map(len, files))
        latency = value(after, "webpacs_http_request_duration_seconds_count", route="/dicomweb/studies", method="POST")
        assert latency >= 1
        assert value(after, "webpacs_data_dir_filesystem_free_bytes") > 0
        assert ("webpacs_audit_events_queued", ()) in after

    def test_a_queued_forwarding_job_shows_in_the_queue_depth(self, pacs: Pacs) -> None:
        spec, files = sample_study()
        pacs.store(*files)
        before = value(scrape(pacs), "webpacs_forwarding_jobs", state="pending")
        # No bridge runs beside this server, so the job waits.
        sent = pacs.http.post(
            f"/api/studies/{spec.study_uid}/send", json={"dicomweb_url": "http://127.0.0.1:9/dicomweb"}
        )
        assert sent.status_code == 202, sent.text
        assert value(scrape(pacs), "webpacs_forwarding_jobs", state="pending") == before + 1

    def test_a_refused_request_is_counted_with_its_status(self, pacs: Pacs) -> None:
        labels = {"route": "/api/status", "method": "GET", "status": "401"}
        before = value(scrape(pacs), "webpacs_http_requests_total", **labels)
        assert pacs.http.get("/api/status", headers={"Authorization": "Bearer nonsense"}).status_code == 401
        assert value(scrape(pacs), "webpacs_http_requests_total", **labels) == before + 1

    def test_a_monitoring_token_reads_the_metrics_and_nothing_else(self, pacs: Pacs) -> None:
        scraper = pacs.mint_token("monitoring")
        answer = pacs.http.get("/metrics", headers=pacs.auth(scraper))
        assert answer.status_code == 200
        assert "webpacs_instances" in answer.text
        assert pacs.http.get("/dicomweb/studies", headers=pacs.auth(scraper)).status_code == 403

    def test_other_roles_and_anonymous_callers_are_refused(self, pacs: Pacs) -> None:
        assert pacs.http.get("/metrics", headers={"Authorization": ""}).status_code == 401
        viewer = pacs.mint_token("viewer")
        assert pacs.http.get("/metrics", headers=pacs.auth(viewer)).status_code == 403


class TestSeveralWorkers:
    def test_every_scrape_sums_the_requests_of_all_workers(self, live_servers: ServerFactory) -> None:
        server = live_servers.start("sqlite", extra=("--workers", "2"))
        stows = 6
        for _ in range(stows):  # a connection each: the workers share them out
            with fresh(server) as pacs:
                pacs.store(*sample_study()[1])
        # The workers' counters live in files of the multiprocess folder `serve` prepared.
        assert list((server.data_dir / "metrics").glob("counter_*.db"))
        for _ in range(4):  # whichever worker answers
            with fresh(server) as pacs:
                assert value(scrape(pacs), "webpacs_http_requests_total", **STOW_ROUTE) == stows
        live_servers.stop(server)


@contextmanager
def fresh(server: LiveServer) -> Iterator[Pacs]:
    """An admin client on a new connection."""
    pacs = Pacs(server.url, server.token, server.data_dir, "sqlite")
    try:
        yield pacs
    finally:
        pacs.close()


class TestJsonLogs:
    def test_every_server_log_line_is_one_json_object(self, live_servers: ServerFactory) -> None:
        server = live_servers.start("sqlite", env={"WEBPACS_LOG_FORMAT": "json"})
        with fresh(server) as pacs:
            pacs.store(*sample_study()[1])
        live_servers.stop(server)
        lines = (server.data_dir / "server.log").read_text().splitlines()
        records = [json.loads(line) for line in lines if line.strip()]
        requests = [r for r in records if r["logger"] == "webpacs.request"]
        assert any("POST /dicomweb/studies" in r["message"] for r in requests)
        assert {"time", "level", "logger", "message"} <= set(records[0])
