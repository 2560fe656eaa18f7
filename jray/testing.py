"""Helpers for testing code that uses jray (and for jray's own tests).

Every wait here is bounded: a helper that polls takes a timeout and gives up
when it runs out, so a broken cluster fails a test instead of hanging it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

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


def living(procs: list[psutil.Process]) -> list[psutil.Process]:
    """Those of ``procs`` still running (zombies and vanished processes left out)."""
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


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


def run_notebook(path: str | Path, timeout: float = 120.0) -> float:
    """Execute a notebook top to bottom in a fresh ``python3`` kernel; return seconds taken.

    Runs in the notebook's own folder; a cell that raises fails the run
    (``nbclient.exceptions.CellExecutionError`` naming the cell), a cell that
    runs past ``timeout`` seconds too. The executed copy is not written back.
    Needs ``nbclient`` (it comes with JupyterLab).
    """
    import nbclient
    import nbformat

    path = Path(path)
    book = nbformat.read(path, as_version=4)  # type: ignore[no-untyped-call]  # untyped API
    start = time.monotonic()
    client = nbclient.NotebookClient(
        book, timeout=timeout, kernel_name="python3", startup_timeout=60,
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()
    return time.monotonic() - start


def _main(argv: list[str]) -> int:
    """``python -m jray.testing NOTEBOOK...``: run each notebook, print its time."""
    for name in argv:
        print(f"{name}: {run_notebook(name):.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(_main(sys.argv[1:]))
