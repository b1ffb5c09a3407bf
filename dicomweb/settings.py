"""The server's settings: one frozen dataclass, built once from WEBPACS_* variables and CLI flags."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

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
    public_url: str = ""  # base URL clients see (behind a proxy); default: from each request
    max_request_bytes: int = 64 * 1024**3  # STOW bodies above this are refused (413)
    max_results: int = 20_000  # QIDO answers are truncated here, with a Warning header
    workers: int = 1
    # At start, unreferenced blobs older than this are orphans of a crash and are removed. 0 is
    # right when this host is the only writer; with several hosts sharing one store, set it above
    # the longest store so another host's in-flight instance is spared.
    sweep_grace_seconds: int = 0
    log_level: str = "info"
    bridge: bool = True
    bridge_port: int = 11112
    bridge_ae_title: str = "WEBPACS"

    @property
    def effective_database_url(self) -> str:
        """The database URL, defaulting to SQLite in the data folder."""
        return self.database_url or f"sqlite:///{(self.data_dir / 'index.sqlite3').resolve()}"

    @property
    def effective_blob_url(self) -> str:
        """The blob store URL, defaulting to a folder in the data folder."""
        return self.blob_url or str((self.data_dir / "blobs").resolve())

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
        if self.max_results < 1:
            raise SettingsError(f"WEBPACS_MAX_RESULTS={self.max_results} must be at least 1")
        if self.database_url and not self.database_url.startswith(("sqlite", "postgresql")):
            raise SettingsError(
                f"WEBPACS_DATABASE_URL={self.database_url!r}: use sqlite:///path or postgresql+psycopg://user@host/db"
            )
        if self.log_level.lower() not in {"debug", "info", "warning", "error"}:
            raise SettingsError(f"WEBPACS_LOG_LEVEL={self.log_level!r}: use debug, info, warning or error")
        if not 1 <= len(self.bridge_ae_title) <= 16:
            raise SettingsError("WEBPACS_BRIDGE_AE_TITLE must have 1 to 16 characters (PS3.5 AE VR)")


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
