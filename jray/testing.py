"""Helpers for testing code that uses jray (and for jray's own tests).

Every wait here is bounded: a helper that polls takes a timeout and gives up
when it runs out, so a broken cluster fails a test instead of hanging it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

POLL_S = 0.05


def eventually(cond: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll ``cond`` until it is true or ``timeout`` seconds pass; return its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(POLL_S)
    return bool(cond())
