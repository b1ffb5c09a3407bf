"""WADO-RS parts fetched ahead: the next instances are read and spooled while the current one is sent.

A C-MOVE or C-GET sub-operation is a DIMSE round trip (C-STORE-RQ out, C-STORE-RSP back) during which
the HTTP stream of the retrieval sat idle; reading and spooling the next part waited for it. Here a
background thread reads the WADO-RS streams and spools up to `depth` parts ahead (files, never memory),
and reads each part's File Meta, so each instance costs the longer of the two steps instead of their sum.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from pydicom.dataset import FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_file_meta_info

from dimse_bridge.client import BridgeError

if TYPE_CHECKING:
    from collections.abc import Generator, Sequence

    from dimse_bridge.client import DicomWebClient

__all__ = ["FetchedPart", "fetch_parts"]

# How often a producer blocked on a full hand-off looks whether the consumer has gone.
_STOP_CHECK: Final = 0.05


@dataclass(frozen=True, slots=True)
class FetchedPart:
    """One part of the WADO-RS resource `wado_path` spooled to `path`, or why it failed (`error`).

    `meta` is the part's File Meta Information, read while the previous part was being sent.
    """

    wado_path: str
    path: Path | None = None
    meta: FileMetaDataset | None = None
    error: BridgeError | None = None


@dataclass(frozen=True, slots=True)
class _Crash:
    error: BaseException


_END: Final = object()


def _with_file_meta(wado_path: str, part: Path) -> FetchedPart:
    """The spooled `part` with its File Meta; a part that is no Part-10 file is deleted and reported."""
    try:
        return FetchedPart(wado_path, path=part, meta=read_file_meta_info(part))
    except (InvalidDicomError, OSError, ValueError) as exc:
        part.unlink(missing_ok=True)
        return FetchedPart(wado_path, error=BridgeError(f"a part of WADO-RS {wado_path} is not a DICOM file: {exc}"))


def fetch_parts(
    client: DicomWebClient, wado_paths: Sequence[str], directory: Path, *, depth: int
) -> Generator[FetchedPart, None, None]:
    """Every part of every resource in `wado_paths`, as stored, fetched up to `depth` parts ahead.

    A resource that fails (BridgeError) yields one `FetchedPart` with the error and the next one is
    fetched; so does a part that is not a Part-10 file, and the rest of its resource follows. The
    caller deletes each part file it is given; closing the generator early stops the fetching and
    deletes the parts spooled but not handed over. Use it with `contextlib.closing`.

    Raises:
        Exception: whatever unexpected error the fetching thread met, re-raised here.
    """
    handoff: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def offer(item: object) -> bool:
        while not stop.is_set():
            try:
                handoff.put(item, timeout=_STOP_CHECK)
            except queue.Full:
                continue
            return True
        return False

    def produce() -> None:
        try:
            for wado_path in wado_paths:
                try:
                    with client.retrieve(wado_path, directory) as parts:
                        for part in parts:
                            fetched = _with_file_meta(wado_path, part)
                            if not offer(fetched):
                                part.unlink(missing_ok=True)
                                return
                except BridgeError as exc:
                    if not offer(FetchedPart(wado_path, error=exc)):
                        return
            offer(_END)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which re-raises it
            offer(_Crash(exc))

    fetcher = threading.Thread(target=produce, name="wado-prefetch", daemon=True)
    fetcher.start()
    try:
        while (item := handoff.get()) is not _END:
            if isinstance(item, _Crash):
                raise item.error
            assert isinstance(item, FetchedPart)  # noqa: S101 - the only other kind of item
            yield item
    finally:
        stop.set()
        # The producer notices within _STOP_CHECK, or once its current read returns (HTTP timeout).
        fetcher.join()
        with contextlib.suppress(queue.Empty):
            while True:
                left = handoff.get_nowait()
                if isinstance(left, FetchedPart) and left.path is not None:
                    left.path.unlink(missing_ok=True)
