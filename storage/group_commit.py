"""Group commit: one index transaction at a time per process, batching the stores that wait for it.

Concurrent STOW parts and C-STOREs then share index transactions instead of queueing one by one on
the database's write lock (SQLite's busy handler sleeps up to 100 ms between tries). A store that
finds no transaction in progress writes its own at once, in its own thread: the common case of one
store at a time pays no hand-off to another thread. Stores arriving meanwhile wait, and a
background thread indexes them in batches. A store still returns only after the transaction
holding its instance has committed.
"""

from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import Future
from typing import TYPE_CHECKING, Final

from storage.errors import ArchiveError

if TYPE_CHECKING:
    from storage.index import AddOutcome, Index, NewInstance

__all__ = ["IndexWriter"]

# More items in one transaction would hold the write lock for longer than it saves.
_MAX_BATCH: Final = 64


class IndexWriter:
    """Adds instances to an index, one transaction at a time, batching whatever waits meanwhile."""

    def __init__(self, index: Index) -> None:
        """Write to `index`; the batching thread starts when a store first has to wait."""
        self._index = index
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)  # notified when a batch may start
        self._writing = False  # a transaction is in progress, in a store's thread or the batching one
        self._waiting: deque[tuple[NewInstance, Future[AddOutcome]]] = deque()
        self._thread: threading.Thread | None = None

    def add(self, item: NewInstance) -> AddOutcome:
        """Index `item` and return its outcome once its transaction has committed.

        Raises:
            ArchiveError: the index refused the item (e.g. ConflictingInstance).
        """
        with self._lock:
            alone = not self._writing and not self._waiting
            if alone:
                self._writing = True
            else:
                outcome: Future[AddOutcome] = Future()
                self._waiting.append((item, outcome))
                self._ensure_thread()
                self._ready.notify()
        if not alone:
            return outcome.result()
        try:
            (result,) = self._index.add_instances([item])
        finally:
            with self._lock:
                self._writing = False
                self._ready.notify()
        if isinstance(result, ArchiveError):
            raise result
        return result

    def _ensure_thread(self) -> None:
        # Called with the lock held.
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="index-writer", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            with self._lock:
                while self._writing or not self._waiting:
                    self._ready.wait()
                self._writing = True
                batch = [self._waiting.popleft() for _ in range(min(len(self._waiting), _MAX_BATCH))]
            try:
                self._write(batch)
            finally:
                with self._lock:
                    self._writing = False

    def _write(self, batch: list[tuple[NewInstance, Future[AddOutcome]]]) -> None:
        try:
            results = self._index.add_instances([item for item, _ in batch])
        except BaseException as exc:  # noqa: BLE001 - handed to every waiting store, which re-raises it
            for _, outcome in batch:
                outcome.set_exception(exc)
            return
        for (_, outcome), result in zip(batch, results, strict=True):
            if isinstance(result, ArchiveError):
                outcome.set_exception(result)
            else:
                outcome.set_result(result)
