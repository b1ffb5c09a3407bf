"""Waiting on a condition in tests: poll until it holds, fail after a timeout (readiness, not sleeps)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable

T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T], timeout: float = 30, interval: float = 0.05) -> T:
    """Poll `probe` until it returns something truthy, and return that; AssertionError after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")
