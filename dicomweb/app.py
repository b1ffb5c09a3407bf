"""The composition root: build the archive from settings and mount every route on one Litestar app."""

from __future__ import annotations

import logging
from importlib.metadata import version
from typing import TYPE_CHECKING

from litestar import Litestar
from litestar.config.cors import CORSConfig
from litestar.datastructures import State
from litestar.di import Provide

from auth.access import AccessControl
from auth.oidc import OidcVerifier
from dicomweb.admin import ADMIN_HANDLERS
from dicomweb.attachments import ATTACHMENT_HANDLERS
from dicomweb.audit_log import AUDIT_HANDLERS
from dicomweb.audit_trail import AuditTrail
from dicomweb.changes import CHANGE_HANDLERS
from dicomweb.context import AppContext, refuse_nul
from dicomweb.deletion import DELETE_HANDLERS
from dicomweb.errors import EXCEPTION_HANDLERS
from dicomweb.forwarding import FORWARDING_HANDLERS, rule_engine_task
from dicomweb.metrics import METRICS_HANDLERS, HttpMetrics, JsonLogFormatter
from dicomweb.nodes import DICOM_NODES_ROUTER
from dicomweb.openapi import openapi_config
from dicomweb.operations import OPERATIONS_HANDLERS, retention_schedule
from dicomweb.qido import QIDO_HANDLERS
from dicomweb.rendered import RENDERED_HANDLERS
from dicomweb.request_log import RequestLog
from dicomweb.security import authentication
from dicomweb.sessions import SESSION_HANDLERS
from dicomweb.settings import Settings
from dicomweb.share_links import SHARE_LINK_HANDLERS
from dicomweb.stow import STOW_HANDLERS
from dicomweb.study_management import STUDY_MANAGEMENT_HANDLERS, recycle_purge_schedule
from dicomweb.ui import ui_routes
from dicomweb.users import USERS_ROUTER
from dicomweb.visibility import VisibleStudies
from dicomweb.wado import WADO_HANDLERS
from dicomweb.wado_uri import WADO_URI_HANDLERS
from storage.archive import Archive
from storage.blobs import open_blob_store
from storage.index import Index
from storage.index.database import open_engine

if TYPE_CHECKING:
    from sqlalchemy import Engine

__all__ = ["build_context", "configure_logging", "create_app", "create_app_from_env"]


def build_context(settings: Settings, engine: Engine | None = None) -> AppContext:
    """Open the index and the blob store named by `settings` (the schema must be migrated)."""
    engine = engine or open_engine(settings.effective_database_url)
    archive = Archive(
        Index(engine),
        open_blob_store(settings.effective_blob_url, s3=settings.s3_options()),
        compression=settings.compression_policy(),
        mirror=open_blob_store(settings.mirror_blob_url, s3=settings.s3_options())
        if settings.mirror_blob_url
        else None,
    )
    access = AccessControl.open(engine, oidc=open_oidc(settings))
    return AppContext(
        settings=settings,
        archive=archive,
        access=access,
        visible_studies=VisibleStudies(archive.index),
        engine=engine,
    )


def open_oidc(settings: Settings) -> OidcVerifier | None:
    """The identity-provider verifier, when WEBPACS_OIDC_ISSUER is set."""
    oidc = settings.oidc_settings()
    return None if oidc is None else OidcVerifier(oidc)


def cors_config(settings: Settings) -> CORSConfig | None:
    """Cross-origin access for a viewer on another origin; none unless WEBPACS_CORS_ORIGINS lists some."""
    origins = [origin.strip() for origin in settings.cors_origins.split(",") if origin.strip()]
    if not origins:
        return None
    return CORSConfig(
        allow_origins=origins,
        allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
        allow_headers=["Authorization", "Content-Type", "Accept", "X-Request-ID"],
        expose_headers=["Warning", "Content-Location", "X-Request-ID", "Retry-After"],
        allow_credentials=False,  # bearer tokens, never cookies
        max_age=600,
    )


def create_app(settings: Settings) -> Litestar:
    """The whole HTTP application for `settings`."""
    context = build_context(settings)
    context.archive.blobs.staging_dir().mkdir(parents=True, exist_ok=True)
    metrics = HttpMetrics(context)
    return Litestar(
        route_handlers=[
            *QIDO_HANDLERS,
            *WADO_HANDLERS,
            *RENDERED_HANDLERS,
            *STOW_HANDLERS,
            *WADO_URI_HANDLERS,
            *DELETE_HANDLERS,
            *ADMIN_HANDLERS,
            *CHANGE_HANDLERS,
            DICOM_NODES_ROUTER,
            *SESSION_HANDLERS,
            USERS_ROUTER,
            *SHARE_LINK_HANDLERS,
            *AUDIT_HANDLERS,
            *FORWARDING_HANDLERS,
            *ATTACHMENT_HANDLERS,
            *OPERATIONS_HANDLERS,
            *STUDY_MANAGEMENT_HANDLERS,
            *METRICS_HANDLERS,
            *ui_routes(settings),
        ],
        dependencies={"engine": Provide(lambda: context.engine, sync_to_thread=False)},
        # The audit trail sits outside authentication, so that refused requests are recorded too.
        middleware=[RequestLog(), metrics.middleware(), AuditTrail(), authentication()],
        cors_config=cors_config(settings),
        on_shutdown=[context.access.audit.flush],
        lifespan=[rule_engine_task(context), retention_schedule, recycle_purge_schedule],
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        before_request=refuse_nul,
        state=State({"context": context, "metrics": metrics}),
        openapi_config=openapi_config(version("webpacs")),
        request_max_body_size=settings.max_request_bytes,
        debug=False,
        logging_config=None,  # the process configures logging once (configure_logging)
    )


def create_app_from_env() -> Litestar:
    """Factory for uvicorn workers: settings come from WEBPACS_* variables."""
    settings = Settings.from_env()
    configure_logging(settings.log_level, settings.log_format)
    return create_app(settings)


def configure_logging(level: str, log_format: str = "text") -> None:
    """One-line records on standard error (`json`: one JSON object each); Alembic's start-up chatter only at warning."""
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if log_format == "json":
        for handler in logging.getLogger().handlers:
            handler.setFormatter(JsonLogFormatter())
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request of the CLI's client
