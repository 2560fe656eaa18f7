"""Helpers for testing code that uses jray (and for jray's own tests).

Every wait here is bounded: a helper that polls takes a timeout and gives up
when it runs out, so a broken cluster fails a test instead of hanging it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import psutil

POLL_S = 0.05


def eventually(cond: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll ``cond`` until it is true or ``timeout`` seconds pass; return its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(POLL_S)
    return bool(cond())


def jray_processes(root: psutil.Process | None = None) -> list[psutil.Process]:
    """jray's own processes (head, node daemon, workers, actors) among ``root``'s descendants.

    ``root`` defaults to this process. Processes that exit while being looked at
    are skipped.
    """
    out = []
    for p in (root or psutil.Process()).children(recursive=True):
        try:
            if any("jray._private" in part for part in p.cmdline()):
                out.append(p)
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            pass
    return out
