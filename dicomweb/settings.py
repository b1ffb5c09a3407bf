"""The server's settings: one frozen dataclass, built once from WEBPACS_* variables and CLI flags."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from auth.oidc import OidcSettings, parse_role_map
from storage.blobs import S3Options
from storage.dicom.ingest_compression import CompressionPolicy
from storage.forwarding import parse_backoff

if TYPE_CHECKING:
    from datetime import timedelta

__all__ = ["Settings", "SettingsError"]


class SettingsError(ValueError):
    """A setting has a value the server cannot start with; the message names it."""


@dataclass(frozen=True)
class Settings:
    """Everything the HTTP server needs to start (embedded default: ./var, 127.0.0.1:8080)."""

    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: Path = Path("var")
    database_url: str = ""  # default: sqlite under data_dir
    blob_url: str = ""  # default: a folder under data_dir
    # A second blob store written with every stored instance before it is acknowledged (off when empty),
    # e.g. the blobs folder of a backup: <backup>/blobs (storage/backup.py); same WEBPACS_S3_* settings.
    mirror_blob_url: str = ""
    public_url: str = ""  # base URL clients see (behind a proxy); default: from each request
    max_request_bytes: int = 64 * 1024**3  # STOW bodies above this are refused (413)
    max_results: int = 20_000  # QIDO answers are truncated here, with a Warning header
    workers: int = 1
    # At start, blobs nobody references are removed: at once when no store journaled them (crash
    # orphans) or this host journaled them (its previous run); when another host journaled them,
    # only once the journal row is older than this (longer than any store: that host died).
    sweep_grace_seconds: int = 86_400
    log_level: str = "info"
    log_format: str = "text"  # "json": one JSON object per log line (dicomweb/metrics.py JsonLogFormatter)
    cors_origins: str = ""  # comma-separated origins allowed to call the API from a browser; none by default
    # The first admin, created at start when no user exists yet (no default admin/admin).
    initial_admin_user: str = ""
    initial_admin_password: str = ""
    bridge: bool = True
    bridge_port: int = 11112
    bridge_ae_title: str = "WEBPACS"
    # Rendered thumbnails are cached under <data dir>/cache/thumbnails up to this size; 0 turns it off.
    thumbnail_cache_mb: int = 256
    # Compression on ingest (off when empty): rules such as "modality:CT=1.2.840.10008.1.2.4.80,*=<uid>",
    # see storage/dicom/ingest_compression.py; the received original is kept beside it when asked.
    ingest_compression: str = ""
    ingest_keep_original: bool = False
    # An OpenID Connect provider (Keycloak, Entra ID) whose tokens are accepted beside local users;
    # off while oidc_issuer is empty. See oidc_settings() for what is required with it.
    oidc_issuer: str = ""
    oidc_audience: str = ""  # what the provider puts in `aud` for this server (its client id)
    oidc_username_claim: str = "preferred_username"  # falls back to `sub`
    oidc_role_claim: str = "roles"  # a dotted path reaches into objects: realm_access.roles on Keycloak
    oidc_role_map: str = ""  # provider-role=our-role,...: pacs-admin=admin,pacs-radiologist=radiologist
    ui_dir: str = ""  # the web UI and the installed viewer; default: the ui/ folder beside the packages
    # The S3-compatible blob store of WEBPACS_BLOB_URL=s3://bucket/prefix; empty: boto3's defaults
    # (AWS endpoints, AWS_* variables, instance role).
    s3_endpoint_url: str = ""  # e.g. http://minio:9000
    s3_region: str = ""
    s3_access_key_id: str = ""
    s3_secret_access_key: str = ""
    s3_path_style: bool = False  # http://host/bucket addressing (MinIO, Ceph) instead of bucket.host
    # The change feed (/api/changes) announces a study as stable once no instance arrived for this long.
    stable_study_seconds: int = 60
    # The server applies the retention policies (/api/retention-policies) this often; 0: never (CLI only).
    retention_interval_seconds: int = 3600
    # Deleted studies wait this many days in the recycle bin (/api/recycle-bin) before they are
    # purged; 0: DELETE removes a study at once.
    recycle_days: int = 0
    # Forwarding: delays before retrying a failed job, in seconds (1 h, 1 day, 2 days, 1 week; then
    # failed); how long a bridge's claim on a job lasts without progress; how often the rule engine
    # looks at the change feed.
    forward_backoff: str = "3600,86400,172800,604800"
    forward_lease_seconds: int = 300
    forward_interval_seconds: int = 2

    @property
    def effective_database_url(self) -> str:
        """The database URL, defaulting to SQLite in the data folder."""
        return self.database_url or f"sqlite:///{(self.data_dir / 'index.sqlite3').resolve()}"

    @property
    def effective_blob_url(self) -> str:
        """The blob store URL, defaulting to a folder in the data folder."""
        return self.blob_url or str((self.data_dir / "blobs").resolve())

    @property
    def effective_ui_dir(self) -> Path:
        """The folder holding the web UI (web/) and the installed OHIF viewer (viewer-dist/)."""
        return Path(self.ui_dir) if self.ui_dir else Path(__file__).resolve().parents[1] / "ui"

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from `WEBPACS_<NAME>` variables, then explicit overrides (CLI flags).

        Raises:
            SettingsError: a value does not parse or is out of range; the message names the variable.
        """
        environ = dict(os.environ if environ is None else environ)
        values: dict[str, Any] = {}
        for spec in fields(cls):
            variable = f"WEBPACS_{spec.name.upper()}"
            if variable in environ:
                values[spec.name] = _convert(variable, environ[variable], spec.default)
        values.update({name: value for name, value in overrides.items() if value is not None})
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        """Check ranges and forms of the values.

        Raises:
            SettingsError: naming the bad setting and what is allowed.
        """
        if not 0 < self.port < 65536:
            raise SettingsError(f"WEBPACS_PORT={self.port} is not a TCP port (1-65535)")
        if not 0 < self.bridge_port < 65536:
            raise SettingsError(f"WEBPACS_BRIDGE_PORT={self.bridge_port} is not a TCP port")
        if self.workers < 1:
            raise SettingsError(f"WEBPACS_WORKERS={self.workers} must be at least 1")
        if self.sweep_grace_seconds < 0:
            raise SettingsError(f"WEBPACS_SWEEP_GRACE_SECONDS={self.sweep_grace_seconds} must be 0 or more")
        if self.thumbnail_cache_mb < 0:
            raise SettingsError(f"WEBPACS_THUMBNAIL_CACHE_MB={self.thumbnail_cache_mb} must be 0 (off) or more")
        if self.max_results < 1:
            raise SettingsError(f"WEBPACS_MAX_RESULTS={self.max_results} must be at least 1")
        if self.stable_study_seconds < 1:
            raise SettingsError(f"WEBPACS_STABLE_STUDY_SECONDS={self.stable_study_seconds} must be at least 1")
        if self.forward_lease_seconds < 1 or self.forward_interval_seconds < 1:
            raise SettingsError("WEBPACS_FORWARD_LEASE_SECONDS and WEBPACS_FORWARD_INTERVAL_SECONDS must be at least 1")
        self.forward_backoff_delays()
        if self.retention_interval_seconds < 0:
            raise SettingsError(
                f"WEBPACS_RETENTION_INTERVAL_SECONDS={self.retention_interval_seconds} must be 0 (never) or more"
            )
        if not 0 <= self.recycle_days <= 36_500:
            raise SettingsError(f"WEBPACS_RECYCLE_DAYS={self.recycle_days}: use 0 (delete at once) to 36500 days")
        if self.database_url and not self.database_url.startswith(("sqlite", "postgresql")):
            raise SettingsError(
                f"WEBPACS_DATABASE_URL={self.database_url!r}: use sqlite:///path or postgresql+psycopg://user@host/db"
            )
        if bool(self.initial_admin_user) != bool(self.initial_admin_password):
            raise SettingsError("set both WEBPACS_INITIAL_ADMIN_USER and WEBPACS_INITIAL_ADMIN_PASSWORD, or neither")
        if self.log_level.lower() not in {"debug", "info", "warning", "error"}:
            raise SettingsError(f"WEBPACS_LOG_LEVEL={self.log_level!r}: use debug, info, warning or error")
        if self.log_format not in {"text", "json"}:
            raise SettingsError(f"WEBPACS_LOG_FORMAT={self.log_format!r}: use text or json")
        if not 1 <= len(self.bridge_ae_title) <= 16:
            raise SettingsError("WEBPACS_BRIDGE_AE_TITLE must have 1 to 16 characters (PS3.5 AE VR)")
        self.oidc_settings()
        self.compression_policy()

    def forward_backoff_delays(self) -> tuple[timedelta, ...]:
        """The retry delays of forwarding jobs.

        Raises:
            SettingsError: WEBPACS_FORWARD_BACKOFF is not a list of seconds.
        """
        try:
            return parse_backoff(self.forward_backoff)
        except ValueError as exc:
            raise SettingsError(f"WEBPACS_FORWARD_BACKOFF={exc}") from exc

    def compression_policy(self) -> CompressionPolicy:
        """The compression-on-ingest rules (none by default).

        Raises:
            SettingsError: a rule is malformed; the message names it.
        """
        try:
            return CompressionPolicy.parse(self.ingest_compression, keep_original=self.ingest_keep_original)
        except ValueError as exc:
            raise SettingsError(f"WEBPACS_INGEST_COMPRESSION: {exc}") from exc

    def s3_options(self) -> S3Options:
        """How to reach an s3:// blob store; staged uploads go to the data folder."""
        return S3Options(
            endpoint_url=self.s3_endpoint_url or None,
            region=self.s3_region or None,
            access_key_id=self.s3_access_key_id or None,
            secret_access_key=self.s3_secret_access_key or None,
            path_style=self.s3_path_style,
            staging_dir=(self.data_dir / "staging").resolve(),
        )

    def oidc_settings(self) -> OidcSettings | None:
        """The OpenID Connect provider's settings, or None when WEBPACS_OIDC_ISSUER is not set.

        Raises:
            SettingsError: the audience or role map is missing or malformed, or set without an issuer.
        """
        if not self.oidc_issuer:
            stray = [f"WEBPACS_{name.upper()}" for name in ("oidc_audience", "oidc_role_map") if getattr(self, name)]
            if stray:
                raise SettingsError(f"{' and '.join(stray)} set without WEBPACS_OIDC_ISSUER; set the issuer too")
            return None
        try:
            role_map = parse_role_map(self.oidc_role_map)
        except ValueError as exc:
            raise SettingsError(
                f"WEBPACS_OIDC_ROLE_MAP={self.oidc_role_map!r}: {exc} (e.g. pacs-admin=admin,pacs-reader=viewer)"
            ) from exc
        try:
            return OidcSettings(
                issuer=self.oidc_issuer,
                audience=self.oidc_audience,
                username_claim=self.oidc_username_claim,
                role_claim=self.oidc_role_claim,
                role_map=role_map,
            )
        except ValueError as exc:
            raise SettingsError(str(exc)) from exc


def _convert(variable: str, raw: str, default: Any) -> Any:
    try:
        if isinstance(default, bool):
            if raw.lower() in {"1", "true", "yes", "on"}:
                return True
            if raw.lower() in {"0", "false", "no", "off"}:
                return False
            raise ValueError(raw)
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, Path):
            return Path(raw)
    except ValueError as exc:
        kind = "true/false" if isinstance(default, bool) else "a whole number"
        raise SettingsError(f"{variable}={raw!r} is not {kind}") from exc
    return raw
