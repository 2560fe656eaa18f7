"""Kernel side of cell output: publish each remote cell's output under the cell that launched it.

::

    OutputHub actor ──drain()──▶ Router.pump() ──session.send(parent=run.parent)──▶ iopub
                                   ▲        ▲
       blocking cell's wait loop ──┘        └── io_loop.call_later timer (while --no-block
       (kernel main thread)                     cells are pending; kernel main thread)

Since ipykernel 7, output sent from a background thread is dropped or lands
in whichever cell runs next. So nothing here runs on a thread of its own: the
router is pumped by the main thread while a cell waits, and by a timer on the
kernel's event loop (also the main thread) while ``--no-block`` cells are
pending. Every message carries the parent header saved when its cell started,
so a ``--no-block`` cell's output appears under that cell, whenever it comes.
"""

from __future__ import annotations

import itertools
import sys
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from jray.jupyter.backends.base import Backend
from jray.jupyter.capture import OutputHub

PUMP_PERIOD_S = 0.1
#: Output lines per run published as they come; past that only the last TAIL_LINES are
#: kept and shown when the run ends, with the number dropped (a flood must not freeze
#: the front end).
MAX_LINES = 5000
TAIL_LINES = 100
_keys = itertools.count(1)


@dataclass
class CellRun:
    """One remote execution launched by a cell (one task, or one engine call)."""

    label: str
    parent: dict[str, Any] | None
    execution_count: int | None
    refs: list[Any]  # every ref the execution returns; the last is the display bundle
    block: bool
    prefix: str = ""  # "[engine-0] " when several engines share one cell
    key: str = field(default_factory=lambda: f"cell-{next(_keys)}")
    done: bool = False
    cell_id: str = ""  # the notebook cell (its cellId, else its text): a rerun replaces it
    shown_lines: int = 0  # output lines published so far
    tail: deque[tuple[str, str]] = field(default_factory=lambda: deque(maxlen=TAIL_LINES))
    dropped: int = 0  # lines past MAX_LINES that the tail no longer holds


class Router:
    """Routes hub output and results of pending cells to their cells' output areas."""

    def __init__(self, shell: Any, backend: Backend) -> None:
        self.shell = shell
        self.backend = backend  # where the cells run (the magics switch it on init)
        self.runs: dict[str, CellRun] = {}
        self.hub: Any = None
        self.hub_address: str | None = None
        self.timer: Any = None
        self.pumping = False  # a get made by pump() itself skips the wait observer

    # --- hub -----------------------------------------------------------------------
    def ensure_hub(self, address: str) -> Any:
        """The output hub of the running cluster (made again after a new ``init``)."""
        if self.hub is None or self.hub_address != address:
            self.hub = self.backend.remote(OutputHub).remote()
            self.hub_address = address
            self.runs.clear()
        return self.hub

    def reset(self, why: str | None = None) -> None:
        """Forget the hub and pending runs (the cluster is going away).

        With ``why``, each unfinished run says under its cell that it was stopped.
        """
        if why:
            for run in self.runs.values():
                if not run.done:
                    self.stream(run, "stderr", f"jray: {run.label} was stopped before it "
                                               f"finished: {why}\n")
        self.stop_timer()
        self.runs.clear()
        self.hub = self.hub_address = None

    # --- publishing ----------------------------------------------------------------
    def parent(self) -> dict[str, Any] | None:
        kernel = getattr(self.shell, "kernel", None)
        if kernel is None:
            return None
        parent: dict[str, Any] = kernel.get_parent("shell")
        return parent

    def send(self, run: CellRun | None, msg_type: str, content: dict[str, Any]) -> None:
        kernel = getattr(self.shell, "kernel", None)
        parent = run.parent if run is not None else self.parent()
        if kernel is None or parent is None:  # a terminal IPython: print in place
            if msg_type == "stream":
                out = sys.stderr if content["name"] == "stderr" else sys.stdout
                out.write(content["text"])
            else:
                print(content.get("data", {}).get("text/plain", ""))
            return
        for stream in (sys.stdout, sys.stderr):  # keep order with the magic's own prints
            stream.flush()
        kernel.session.send(kernel.iopub_socket, msg_type, content, parent=parent)

    def stream(self, run: CellRun | None, name: str, text: str, capped: bool = True) -> None:
        if run is not None and run.prefix:
            text = "".join(run.prefix + line for line in text.splitlines(True))
        if run is not None and capped:
            keep: list[str] = []
            for line in text.splitlines(True):  # a line may arrive in two pieces
                if run.shown_lines < MAX_LINES and not run.tail:
                    keep.append(line)
                    run.shown_lines += line.endswith("\n")
                elif run.tail and run.tail[-1][0] == name and not run.tail[-1][1].endswith("\n"):
                    run.tail[-1] = (name, run.tail[-1][1] + line)
                else:
                    run.dropped += len(run.tail) == run.tail.maxlen
                    run.tail.append((name, line))
            text = "".join(keep)
            if not text:
                return
        self.send(run, "stream", {"name": name, "text": text})

    def done(self, run: CellRun) -> None:
        """Forget a finished run; show the tail of output it held back, if any."""
        self.runs.pop(run.key, None)
        if run.tail:
            self.stream(run, "stderr", f"jray: {run.label}: {run.dropped} lines of output "
                        f"dropped after the first {MAX_LINES}; the last {len(run.tail)} "
                        f"follow\n", capped=False)
            for name, line in run.tail:
                self.send(run, "stream", {"name": name, "text": line})
            run.tail.clear()

    def display(self, run: CellRun, data: dict[str, Any], md: dict[str, Any]) -> None:
        self.send(run, "display_data", {"data": data, "metadata": md, "transient": {}})

    def result(self, run: CellRun, data: dict[str, Any], md: dict[str, Any]) -> None:
        """Show a last value like a normal cell's ``Out[n]``, without entering ``Out``."""
        if run.prefix:
            data = {**data, "text/plain": f"{run.prefix}{data.get('text/plain', '')}"}
        self.send(run, "execute_result",
                  {"execution_count": run.execution_count, "data": data, "metadata": md})

    def error(self, run: CellRun, err: BaseException) -> None:
        label = "" if run.prefix else f"{run.label}: "  # the prefix names it already
        self.stream(run, "stderr", f"{label}{remote_traceback(err)}")

    # --- pumping -------------------------------------------------------------------
    def pump(self) -> None:
        """Publish the output the hub holds, and finish ``--no-block`` runs that are done."""
        if not self.runs or self.hub is None or self.pumping:
            return
        self.pumping = True
        try:
            self._pump()
        finally:
            self.pumping = False

    def _pump(self) -> None:
        try:
            batches: dict[str, list[Any]] = self.backend.get(self.hub.drain.remote(),
                                                              timeout=10)
        except Exception as e:
            batches = {}
            print(f"jray: could not read remote output: {e}", file=sys.stderr)
        for key, items in batches.items():
            run = self.runs.get(key)
            if run is None:
                continue  # a run already finished or cancelled
            for item in items:
                if item[0] == "display":
                    self.display(run, item[1], item[2])
                else:
                    self.stream(run, item[0], item[1])
        for run in [r for r in self.runs.values() if not r.block and not r.done]:
            ready, _ = self.backend.wait(run.refs, num_returns=len(run.refs), timeout=0)
            if len(ready) == len(run.refs):
                self.finish(run)

    def finish(self, run: CellRun) -> None:
        """Show a finished run's last value or error; forget it (its output was pumped)."""
        run.done = True
        try:
            bundle = self.backend.get(run.refs[-1], timeout=10)
        except Exception as e:
            self.error(run, e)
        else:
            if bundle is not None:
                self.result(run, *bundle)
        self.done(run)

    def replace(self, cell_id: str) -> list[str]:
        """Cancel the unfinished runs of the notebook cell ``cell_id`` (it runs again)."""
        old = [r for r in self.runs.values() if cell_id and r.cell_id == cell_id and not r.done]
        for run in old:
            try:
                self.backend.cancel(run.refs[-1])
            except Exception as e:
                print(f"jray: could not cancel the previous run {run.label}: {e}",
                      file=sys.stderr)
            self.stream(run, "stderr", f"jray: {run.label} cancelled: the cell was run again\n")
            run.done = True
            self.runs.pop(run.key, None)
        return [r.label for r in old]

    def add(self, run: CellRun) -> None:
        self.runs[run.key] = run
        if not run.block:
            self.start_timer()

    # --- the event-loop timer for --no-block cells -----------------------------------
    def start_timer(self) -> None:
        kernel = getattr(self.shell, "kernel", None)
        if self.timer is not None or kernel is None:
            return
        self.timer = kernel.io_loop.call_later(PUMP_PERIOD_S, self._tick)

    def stop_timer(self) -> None:
        kernel = getattr(self.shell, "kernel", None)
        if self.timer is not None and kernel is not None:
            kernel.io_loop.remove_timeout(self.timer)
        self.timer = None

    def _tick(self) -> None:
        self.timer = None
        try:
            self.pump()
        except Exception as e:  # never let a timer callback kill the loop
            print(f"jray: {e}", file=sys.stderr)
        if any(not r.block for r in self.runs.values()) and self.hub is not None:
            self.start_timer()


def remote_traceback(err: BaseException, cause: BaseException | None = None) -> str:
    """The remote traceback of a failed cell, from its first frame on (``cause``: the
    user's exception inside ``err``, where the backend found it)."""
    cause = cause if cause is not None else getattr(err, "cause", None)
    text = getattr(cause, "_jray_cell_traceback", None)
    if text is None:
        text = getattr(err, "traceback_str", None) or f"{type(err).__name__}: {err}\n"
    return str(text)
