"""Group commit: one writer thread per process indexes what concurrent stores hand it, in batches.

Concurrent STOW parts and C-STOREs then share index transactions instead of queueing one by one on
the database's write lock (SQLite's busy handler sleeps up to 100 ms between tries). A store still
returns only after the transaction holding its instance has committed.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from queue import Empty, SimpleQueue
from typing import TYPE_CHECKING, Final

from storage.errors import ArchiveError

if TYPE_CHECKING:
    from storage.index import AddOutcome, Index, NewInstance

__all__ = ["IndexWriter"]

# More items in one transaction would hold the write lock for longer than it saves.
_MAX_BATCH: Final = 64


class IndexWriter:
    """Adds instances to an index through one background thread, batching whatever is waiting."""

    def __init__(self, index: Index) -> None:
        """Write to `index`; the thread starts with the first add."""
        self._index = index
        self._waiting: SimpleQueue[tuple[NewInstance, Future[AddOutcome]]] = SimpleQueue()
        self._start = threading.Lock()
        self._thread: threading.Thread | None = None

    def add(self, item: NewInstance) -> AddOutcome:
        """Index `item` and return its outcome once its transaction has committed.

        Raises:
            ArchiveError: the index refused the item (e.g. ConflictingInstance).
        """
        outcome: Future[AddOutcome] = Future()
        self._waiting.put((item, outcome))
        self._ensure_thread()
        return outcome.result()

    def _ensure_thread(self) -> None:
        with self._start:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="index-writer", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            batch = [self._waiting.get()]
            while len(batch) < _MAX_BATCH:
                try:
                    batch.append(self._waiting.get_nowait())
                except Empty:
                    break
            try:
                results = self._index.add_instances([item for item, _ in batch])
            except BaseException as exc:  # noqa: BLE001 - handed to every waiting store, which re-raises it
                for _, outcome in batch:
                    outcome.set_exception(exc)
                continue
            for (_, outcome), result in zip(batch, results, strict=True):
                if isinstance(result, ArchiveError):
                    outcome.set_exception(result)
                else:
                    outcome.set_result(result)
