"""`webpacs`: run the PACS, migrate its database, mint tokens, import files, write the OpenAPI spec."""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import yaml

from auth.errors import InvalidToken, UnknownUser
from auth.principals import Role
from dicomweb.app import configure_logging
from dicomweb.metrics import prepare_multiprocess_metrics
from dicomweb.settings import Settings, SettingsError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from auth.tokens import TokenService

__all__ = ["main", "prepared_settings", "storage_flags"]

log = logging.getLogger("webpacs")

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>

_DESCRIPTION = """\
webpacs: a DICOMweb PACS (QIDO-RS, WADO-RS, STOW-RS, WADO-URI) with a DIMSE bridge.

Every setting can also be given as a WEBPACS_<NAME> environment variable
(e.g. WEBPACS_DATABASE_URL, WEBPACS_BLOB_URL, WEBPACS_DATA_DIR); flags win.
Embedded default: SQLite and files under ./var, HTTP on 127.0.0.1:8080, DICOM on 11112.
"""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `webpacs` command line; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    configure_logging("info", os.environ.get("WEBPACS_LOG_FORMAT", "text"))
    try:
        result: int = args.run(args)
    except SettingsError as exc:
        parser.exit(2, f"webpacs: {exc}\n")
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="webpacs", description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the PACS: HTTP server and DIMSE bridge", description=_serve.__doc__)
    storage_flags(serve)
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="HTTP port (default 8080)")
    serve.add_argument("--workers", type=int, help="HTTP worker processes (default 1; use PostgreSQL for more)")
    serve.add_argument("--public-url", help="base URL clients see, when behind a proxy")
    serve.add_argument(
        "--no-bridge", dest="bridge", action="store_false", default=None, help="do not start the DIMSE bridge"
    )
    serve.add_argument("--bridge-port", type=int, help="DICOM port of the bridge (default 11112)")
    serve.add_argument("--bridge-ae-title", help="AE title of the bridge (default WEBPACS)")
    serve.set_defaults(run=_serve)

    migrate = commands.add_parser("migrate", help="create or upgrade the database schema", description=_migrate.__doc__)
    storage_flags(migrate)
    migrate.set_defaults(run=_migrate)

    token = commands.add_parser("token", help="manage API tokens").add_subparsers(required=True, metavar="ACTION")
    create = token.add_parser("create", help="mint an API token and print it", description=_create_token.__doc__)
    storage_flags(create)
    create.add_argument("--name", required=True, help="what the token is for, e.g. 'ris-integration'")
    create.add_argument("--role", required=True, choices=[r.value for r in Role], help="what it may do")
    create.add_argument("--user", help="make it a personal token of this user (acts with the user's role and filter)")
    create.add_argument("--days", type=_validity_days, help="validity in days, 1 to 36500 (default: until revoked)")
    create.set_defaults(run=_create_token)

    openapi = commands.add_parser("openapi", help="write the OpenAPI spec", description=_openapi.__doc__)
    openapi.add_argument(
        "--output",
        "-o",
        type=Path,
        default=Path("openapi/webpacs.yaml"),
        help="file to write (default openapi/webpacs.yaml; '-' for stdout)",
    )
    openapi.set_defaults(run=_openapi)

    sweep = commands.add_parser("sweep", help="remove stored-but-never-indexed blobs", description=_sweep.__doc__)
    storage_flags(sweep)
    sweep.add_argument(
        "--grace",
        type=float,
        default=3600,
        help="spare blobs a store journaled less than this many seconds ago (default 3600)",
    )
    sweep.add_argument("--all", action="store_true", help="look at every blob, not only the last two days'")
    sweep.set_defaults(run=_sweep)

    from dicomweb.forward_commands import add_forward_command
    from dicomweb.importer import add_import_command
    from dicomweb.migrate_storage import add_migrate_storage_command
    from dicomweb.operations import add_operations_commands
    from dicomweb.study_management import add_study_commands
    from dicomweb.user_commands import add_user_command

    add_import_command(commands)
    add_user_command(commands)
    add_migrate_storage_command(commands)
    add_operations_commands(commands)
    add_study_commands(commands)
    add_forward_command(commands)
    return parser


def _validity_days(text: str) -> int:
    days = int(text)
    if not 1 <= days <= 36_500:
        raise argparse.ArgumentTypeError(f"{days} is not between 1 and 36500 days")
    return days


def storage_flags(parser: argparse.ArgumentParser) -> None:
    """Add the flags that locate the archive (data folder, database, blobs)."""
    parser.add_argument("--data-dir", type=Path, help="folder for the embedded database and blobs (default ./var)")
    parser.add_argument("--database-url", help="sqlite:///path or postgresql+psycopg://user@host/db")
    parser.add_argument("--blob-url", help="folder path, file:///path or s3://bucket/prefix for instance files")


def _settings(args: argparse.Namespace) -> Settings:
    names = (
        "host",
        "port",
        "workers",
        "public_url",
        "bridge",
        "bridge_port",
        "bridge_ae_title",
        "data_dir",
        "database_url",
        "blob_url",
    )
    return Settings.from_env(**{name: getattr(args, name, None) for name in names})


def prepared_settings(args: argparse.Namespace) -> Settings:
    """The settings of a command's flags, with the data folder and schema made ready."""
    settings = _settings(args)
    _prepare(settings)
    return settings


def _prepare(settings: Settings) -> None:
    """Create the data folder and bring the schema up to date."""
    from storage.index.database import migrate

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    migrate(settings.effective_database_url)


def _serve(args: argparse.Namespace) -> int:
    """Run the PACS: migrate the database, clean up after a crash, start the bridge and HTTP server."""
    import uvicorn

    from dicomweb.app import build_context
    from dicomweb.user_commands import create_initial_admin

    settings = _settings(args)
    _prepare(settings)
    context = build_context(settings)
    create_initial_admin(settings, context.access.users)
    problems = context.archive.readiness_problems()
    if "blobs" in problems:  # a missing bucket or refused credentials stop the start, not the first upload
        raise SettingsError(f"WEBPACS_BLOB_URL={settings.effective_blob_url}: {problems['blobs']}")
    # Before any worker runs, this host writes nothing: its own journaled blobs are its previous run's.
    removed = context.archive.sweep_orphans(grace_seconds=settings.sweep_grace_seconds, after_restart=True)
    # Parts spooled by requests that the previous process never finished.
    shutil.rmtree(context.archive.blobs.staging_dir(), ignore_errors=True)
    if removed:
        log.warning("removed %d orphaned blob(s) left by an interrupted store", removed)
    _export(settings)
    prepare_multiprocess_metrics(settings)
    bridge = _BridgeLauncher(settings, context.access.tokens) if settings.bridge else None
    if bridge is not None:
        bridge.start()
    log.info("webpacs on http://%s:%d (DICOMweb at /dicomweb)", settings.host, settings.port)
    try:
        uvicorn.run(
            "dicomweb.app:create_app_from_env",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            log_level=settings.log_level,
            # JSON lines: uvicorn's own records go through the root logger's JSON formatter too.
            log_config=None if settings.log_format == "json" else uvicorn.config.LOGGING_CONFIG,
            access_log=False,
            timeout_graceful_shutdown=5,
        )
    finally:
        if bridge is not None:
            bridge.stop()
    return 0


def _export(settings: Settings) -> None:
    """Hand the settings to uvicorn's worker processes, which build theirs from the environment."""
    os.environ.update(
        {
            "WEBPACS_DATA_DIR": str(settings.data_dir.resolve()),
            "WEBPACS_DATABASE_URL": settings.effective_database_url,
            "WEBPACS_BLOB_URL": settings.effective_blob_url,
            "WEBPACS_PUBLIC_URL": settings.public_url,
            "WEBPACS_MAX_RESULTS": str(settings.max_results),
            "WEBPACS_MAX_REQUEST_BYTES": str(settings.max_request_bytes),
        }
    )


class _BridgeLauncher:
    """Starts `webpacs-bridge` once the HTTP server answers, and stops it with the server."""

    def __init__(self, settings: Settings, tokens: TokenService) -> None:
        self._settings = settings
        self._tokens = tokens
        self._process: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()

    def start(self) -> None:
        threading.Thread(target=self._run, name="bridge-launcher", daemon=True).start()

    def _run(self) -> None:
        host = "127.0.0.1" if self._settings.host in ("0.0.0.0", "::") else self._settings.host  # noqa: S104
        url = f"http://{host}:{self._settings.port}"
        while not self._stopping.is_set():
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        if self._stopping.is_set():
            return
        environment = {
            **os.environ,
            "WEBPACS_BRIDGE_SERVER_URL": url,
            "WEBPACS_BRIDGE_TOKEN": self._bridge_token(),
            "WEBPACS_BRIDGE_AE_TITLE": self._settings.bridge_ae_title,
            "WEBPACS_BRIDGE_PORT": str(self._settings.bridge_port),
        }
        self._process = subprocess.Popen(
            [sys.executable, "-m", "dimse_bridge"], env=environment, preexec_fn=_die_with_parent
        )
        log.info("DIMSE bridge started (AE %s, port %d)", self._settings.bridge_ae_title, self._settings.bridge_port)
        # This thread stays until the bridge ends: the kernel's parent-death signal follows the
        # thread that started the child, not the process.
        code = self._process.wait()
        if not self._stopping.is_set():
            log.error("the DIMSE bridge exited with status %d; see its messages above", code)

    def _bridge_token(self) -> str:
        """The bridge's token, kept in the data folder (mode 0600) and minted on first start."""
        path = self._settings.data_dir / "bridge.token"
        if path.exists():
            token = path.read_text().strip()
            try:
                self._tokens.verify(token)
                return token
            except InvalidToken:
                log.warning("the stored bridge token is no longer valid; minting a new one")
        token = self._tokens.create("dimse-bridge", Role.SERVICE.value)
        path.touch(mode=0o600)
        path.write_text(token)
        return token

    def stop(self) -> None:
        self._stopping.set()
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()


def _die_with_parent() -> None:
    """In the bridge child: get SIGTERM when `webpacs serve` dies, even by SIGKILL (Linux prctl).

    Otherwise an orphaned bridge would keep the DICOM port and answer C-ECHO for a dead server.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _migrate(args: argparse.Namespace) -> int:
    """Create the database schema, or upgrade it to this version (Alembic migrations)."""
    settings = _settings(args)
    _prepare(settings)
    print(f"database schema is up to date: {settings.effective_database_url}")  # noqa: T201
    return 0


def _create_token(args: argparse.Namespace) -> int:
    """Mint an API token with a role and print only the token (it is shown once, stored hashed)."""
    from dicomweb.app import build_context

    access = build_context(prepared_settings(args)).access
    user_id = None
    if args.user:
        try:
            user_id = access.users.get(args.user).id
        except UnknownUser as exc:
            sys.stderr.write(f"webpacs: {exc}; create it with 'webpacs user create'\n")
            return 1
    token = access.tokens.create(args.name, args.role, valid_days=args.days, user_id=user_id)
    print(token)  # noqa: T201
    return 0


def _openapi(args: argparse.Namespace) -> int:
    """Write the OpenAPI description of every route, as served at /openapi.json, in YAML."""
    from dicomweb.app import create_app

    with tempfile.TemporaryDirectory() as scratch:
        settings = Settings.from_env({}, data_dir=Path(scratch), bridge=False)
        _prepare(settings)
        schema = create_app(settings).openapi_schema.to_schema()
    text = yaml.safe_dump(schema, sort_keys=False, allow_unicode=True)
    if str(args.output) == "-":
        sys.stdout.write(text)
    else:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
    return 0


def _sweep(args: argparse.Namespace) -> int:
    """Remove blobs no index row references and no store is writing (left by a crash between store and index).

    Safe while servers run, on this host or others: a blob a store journaled less than --grace
    seconds ago is spared.
    """
    from dicomweb.app import build_context

    settings = _settings(args)
    _prepare(settings)
    removed = build_context(settings).archive.sweep_orphans(
        grace_seconds=args.grace, recent_days=None if args.all else 2
    )
    print(f"removed {removed} orphaned blob(s)")  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
