"""Waiting for a cell's remote runs: output pumping, a progress bar, interrupt → cancel.

``wait_for(router, runs)`` runs on the kernel's main thread. Every
``PUMP_PERIOD_S`` it publishes remote output (this cell's and any pending
``--no-block`` cell's). After ``PROGRESS_AFTER_S`` it shows one progress bar
for the cell (an ipywidgets ``IntProgress``, else a text line). A
``KeyboardInterrupt`` (the kernel's interrupt) cancels every run the cell
launched (the backend's ``cancel``), says which, and returns.

``get_observer(router)`` is the hook the extension installs where the backend
has one (``caps.get_hook``, jray's ``api.wait_observer``): a ``jray.get`` in a cell (kernel
main thread) waits here first, with the same bar after ``PROGRESS_AFTER_S``
when it waits for several refs; an interrupt cancels the refs' tasks (one or
many) and re-raises.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from jray._private.debug import HIDE
from jray.jupyter.output import PUMP_PERIOD_S, CellRun, Router

PROGRESS_AFTER_S = 1.0
CANCEL_WAIT_S = 5.0


class Progress:
    """One bar per cell: tasks done / total."""

    def __init__(self, total: int, label: str) -> None:
        self.total, self.label = total, label
        self.widget: Any = None
        try:
            import ipywidgets
            from IPython.display import display

            self.widget = ipywidgets.IntProgress(value=0, min=0, max=total,
                                                 description=label[:20], bar_style="info")
            display(self.widget)  # type: ignore[no-untyped-call]
        except Exception:  # no ipywidgets: a text line instead
            self.widget = None
            self.update(0)

    def update(self, done: int) -> None:
        if self.widget is not None:
            self.widget.value = done
            return
        width = 20
        filled = width * done // max(1, self.total)
        sys.stdout.write(f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] "
                         f"{done}/{self.total} tasks")
        sys.stdout.flush()

    def close(self, done: int, ok: bool) -> None:
        if self.widget is not None:
            self.widget.value = done
            self.widget.bar_style = "success" if ok else "danger"
        else:
            self.update(done)
            sys.stdout.write("\n")


def _cancel(router: Router, runs: list[CellRun]) -> None:
    """Cancel the runs; report which stopped and which did not (within ``CANCEL_WAIT_S``)."""
    backend = router.backend
    for run in runs:
        try:
            backend.cancel(run.refs[-1])
        except Exception as e:
            print(f"jray: could not cancel {run.label}: {e}", file=sys.stderr)
    refs = [r.refs[-1] for r in runs]
    deadline = time.monotonic() + CANCEL_WAIT_S
    ready: list[Any] = []
    while time.monotonic() < deadline and len(ready) < len(refs):
        ready, _ = backend.wait(refs, num_returns=len(refs), timeout=PUMP_PERIOD_S)
    router.pump()
    stopped = [r.label for r in runs if r.refs[-1] in ready]
    running = [r.label for r in runs if r.refs[-1] not in ready]
    for run in runs:
        router.done(run)
    if stopped:
        print(f"jray: interrupted; cancelled {len(stopped)} task(s): {', '.join(stopped)}",
              file=sys.stderr)
    if running:
        print(f"jray: interrupted, but still running after {CANCEL_WAIT_S:g}s: "
              f"{', '.join(running)}", file=sys.stderr)


def wait_for(router: Router, runs: list[CellRun],
             progress_after: float | None = PROGRESS_AFTER_S,
             on_done: Callable[[CellRun], None] | None = None) -> list[CellRun]:
    """Wait until every run has finished; ``on_done(run)`` as each one does (after its
    output). Returns the runs an interrupt cancelled (none when all finished).

    ``progress_after=None`` shows no bar."""
    __tracebackhide__ = HIDE  # noqa: F841
    start = time.monotonic()
    bar: Progress | None = None
    by_ref = {r.refs[-1]: r for r in runs}
    pending = list(by_ref)
    total = len(pending)
    try:
        while pending:
            ready, pending = router.backend.wait(pending, num_returns=len(pending),
                                                 timeout=PUMP_PERIOD_S)
            router.pump()
            for ref in ready:
                if on_done is not None:
                    on_done(by_ref[ref])
            if bar is None and pending and progress_after is not None \
                    and time.monotonic() - start > progress_after:
                bar = Progress(total, runs[0].label if total == 1 else f"{total} runs")
            if bar is not None:
                bar.update(total - len(pending))
        router.pump()
    except KeyboardInterrupt:
        if bar is not None:
            bar.close(total - len(pending), ok=False)
        left = [by_ref[r] for r in pending]
        _cancel(router, left)
        return left
    if bar is not None:
        bar.close(total, ok=True)
    return []


def wait_get(router: Router, refs: Sequence[Any], timeout: float | None) -> None:
    """Wait until all ``refs`` are ready (bar after a second, output pumped); see module doc.

    Raises ``GetTimeoutError`` after ``timeout``; on ``KeyboardInterrupt`` cancels the
    refs' tasks (bounded wait for them to stop) and re-raises it.
    """
    __tracebackhide__ = HIDE  # noqa: F841
    backend = router.backend
    # a get may repeat a ref; wait may not
    unique = list({backend.ref_id(r): r for r in refs}.values())
    total = len(unique)
    start = time.monotonic()
    deadline = None if timeout is None else start + timeout
    bar: Progress | None = None
    pending = unique
    try:
        while pending:
            step = PUMP_PERIOD_S
            if deadline is not None:
                step = max(0.0, min(step, deadline - time.monotonic()))
            _, pending = backend.wait(pending, num_returns=len(pending), timeout=step)
            router.pump()
            if not pending:
                break
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                if bar is not None:
                    bar.close(total - len(pending), ok=False)
                    bar = None
                raise backend.timeout_error(
                    f"get timed out after {timeout} s: {len(pending)} object(s) not ready, "
                    f"e.g. {pending[0]!r}")
            if bar is None and total > 1 and now - start > PROGRESS_AFTER_S:
                bar = Progress(total, "jray.get")
            if bar is not None:
                bar.update(total - len(pending))
    except KeyboardInterrupt:
        if bar is not None:
            bar.close(total - len(pending), ok=False)
        _cancel_refs(router, pending)
        raise
    if bar is not None:
        bar.close(total, ok=True)


def _cancel_refs(router: Router, refs: list[Any]) -> None:
    backend = router.backend
    for ref in refs:
        try:
            backend.cancel(ref)
        except Exception as e:
            print(f"jray: could not cancel {ref!r}: {e}", file=sys.stderr)
    deadline = time.monotonic() + CANCEL_WAIT_S
    left = refs
    while left and time.monotonic() < deadline:
        _, left = backend.wait(left, num_returns=len(left), timeout=PUMP_PERIOD_S)
    msg = f"jray: interrupted; cancelled {len(refs) - len(left)} task(s) of the jray.get"
    if left:
        msg += f"; {len(left)} still running after {CANCEL_WAIT_S:g}s"
    print(msg, file=sys.stderr)


def get_observer(router: Router) -> Callable[[Sequence[Any], float | None], None]:
    """The ``wait_observer`` hook for ``router``'s kernel (active on its main thread only)."""

    busy = False

    def observer(refs: Sequence[Any], timeout: float | None) -> None:
        nonlocal busy
        __tracebackhide__ = HIDE  # noqa: F841
        # not on other threads, nor for the gets that waiting itself makes (pumping output)
        if busy or router.pumping or threading.current_thread() is not threading.main_thread():
            return
        busy = True
        try:
            wait_get(router, refs, timeout)
        finally:
            busy = False

    return observer
