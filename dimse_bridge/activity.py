"""One log line per association: who called, from where, and what happened (DESIGN.md §4 logging)."""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pynetdicom.association import Association

__all__ = ["Activity", "ActivityLog"]

_LOG = logging.getLogger("dimse_bridge.association")


@dataclass(slots=True)
class Activity:
    """What one association did; counters are bumped by the handlers of its own thread."""

    started: float = field(default_factory=time.monotonic)
    counts: Counter[str] = field(default_factory=Counter)
    outcome: str = "closed"

    def count(self, what: str, n: int = 1) -> None:
        """Add `n` to the counter `what` (e.g. "C-STORE ok")."""
        self.counts[what] += n


class ActivityLog:
    """The activity of every live association, logged as one line when its connection closes.

    Patient names and identifiers never reach this line: only AE titles, addresses and counts.
    """

    def __init__(self) -> None:
        """Start with no association."""
        self._lock = threading.Lock()
        self._by_assoc: weakref.WeakKeyDictionary[Association, Activity] = weakref.WeakKeyDictionary()

    def of(self, assoc: Association) -> Activity:
        """The activity record of `assoc`, created on first use."""
        with self._lock:
            activity = self._by_assoc.get(assoc)
            if activity is None:
                activity = self._by_assoc[assoc] = Activity()
            return activity

    def set_outcome(self, assoc: Association, outcome: str) -> None:
        """Record how the association ended (released, aborted, rejected)."""
        self.of(assoc).outcome = outcome

    def close(self, assoc: Association) -> None:
        """Log the association's line and forget it."""
        with self._lock:
            activity = self._by_assoc.pop(assoc, None) or Activity()
        remote = assoc.remote
        done = ", ".join(f"{n} {what}" for what, n in sorted(activity.counts.items())) or "nothing"
        _LOG.info(
            "association calling=%s peer=%s:%s called=%s %s after %.2f s: %s",
            (remote.get("ae_title") or "?").strip(),
            remote.get("address"),
            remote.get("port"),
            assoc.acceptor.ae_title.strip(),
            activity.outcome,
            time.monotonic() - activity.started,
            done,
        )
