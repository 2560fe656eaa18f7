"""Remote side of cell output: capture a cell's stdout, stderr and display calls.

::

    worker: print(...) ─▶ _Stream ─▶ _Sink.items ──(every 50 ms, one actor call)──▶ OutputHub
            display(x) ─▶ mimebundle ─┘                                            │ drain()
    kernel main thread / event loop ◀───────────────────────────────────────────────┘

Output is grouped per cell (``key``) and rate-limited by the sink's flush
period, so a loop of prints becomes a few messages. ``Sink.close`` waits until
the hub holds everything, so once a cell's task has finished, one more drain
by the kernel returns all of its output, in order.

Items are tuples: ``("stdout"|"stderr", text)`` or ``("display", data, metadata)``.
This module runs in workers and engines; it needs IPython only to format rich
values (falling back to ``repr``); while a cell runs, ``IPython.display.display``
is this module's ``display`` too. Matplotlib draws with Agg there: the figures a
cell leaves open are sent as PNG when it ends, then closed (a figure that is the
last value is its PNG result instead).
"""

from __future__ import annotations

import base64
import io
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from jray.jupyter.backends.base import Runtime

Item = tuple[Any, ...]
Bundle = tuple[dict[str, Any], dict[str, Any]]
FLUSH_PERIOD_S = 0.05


class OutputHub:
    """Actor: holds remote output per cell until the kernel drains it."""

    def __init__(self) -> None:
        self.items: dict[str, list[Item]] = {}

    def write(self, key: str, items: list[Item]) -> None:
        self.items.setdefault(key, []).extend(items)

    def drain(self) -> dict[str, list[Item]]:
        out, self.items = self.items, {}
        return out


_formatter: Any = None


def format_value(obj: Any) -> Bundle:
    """The mimebundle IPython would show for ``obj`` (``repr`` without IPython)."""
    global _formatter
    if _is_figure(obj):
        try:
            return _png(obj), {}
        except Exception:
            pass
    try:
        if _formatter is None:
            from IPython.core.formatters import DisplayFormatter

            _formatter = DisplayFormatter()
        data, md = _formatter.format(obj)
    except Exception:
        return {"text/plain": repr(obj)}, {}
    clean = {k: base64.b64encode(v).decode("ascii") if isinstance(v, bytes) else v
             for k, v in data.items()}
    return clean, dict(md)


class _Sink:
    def __init__(self, hub: Any, key: str, rt: Runtime) -> None:
        self.hub, self.key, self.rt = hub, key, rt
        self.lock = threading.Lock()
        self.items: list[Item] = []
        self.last: Any = None
        self.stop = threading.Event()
        # A first call, waited on here: it makes this process learn where the hub lives
        # (the answer is read while a get waits), so the flusher thread's calls can leave.
        rt.get(hub.write.remote(key, []), timeout=60)
        self.thread = threading.Thread(target=self._loop, name="jray-cell-output", daemon=True)
        self.thread.start()

    def add(self, item: Item) -> None:
        with self.lock:
            prev = self.items[-1] if self.items else None
            if prev is not None and prev[0] == item[0] and item[0] in ("stdout", "stderr"):
                self.items[-1] = (prev[0], prev[1] + item[1])
            else:
                self.items.append(item)

    def flush(self) -> None:
        with self.lock:
            items, self.items = self.items, []
        if items:
            self.last = self.hub.write.remote(self.key, items)

    def _loop(self) -> None:
        while not self.stop.wait(FLUSH_PERIOD_S):
            self.flush()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.flush()
        if self.last is not None:
            self.rt.get(self.last, timeout=30)  # the hub has it all before the task's result


class _Stream(io.TextIOBase):
    def __init__(self, sink: _Sink, name: str) -> None:
        self.sink, self.name = sink, name

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        if s:
            self.sink.add((self.name, str(s)))
        return len(s)


def _is_figure(obj: Any) -> bool:
    return type(obj).__module__ == "matplotlib.figure" and hasattr(obj, "savefig")


def _png(fig: Any) -> dict[str, Any]:
    """A figure's PNG bundle (what the inline backend shows); the figure is closed."""
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", bbox_inches="tight")
    finally:
        plt = sys.modules.get("matplotlib.pyplot")
        if plt is not None:
            plt.close(fig)
    return {"image/png": base64.b64encode(buf.getvalue()).decode("ascii"),
            "text/plain": repr(fig)}


def _use_agg() -> None:
    """Draw with Agg in this worker: the kernel's inline backend, inherited through
    ``MPLBACKEND``, would print a figure's repr and drop the figure."""
    os.environ["MPLBACKEND"] = "Agg"
    mpl = sys.modules.get("matplotlib")
    if mpl is None:
        return
    try:  # imported already (by a plain task): read the setting without resolving it
        if "inline" in str(dict.__getitem__(mpl.rcParams, "backend")):
            mpl.use("Agg", force=True)
    except Exception:
        pass


def _figures(sink: _Sink) -> None:
    """Send the open matplotlib figures as PNG, then close them all (none leak)."""
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is None:
        return
    try:
        for num in plt.get_fignums():
            sink.add(("display", _png(plt.figure(num)), {}))
    except Exception as e:  # a broken figure must not hide the cell's own result
        sink.add(("stderr", f"jray: could not render a matplotlib figure: {e}\n"))
    finally:
        plt.close("all")


@contextmanager
def capture(hub: Any, key: str, ns: dict[str, Any], rt: Runtime,
            ipython: bool = False) -> Iterator[_Sink]:
    """Route stdout, stderr, ``display`` and figures of the code run inside to ``hub``.

    ``ipython``: the cell uses IPython (its ``display`` is patched; importing IPython
    costs a worker time, so only then or when it is imported already)."""
    _use_agg()
    sink = _Sink(hub, key, rt)

    def display(*objs: Any, raw: bool = False, **_: Any) -> None:
        for obj in objs:
            data, md = (obj, {}) if raw else format_value(obj)
            sink.add(("display", data, md))

    ns["display"] = display
    patched = _patch_ipython_display(display) if ipython or "IPython" in sys.modules else []
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _Stream(sink, "stdout"), _Stream(sink, "stderr")
    try:
        with rt.nested_output(sink.add):  # what its tasks print joins the same stream
            yield sink
    finally:
        sys.stdout, sys.stderr = saved
        for module, original in patched:
            setattr(module, "display", original)  # noqa: B010
        _figures(sink)
        sink.close()


def _patch_ipython_display(display: Any) -> list[tuple[Any, Any]]:
    """Make ``from IPython.display import display`` in the cell our ``display``: with no
    shell in a worker IPython's own would print the object's repr. Undone afterwards."""
    try:
        import IPython.core.display_functions
        import IPython.display
    except ImportError:  # no IPython in this worker: nothing to patch
        return []
    patched = []
    for module in (IPython.display, IPython.core.display_functions):
        patched.append((module, module.display))
        setattr(module, "display", display)  # noqa: B010  (untyped module attribute)
    return patched
