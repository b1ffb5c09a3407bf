"""`/metrics` in the Prometheus text format, the request counters behind it, and JSON log lines.

Request metrics (count by route template, method and status; latency histogram by route) are
counted by `HttpMetrics.middleware`. It is written here rather than taken from Litestar's
Prometheus plugin because that one records an answer produced by an exception (a 401 from the
authentication middleware, a 404 from a handler) as status 200. Archive figures (studies,
instances, stored bytes, forwarding jobs waiting, free disk space) are read from the database and
the filesystem at each scrape, so every worker reports the same values; the audit events queued
are the answering worker's own (each process queues its own).

Several uvicorn workers (`serve --workers N`): `serve` points PROMETHEUS_MULTIPROC_DIR at a fresh
folder under the data dir before they start, and each scrape sums the request metrics of every
worker (prometheus_client's multiprocess mode), whichever worker answers.

Guarded by the `metrics` permission, which admins have and the `monitoring` role has alone: mint
the scraper a token with `webpacs token create --name prometheus --role monitoring` (Prometheus
sends it as `authorization: credentials`); it can read nothing else.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

import anyio.to_thread
from litestar import Request, Response, get
from litestar.middleware import ASGIMiddleware
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy import column, func, inspect, select, table

from auth.principals import Permission
from dicomweb.openapi import problems
from dicomweb.response_status import call_with_status
from dicomweb.security import require

if TYPE_CHECKING:
    from collections.abc import Iterator

    from litestar.types import ASGIApp, Receive, Scope, Send

    from dicomweb.context import AppContext
    from dicomweb.settings import Settings

__all__ = ["METRICS_HANDLERS", "HttpMetrics", "JsonLogFormatter", "prepare_multiprocess_metrics"]

_MULTIPROCESS_VARIABLE: Final = "PROMETHEUS_MULTIPROC_DIR"
# Latency buckets from a 1 ms metadata answer to a minutes-long study download or STOW.
_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
_UNROUTED: Final = "unrouted"
# Read defensively: the table exists from migration 0005 (forwarding) on.
_FORWARDING_JOB: Final = table("forwarding_job", column("state"), column("finished_at"))


def prepare_multiprocess_metrics(settings: Settings) -> None:
    """Before starting several workers: a fresh folder for their shared counters (multiprocess mode)."""
    if settings.workers < 2:
        return
    folder = (settings.data_dir / "metrics").resolve()
    shutil.rmtree(folder, ignore_errors=True)  # counters of a previous run would be summed in
    folder.mkdir(parents=True)
    os.environ[_MULTIPROCESS_VARIABLE] = str(folder)


class HttpMetrics:
    """The metrics of one app (its own registry, so that several apps in a process never clash)."""

    def __init__(self, context: AppContext) -> None:
        self._archive = _ArchiveCollector(context)
        self.registry = CollectorRegistry()
        self.registry.register(self._archive)
        self.requests = Counter(
            "webpacs_http_requests",
            "HTTP requests answered, by route template, method and status code",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "webpacs_http_request_duration_seconds",
            "Time from request to the end of the response, by route template and method",
            ["route", "method"],
            buckets=_BUCKETS,
            registry=self.registry,
        )

    def middleware(self) -> ASGIMiddleware:
        """The middleware that counts every routed request."""
        return _Counting(self)

    def exposition(self) -> bytes:
        """Every metric in the Prometheus text format (blocking: it queries the database)."""
        if _MULTIPROCESS_VARIABLE not in os.environ:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # every worker's request metrics, summed
        registry.register(self._archive)
        return generate_latest(registry)


class _Counting(ASGIMiddleware):
    scopes = ("http",)  # type: ignore[assignment]

    def __init__(self, metrics: HttpMetrics) -> None:
        self._metrics = metrics

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        started = time.perf_counter()

        def count(status: int) -> None:
            # The route's template, never the path: a label per study UID would grow without bound.
            route = str(scope.get("path_template") or _UNROUTED)
            method = str(scope.get("method", ""))
            self._metrics.requests.labels(route, method, str(status)).inc()
            self._metrics.latency.labels(route, method).observe(time.perf_counter() - started)

        await call_with_status(next_app, scope, receive, send, count)


class _ArchiveCollector:
    """Figures read at scrape time from the database, the audit queue and the filesystem."""

    def __init__(self, context: AppContext) -> None:
        self._context = context

    def collect(self) -> Iterator[GaugeMetricFamily]:
        context = self._context
        counts = context.archive.index.counts()
        yield GaugeMetricFamily("webpacs_studies", "Studies in the archive", value=counts.studies)
        yield GaugeMetricFamily("webpacs_series", "Series in the archive", value=counts.series)
        yield GaugeMetricFamily("webpacs_instances", "Instances stored", value=counts.instances)
        yield GaugeMetricFamily("webpacs_stored_bytes", "Bytes of the stored instances", value=counts.bytes)
        jobs = GaugeMetricFamily(
            "webpacs_forwarding_jobs", "Forwarding jobs not finished, by state (the queue depth)", labels=["state"]
        )
        for state, count in self._waiting_jobs():
            jobs.add_metric([state], count)
        yield jobs
        yield GaugeMetricFamily(
            "webpacs_audit_events_queued",
            "Audit events waiting to be written by this process",
            # AuditLog keeps its queue private and offers no size; qsize is exact for SimpleQueue.
            value=context.access.audit.pending(),
        )
        for name, url in (("data_dir", str(context.settings.data_dir)), ("blobs", context.settings.effective_blob_url)):
            path = _local_path(url)
            if path is None or not path.exists():
                continue
            usage = shutil.disk_usage(path)
            yield GaugeMetricFamily(
                f"webpacs_{name}_filesystem_size_bytes", f"Size of the filesystem holding the {name}", value=usage.total
            )
            yield GaugeMetricFamily(
                f"webpacs_{name}_filesystem_free_bytes",
                f"Free space on the filesystem holding the {name}",
                value=usage.free,
            )

    def _waiting_jobs(self) -> list[tuple[str, int]]:
        engine = self._context.engine
        with engine.connect() as connection:
            if not inspect(connection).has_table("forwarding_job"):
                return []
            rows = connection.execute(
                select(_FORWARDING_JOB.c.state, func.count())
                .where(_FORWARDING_JOB.c.finished_at.is_(None))
                .group_by(_FORWARDING_JOB.c.state)
            ).all()
        return [(str(state), int(count)) for state, count in rows]


def _local_path(url: str) -> Path | None:
    parts = urlsplit(url)
    if parts.scheme == "":
        return Path(url)
    return Path(parts.path) if parts.scheme == "file" else None


@get(
    "/metrics",
    guards=[require(Permission.METRICS)],
    tags=["operations"],
    operation_id="GetMetrics",
    summary="Metrics in the Prometheus text format",
    media_type=CONTENT_TYPE_LATEST,
    responses=problems(401, 403),
)
async def get_metrics(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Requests by route and status, latencies, instances and bytes stored, queue depths, free space."""
    metrics: HttpMetrics = request.app.state.metrics
    body = await anyio.to_thread.run_sync(metrics.exposition)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


METRICS_HANDLERS: Final = [get_metrics]


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line (WEBPACS_LOG_FORMAT=json), for log shippers: time, level, logger, message."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as a JSON line; an exception's traceback goes in `exception`."""
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)
