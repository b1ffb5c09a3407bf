"""Brute-force protection: at most N failed attempts per key (account, address, link) per window.

Kept in the process's memory: with several workers each allows N, so the bound is N x workers,
still far from what guessing a password or a PIN needs.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque

from auth.errors import TooManyAttempts

__all__ = ["FailureLimiter"]


class FailureLimiter:
    """Count failures per key over a sliding window and refuse further attempts past the limit."""

    def __init__(self, *, max_failures: int = 5, window_seconds: float = 300.0) -> None:
        """Allow `max_failures` failures per key in any `window_seconds`."""
        self._max = max_failures
        self._window = window_seconds
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def check(self, *keys: str) -> None:
        """Refuse an attempt when any of `keys` has used up its failures.

        Raises:
            TooManyAttempts: with the seconds until the oldest failure leaves the window.
        """
        now = time.monotonic()
        with self._lock:
            for key in keys:
                recent = self._recent(key, now)
                if not recent:
                    del self._failures[key]  # bounded memory whatever the number of keys tried
                elif len(recent) >= self._max:
                    retry_after = max(1, math.ceil(recent[0] + self._window - now))
                    raise TooManyAttempts(
                        f"too many failed attempts; try again in {retry_after} s", retry_after=retry_after
                    )

    def fail(self, *keys: str) -> None:
        """Count one failed attempt against each key."""
        now = time.monotonic()
        with self._lock:
            for key in keys:
                self._recent(key, now).append(now)

    def succeed(self, key: str) -> None:
        """Forget a key's failures (a right password clears the account, not the address)."""
        with self._lock:
            self._failures.pop(key, None)

    def _recent(self, key: str, now: float) -> deque[float]:
        recent = self._failures.setdefault(key, deque())
        while recent and recent[0] <= now - self._window:
            recent.popleft()
        return recent
