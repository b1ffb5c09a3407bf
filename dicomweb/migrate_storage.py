"""`webpacs migrate-storage`: move an archive (typically the embedded SQLite + folder) to PostgreSQL + S3."""

from __future__ import annotations

import argparse
import sys

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

from dicomweb.settings import SettingsError

__all__ = ["add_migrate_storage_command"]

_DESCRIPTION = """\
Copy every blob and every index row of this archive (located by --data-dir, --database-url,
--blob-url or their WEBPACS_* variables, as for `serve`) to another database and blob store:
typically the embedded default to PostgreSQL and an S3-compatible store. WEBPACS_S3_* variables
reach the target bucket.

Each blob's SHA-256 is checked against the index while it is copied, and the store verifies it
again on upload; the index rows follow the blobs, so the target never points at missing bytes.
Interrupted? Run the same command again: what was copied is skipped. Stop the server first (or
copy again after stopping it, to take what arrived meanwhile); then start it on the target:
WEBPACS_DATABASE_URL=<target> WEBPACS_BLOB_URL=<target> webpacs serve.
"""


def add_migrate_storage_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `webpacs migrate-storage`."""
    from dicomweb.cli import storage_flags

    command = commands.add_parser(
        "migrate-storage",
        help="copy this archive to PostgreSQL + S3 (resumable, checksums verified)",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    storage_flags(command)
    command.add_argument(
        "--to-database-url", required=True, help="the target index, e.g. postgresql+psycopg://pacs@db/pacs"
    )
    command.add_argument("--to-blob-url", required=True, help="the target blob store, e.g. s3://bucket/prefix")
    command.add_argument(
        "--verify", action="store_true", help="also read back blobs already in the target and check their SHA-256"
    )
    command.set_defaults(run=_migrate_storage)


def _migrate_storage(args: argparse.Namespace) -> int:
    """Copy the archive; print what was copied."""
    from dataclasses import replace

    from dicomweb.cli import prepared_settings
    from storage.blobs import open_blob_store
    from storage.copy_archive import copy_archive
    from storage.errors import ArchiveError
    from storage.index.database import migrate, open_engine

    source = prepared_settings(args)
    target = replace(source, database_url=args.to_database_url, blob_url=args.to_blob_url)
    target.validate()
    if (target.effective_database_url, target.effective_blob_url) == (
        source.effective_database_url,
        source.effective_blob_url,
    ):
        raise SettingsError("--to-database-url and --to-blob-url name this very archive: nothing to copy")
    console = Console(stderr=True)
    engines = [open_engine(source.effective_database_url), open_engine(target.effective_database_url)]
    try:
        migrate(target.effective_database_url)
        source_blobs = open_blob_store(source.effective_blob_url, s3=source.s3_options())
        target_blobs = open_blob_store(target.effective_blob_url, s3=target.s3_options())
        target_blobs.check()
        progress = Progress(
            TextColumn("copying blobs"), BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(),
            console=console,
        )  # fmt: skip
        with progress:
            task = progress.add_task("blobs")
            report = copy_archive(
                (engines[0], source_blobs),
                (engines[1], target_blobs),
                verify=args.verify,
                on_start=lambda _count, total: progress.update(task, total=total),
                on_blob=lambda size: progress.advance(task, size),
            )
    except ArchiveError as exc:
        console.print(f"[red]migrate-storage stopped:[/red] {exc}\nFix the cause and run the same command again.")
        return 1
    finally:
        for engine in engines:
            engine.dispose()
    sys.stdout.write(
        f"copied {report.blobs_copied} blob(s) ({report.bytes_copied} bytes), {report.blobs_present} already there; "
        f"{report.rows.get('instance', 0)} instance(s), {report.rows.get('study', 0)} study(ies) in "
        f"{target.effective_database_url}\n"
    )
    return 0
