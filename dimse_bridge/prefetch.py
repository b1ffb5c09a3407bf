"""WADO-RS parts fetched ahead: the next instances are read and spooled while the current one is sent.

A C-MOVE or C-GET sub-operation is a DIMSE round trip (C-STORE-RQ out, C-STORE-RSP back) during which
the HTTP stream of the retrieval sat idle; reading and spooling the next part waited for it. Here a
background thread reads the WADO-RS streams and spools up to `depth` parts ahead (files, never memory),
so each instance costs the longer of the two steps instead of their sum.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from dimse_bridge.client import BridgeError

if TYPE_CHECKING:
    from collections.abc import Generator, Sequence

    from dimse_bridge.client import DicomWebClient

__all__ = ["FetchedPart", "fetch_parts"]

# How often a producer blocked on a full hand-off looks whether the consumer has gone.
_STOP_CHECK: Final = 0.05


@dataclass(frozen=True, slots=True)
class FetchedPart:
    """One part of the WADO-RS resource `wado_path`, spooled to `path`; or why that resource failed."""

    wado_path: str
    path: Path | None = None
    error: BridgeError | None = None


@dataclass(frozen=True, slots=True)
class _Crash:
    error: BaseException


_END: Final = object()


def fetch_parts(
    client: DicomWebClient, wado_paths: Sequence[str], directory: Path, *, depth: int
) -> Generator[FetchedPart, None, None]:
    """Every part of every resource in `wado_paths`, as stored, fetched up to `depth` parts ahead.

    A resource that fails (BridgeError) yields one `FetchedPart` with the error and the next one is
    fetched. The caller deletes each part file it is given; closing the generator early stops the
    fetching and deletes the parts spooled but not handed over. Use it with `contextlib.closing`.

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
                            if not offer(FetchedPart(wado_path, path=part)):
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
