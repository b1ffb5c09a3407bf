"""Which studies a restricted principal may open, remembered briefly.

A viewer fetches hundreds of frames of one study in a burst; asking the index once per study and
policy, not once per frame, keeps the access check far below a millisecond per request. Only "yes"
is remembered (a study stored a moment ago is never hidden by an earlier "no"); a change of a
user's filter or of a study's attributes shows within `ttl_seconds`, like the other auth caches.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

import anyio.to_thread

if TYPE_CHECKING:
    from auth.principals import StudyFilter
    from storage.index import Index

__all__ = ["VisibleStudies"]


class VisibleStudies:
    """A bounded, time-limited memory of (policy, study) pairs the index said yes to."""

    def __init__(self, index: Index, *, ttl_seconds: float = 10.0, max_entries: int = 10_000) -> None:
        """Ask `index`; remember at most `max_entries` answers for `ttl_seconds` each."""
        self._index = index
        self._ttl = ttl_seconds
        self._max = max_entries
        self._seen: dict[tuple[StudyFilter, str], float] = {}
        self._lock = threading.Lock()

    async def allows(self, policy: StudyFilter, study_uid: str) -> bool:
        """Whether the study exists and passes `policy`.

        Raises:
            ValueError: `policy` names a keyword that is not a study-level key.
        """
        key = (policy, study_uid)
        now = time.monotonic()
        with self._lock:
            expires = self._seen.get(key)
        if expires is not None and expires > now:
            return True
        if not await anyio.to_thread.run_sync(self._index.study_visible, study_uid, policy):
            return False
        with self._lock:
            if len(self._seen) >= self._max:
                self._seen.pop(next(iter(self._seen)))  # the oldest entry
            self._seen[key] = now + self._ttl
        return True
