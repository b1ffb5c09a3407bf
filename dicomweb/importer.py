"""`webpacs import`: send DICOM files, folders, zip files and DICOMDIR sets to a server by STOW-RS.

It talks to the server over HTTP like any client, so it works against a remote archive too.
"""

from __future__ import annotations

import os
import sys
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final

import httpx
from pydicom import dcmread
from pydicom.errors import InvalidDicomError
from pydicom.fileset import FileSet
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from storage.dicom.multipart import MultipartWriter
from storage.dicom.store_response import (
    ERROR_COMMENT,
    FAILED_SOP_SEQUENCE,
    FAILURE_REASON,
    REFERENCED_SOP_INSTANCE_UID,
    REFERENCED_SOP_SEQUENCE,
)

if TYPE_CHECKING:
    import argparse
    from collections.abc import Iterable, Iterator

__all__ = ["add_import_command", "import_paths"]

_PREAMBLE: Final = 128
_BATCH_FILES: Final = 25
_BATCH_BYTES: Final = 64 * 1024**2
_QIDO_UID_CHUNK: Final = 100  # UIDs per "already present?" query, to keep URLs short
_MEDIA_STORAGE_DIRECTORY: Final = "1.2.840.10008.1.3.10"


@dataclass(frozen=True, slots=True)
class _Source:
    """One DICOM file to send: a path, or a member of a zip file."""

    label: str
    sop_uid: str
    size: int
    opener: Callable[[], IO[bytes]]


@dataclass
class ImportSummary:
    """What happened to every file looked at."""

    stored: int = 0
    already_present: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)
    not_dicom: list[str] = field(default_factory=list)


def add_import_command(commands: Any) -> None:
    """Register `webpacs import` on the CLI's sub-command parser."""
    parser = commands.add_parser(
        "import",
        help="send DICOM files, folders, zip files or DICOMDIR sets to a server (STOW-RS)",
        description=(
            "Send DICOM files to a webpacs (or any DICOMweb) server by STOW-RS. Folders are walked "
            "recursively, zip files are read in place, a DICOMDIR names the files of its set. "
            "Files already in the archive are skipped; files that are not DICOM are listed, not fatal."
        ),
    )
    parser.add_argument(
        "paths", nargs="+", type=Path, metavar="PATH", help="files, folders, .zip files or DICOMDIR files"
    )
    parser.add_argument(
        "--url",
        default=os.environ.get("WEBPACS_URL", "http://127.0.0.1:8080"),
        help="server base URL (default http://127.0.0.1:8080, or WEBPACS_URL)",
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("WEBPACS_TOKEN"),
        help="bearer token with the uploader or admin role (or WEBPACS_TOKEN)",
    )
    parser.add_argument("--parallel", type=int, default=4, help="STOW-RS requests in flight at once (default 4)")
    parser.set_defaults(run=_run_import)


def _run_import(args: argparse.Namespace) -> int:
    if not args.token:
        sys.stderr.write(
            "webpacs import: a token is needed: --token T or WEBPACS_TOKEN (create one with 'webpacs token create')\n"
        )
        return 2
    console = Console(stderr=True, soft_wrap=True)  # file names must stay whole, whatever the width
    summary = import_paths(args.paths, url=args.url, token=args.token, parallel=args.parallel, console=console)
    console.print(
        f"[bold]{summary.stored}[/bold] stored, [bold]{summary.already_present}[/bold] already present, "
        f"[bold]{len(summary.failed)}[/bold] failed, {len(summary.not_dicom)} not DICOM"
    )
    for label, reason in summary.failed:
        console.print(f"  [red]failed[/red] {label}: {reason}")
    for label in summary.not_dicom:
        console.print(f"  [yellow]not DICOM[/yellow] {label}")
    return 1 if summary.failed else 0


def import_paths(
    paths: Iterable[Path], *, url: str, token: str, parallel: int = 4, console: Console | None = None
) -> ImportSummary:
    """Send every DICOM file under `paths` to the server at `url`; return what happened."""
    summary = ImportSummary()
    sources = list(_collect(paths, summary))
    headers = {"Authorization": f"Bearer {token}"}
    progress = Progress(
        TextColumn("importing"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        console=console, disable=console is None,
    )  # fmt: skip
    with (
        httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=httpx.Timeout(300, connect=10)) as client,
        progress,
    ):
        task = progress.add_task("import", total=len(sources))
        present = _already_present(client, [source.sop_uid for source in sources])
        to_send = [source for source in sources if source.sop_uid not in present]
        summary.already_present += len(sources) - len(to_send)
        progress.advance(task, len(sources) - len(to_send))
        with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
            futures = {pool.submit(_send, client, batch): batch for batch in _batches(to_send)}
            for future in as_completed(futures):
                batch = futures[future]
                try:
                    stored, failed = future.result()
                except httpx.HTTPError as exc:
                    stored, failed = 0, [(source.label, f"request failed: {exc}") for source in batch]
                summary.stored += stored
                summary.failed.extend(failed)
                progress.advance(task, len(batch))
    return summary


def _collect(paths: Iterable[Path], summary: ImportSummary) -> Iterator[_Source]:
    for path in paths:
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                if child.is_file():
                    yield from _from_file(child, summary)
        elif path.is_file():
            yield from _from_file(path, summary)
        else:
            summary.failed.append((str(path), "no such file or folder"))


def _from_file(path: Path, summary: ImportSummary) -> Iterator[_Source]:
    if zipfile.is_zipfile(path):
        yield from _from_zip(path, summary)
        return
    with path.open("rb") as handle:
        sop_uid, sop_class = _identify(handle)
    if sop_uid is None:
        summary.not_dicom.append(str(path))
    elif sop_class == _MEDIA_STORAGE_DIRECTORY:
        # A DICOMDIR: its files are sent when its folder is walked; named alone, send its set.
        yield from _from_dicomdir(path, summary)
    else:
        yield _Source(str(path), sop_uid, path.stat().st_size, lambda: path.open("rb"))


def _from_dicomdir(path: Path, summary: ImportSummary) -> Iterator[_Source]:
    try:
        file_set = FileSet(dcmread(path))
    except (InvalidDicomError, ValueError) as exc:
        summary.failed.append((str(path), f"unreadable DICOMDIR: {exc}"))
        return
    for instance in file_set:
        member = Path(instance.path)
        if member.resolve() != path.resolve():
            yield from _from_file(member, summary)


def _from_zip(path: Path, summary: ImportSummary) -> Iterator[_Source]:
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if info.is_dir():
                continue
            label = f"{path}!{info.filename}"
            with archive.open(info) as handle:
                sop_uid, sop_class = _identify(handle)
            if sop_uid is None:
                summary.not_dicom.append(label)
            elif sop_class != _MEDIA_STORAGE_DIRECTORY:
                yield _Source(label, sop_uid, info.file_size, _zip_member_opener(path, info.filename))


def _zip_member_opener(path: Path, name: str) -> Callable[[], IO[bytes]]:
    def opener() -> IO[bytes]:
        archive = zipfile.ZipFile(path)
        return archive.open(name)

    return opener


def _identify(handle: IO[bytes]) -> tuple[str | None, str | None]:
    """(SOP Instance UID, SOP Class UID) of a Part-10 file, or (None, None) if it is not one."""
    head = handle.read(_PREAMBLE + 4)
    if len(head) < _PREAMBLE + 4 or head[_PREAMBLE:] != b"DICM":
        return None, None
    handle.seek(0)  # zip members seek too (by reading again from their start)
    try:
        header = dcmread(handle, stop_before_pixels=True, specific_tags=["SOPInstanceUID", "SOPClassUID"])
    except (InvalidDicomError, ValueError, EOFError, OSError):
        return None, None
    sop_uid = str(header.get("SOPInstanceUID", "") or header.file_meta.get("MediaStorageSOPInstanceUID", ""))
    sop_class = str(header.get("SOPClassUID", "") or header.file_meta.get("MediaStorageSOPClassUID", ""))
    return (sop_uid or None), sop_class


def _already_present(client: httpx.Client, sop_uids: list[str]) -> set[str]:
    """The SOP Instance UIDs the server already holds (QIDO-RS, a list of UIDs per query)."""
    present: set[str] = set()
    unique = sorted(set(sop_uids))
    for start in range(0, len(unique), _QIDO_UID_CHUNK):
        chunk = unique[start : start + _QIDO_UID_CHUNK]
        response = client.get(
            "/dicomweb/instances", params={"SOPInstanceUID": ",".join(chunk), "includefield": "00080018"}
        )
        response.raise_for_status()
        present.update(str(row["00080018"]["Value"][0]) for row in response.json())
    return present


def _batches(sources: list[_Source]) -> Iterator[list[_Source]]:
    batch: list[_Source] = []
    size = 0
    for source in sources:
        if batch and (len(batch) >= _BATCH_FILES or size + source.size > _BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(source)
        size += source.size
    if batch:
        yield batch


def _send(client: httpx.Client, batch: list[_Source]) -> tuple[int, list[tuple[str, str]]]:
    """STOW one batch, streaming each file; return (stored count, [(file, reason)])."""
    writer = MultipartWriter()

    def body() -> Iterator[bytes]:
        for source in batch:
            yield writer.part_header("application/dicom")
            with source.opener() as handle:
                while chunk := handle.read(1024 * 1024):
                    yield chunk
        yield writer.closing_delimiter()

    response = client.post(
        "/dicomweb/studies", content=body(), headers={"Content-Type": writer.content_type("application/dicom")}
    )
    if response.status_code not in (200, 202, 409):
        reason = f"HTTP {response.status_code}: {response.text[:300]}"
        return 0, [(source.label, reason) for source in batch]
    answer = response.json()
    by_uid = {source.sop_uid: source.label for source in batch}
    stored = len(answer.get(REFERENCED_SOP_SEQUENCE, {}).get("Value", []))
    failed = []
    for item in answer.get(FAILED_SOP_SEQUENCE, {}).get("Value", []):
        uid = item.get(REFERENCED_SOP_INSTANCE_UID, {}).get("Value", [""])[0]
        comment = item.get(ERROR_COMMENT, {}).get("Value", [""])[0]
        code = item.get(FAILURE_REASON, {}).get("Value", [0])[0]
        failed.append((by_uid.get(uid, uid or "a file of the batch"), f"{comment} (failure reason 0x{code:04X})"))
    return stored, failed
