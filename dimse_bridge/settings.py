"""The bridge's settings: one frozen dataclass, built once from `WEBPACS_BRIDGE_*` and CLI flags.

A bad value stops the process with a message that names the variable or flag (DESIGN.md §4).
"""

from __future__ import annotations

import os
import re
from dataclasses import MISSING, dataclass, field, fields
from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "ENV_PREFIX",
    "BridgeSettings",
    "SettingsError",
    "validate_ae_title",
]

ENV_PREFIX: Final = "WEBPACS_BRIDGE_"

# PS3.5 §6.2 (VR AE): at most 16 characters of the default repertoire, no backslash or control
# characters; leading and trailing spaces are not significant, so a title of only spaces is empty.
_AE_TITLE: Final = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")


class SettingsError(ValueError):
    """A setting has a value the bridge cannot run with; the message names the setting."""


def validate_ae_title(value: str, name: str) -> str:
    """Return the AE title stripped of padding, or raise if PS3.5 §6.2 forbids it.

    Raises:
        SettingsError: the title is empty, longer than 16 characters or has a forbidden character.
    """
    stripped = value.strip()
    if not stripped or not _AE_TITLE.match(stripped):
        raise SettingsError(
            f"{name}={value!r} is not a valid AE title: use 1 to 16 printable ASCII characters, no backslash"
        )
    return stripped


@dataclass(frozen=True, slots=True)
class BridgeSettings:
    """Everything the bridge process needs; validated in `__post_init__`.

    Attributes:
        server_url: base URL of the webpacs server (DICOMweb under `/dicomweb`, API under `/api`).
        token: bearer token the bridge presents on every request.
        ae_title: the bridge's own AE title (the Called AE Title peers must use).
        port: TCP port to listen on.
        bind_host: address to listen on (loopback by default, DESIGN.md §4).
        accept_unregistered: accept associations from any calling AE, not only registered ones.
        max_associations: associations served at once; more are rejected (PS3.8 §9.3.4, local
            limit exceeded).
        acse_timeout: seconds to wait for association messages.
        dimse_timeout: seconds to wait for DIMSE messages.
        network_timeout: seconds of silence on a connection before it is dropped.
        http_timeout: seconds for one HTTP request to the server (connect, read, write).
        registry_ttl: seconds the AE registry fetched from the server is reused.
        stow_batch_instances: most instances sent in one STOW-RS request.
        stow_batch_bytes: most bytes (sum of file sizes) sent in one STOW-RS request.
        stow_concurrency: STOW-RS requests in flight at once.
        qido_page_size: `limit` of each QIDO-RS page.
        forward: deliver the server's forwarding jobs (claimed over the API).
        forward_poll: seconds between two claims when no job was due.
        log_level: Python logging level name.
    """

    server_url: str
    token: str = field(repr=False)
    ae_title: str = "WEBPACS"
    port: int = 11112
    bind_host: str = "127.0.0.1"
    accept_unregistered: bool = False
    max_associations: int = 16
    acse_timeout: float = 30.0
    dimse_timeout: float = 60.0
    network_timeout: float = 120.0
    http_timeout: float = 120.0
    registry_ttl: float = 5.0
    stow_batch_instances: int = 32
    stow_batch_bytes: int = 256 * 1024 * 1024
    stow_concurrency: int = 4
    qido_page_size: int = 1000
    forward: bool = True
    forward_poll: float = 5.0
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        """Check every value once, at start.

        Raises:
            SettingsError: a value is out of range or malformed.
        """
        parts = urlsplit(self.server_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise SettingsError(
                f"server URL {self.server_url!r} is not an http(s) URL: give e.g. --server http://127.0.0.1:8080"
            )
        if not self.token:
            raise SettingsError(f"no token: set {ENV_PREFIX}TOKEN or pass --token (an admin or service token)")
        object.__setattr__(self, "server_url", self.server_url.rstrip("/"))
        object.__setattr__(self, "ae_title", validate_ae_title(self.ae_title, "ae_title"))
        if not 0 < self.port < 65536:
            raise SettingsError(f"port={self.port} is out of range: use 1 to 65535")
        for name in (
            "max_associations",
            "stow_batch_instances",
            "stow_batch_bytes",
            "stow_concurrency",
            "qido_page_size",
        ):
            if getattr(self, name) < 1:
                raise SettingsError(f"{name}={getattr(self, name)} must be at least 1")
        for name in ("acse_timeout", "dimse_timeout", "network_timeout", "http_timeout", "forward_poll"):
            if getattr(self, name) <= 0:
                raise SettingsError(f"{name}={getattr(self, name)} must be a positive number")
        if self.registry_ttl < 0:
            raise SettingsError(f"registry_ttl={self.registry_ttl} must not be negative")
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise SettingsError(f"log_level={self.log_level!r}: use DEBUG, INFO, WARNING or ERROR")
        object.__setattr__(self, "log_level", self.log_level.upper())

    @classmethod
    def from_sources(cls, overrides: Mapping[str, object], environ: Mapping[str, str] | None = None) -> BridgeSettings:
        """Build settings: CLI overrides win over `WEBPACS_BRIDGE_<FIELD>` variables over defaults.

        Args:
            overrides: field name -> value from the command line (None means "not given").
            environ: the environment to read (the process environment when None).

        Raises:
            SettingsError: a variable cannot be converted, or a value fails validation.
        """
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for name, default in _FIELD_DEFAULTS.items():
            given = overrides.get(name)
            if given is not None:
                values[name] = given
                continue
            raw = env.get(ENV_PREFIX + name.upper())
            if raw is not None:
                values[name] = _convert(name, raw, default)
        if "server_url" not in values:
            raise SettingsError(f"no server URL: set {ENV_PREFIX}SERVER_URL or pass --server")
        return cls(**values)  # type: ignore[arg-type]  # checked field by field in __post_init__


def _convert(name: str, raw: str, default: object) -> object:
    variable = ENV_PREFIX + name.upper()
    if isinstance(default, bool):
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off", ""):
            return False
        raise SettingsError(f"{variable}={raw!r} is not a boolean: use true or false")
    try:
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
    except ValueError as exc:
        raise SettingsError(f"{variable}={raw!r} is not a number") from exc
    return raw


# Defaults come from the dataclass itself (required fields read as ""), so they are written once.
_FIELD_DEFAULTS: Final[dict[str, object]] = {
    item.name: "" if item.default is MISSING else item.default for item in fields(BridgeSettings)
}
