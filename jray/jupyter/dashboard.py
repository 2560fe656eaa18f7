"""``jray.dashboard()``: the live DAG and object-store view in a cell's output.

::

    head ──events──▶ Subscription ──▶ ViewModel (jray.views.live)
                                         │  Pump.tick(), every 200 ms on the pump's own thread
                                         ▼
                         Dashboard widgets (anywidget) ──msg:custom──▶ views.js (browser)

The widget is an anywidget whose front end is ``jray/views/static/views.js``,
the renderer the JupyterLab panel also uses. Updates are pushed every 200 ms
from the pump's own thread, not from the kernel's event loop, so they keep
flowing while a cell blocks (in ``jray.get`` or ``time.sleep``): comm messages
sent from another thread go out on iopub at once, even while the shell is
busy. The event subscription has its own socket, and the driver's client
(whose lock a blocked ``get`` holds) is touched only to fetch tracebacks, and
then only when its lock is free. One lock (``Pump.lock``) keeps the model to
one thread at a time (the pump's ticks, the shell's ``hello`` and traceback
requests). The pump also adds what only the kernel knows: which notebook
variables hold each large object, and the remote tracebacks of failed tasks.
"""

from __future__ import annotations

import atexit
import pathlib
import threading
from typing import Any, Protocol

import anywidget
import traitlets

from jray._private import api
from jray._private import protocol as P
from jray._private import serialization as S
from jray.jupyter import cell_tags
from jray.views.live import Live, live_if_running

STATIC = pathlib.Path(__file__).resolve().parent.parent / "views" / "static"
INTERVAL_S = 0.2
TRACEBACKS_PER_TICK = 20


class Sink(Protocol):
    """Where the pump sends messages: a widget, or the JupyterLab panel's comm."""

    joined: bool

    def send(self, content: dict[str, Any]) -> None: ...

    def alive(self) -> bool: ...


def on_front_msg(sink: Sink, content: Any) -> None:
    """A message from a renderer: ``hello`` (send everything), ``traceback`` (of a task)."""
    if not isinstance(content, dict):
        return
    kind = content.get("type")
    if kind == "hello":
        with PUMP.lock:
            sink.joined = True
            PUMP.send_full(sink)
    elif kind == "traceback" and isinstance(content.get("id"), str):
        text = PUMP.traceback(content["id"])
        sink.send({"type": "traceback", "id": content["id"],
                   "text": text or "(the kernel is busy; the traceback follows when it is free)"})


class Dashboard(anywidget.AnyWidget):
    """A live view of the cluster (tasks, edges, store, workers); see the module doc."""

    _esm = STATIC / "views.js"
    height = traitlets.Int(360).tag(sync=True)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.joined = False
        self.on_msg(lambda _w, content, _b: on_front_msg(self, content))

    def alive(self) -> bool:
        return self.comm is not None


def _holders(ns: dict[str, Any]) -> dict[str, list[str]]:
    """Object id (hex) -> the user variables that hold a ref to it (one level deep)."""
    from jray._private.object_ref import ObjectRef

    out: dict[str, list[str]] = {}
    for name, value in list(ns.items()):
        if name.startswith("_"):
            continue
        if isinstance(value, ObjectRef):
            out.setdefault(value.hex(), []).append(name)
        elif isinstance(value, (list, tuple, dict)) and len(value) <= 10_000:
            pairs = value.items() if isinstance(value, dict) else enumerate(value)
            for key, v in pairs:
                if isinstance(v, ObjectRef):
                    out.setdefault(v.hex(), []).append(f"{name}[{key!r}]")
    return out


class Pump:
    """Steps the live model and sends each patch to every joined widget, from its own
    thread (started with the first widget, ended when the last one closes)."""

    def __init__(self) -> None:
        self.widgets: list[Sink] = []
        self.errors: dict[str, str] = {}
        self.lock = threading.RLock()
        self.thread: threading.Thread | None = None
        self.stopping = threading.Event()
        self.ticks = 0

    def add(self, w: Sink) -> None:
        with self.lock:
            self.widgets.append(w)
            if self.thread is None or not self.thread.is_alive():
                self.stopping.clear()
                self.thread = threading.Thread(target=self._run, name="jray-views-pump",
                                               daemon=True)
                self.thread.start()

    def _run(self) -> None:
        while not self.stopping.wait(INTERVAL_S):
            with self.lock:
                try:
                    self.tick()
                except Exception as e:  # keep pumping; say what went wrong once per kind
                    _warn_once(e)
                self.ticks += 1
                if not self.widgets:
                    self.thread = None
                    return

    def stop(self, timeout: float = 2.0) -> None:
        """End the pump's thread (at exit, before the subscription closes)."""
        self.stopping.set()
        t = self.thread
        if t is not None and t is not threading.current_thread():
            t.join(timeout)

    def _extras(self, lv: Live, msg: dict[str, Any]) -> dict[str, Any]:
        model = lv.model
        try:
            from IPython import get_ipython

            shell = get_ipython()
            holders = _holders(shell.user_ns) if shell is not None else {}
        except ImportError:
            holders = {}
        msg["objects"] = [dict(o, vars=holders.get(o["id"], [])) for o in msg["objects"]]
        fetched = 0
        tbs: dict[str, str] = {}
        for rec in list(model.tasks.values())[-2000:]:
            if rec["state"] in ("failed", "cancelled") and rec["id"] not in self.errors:
                if fetched >= TRACEBACKS_PER_TICK:
                    break
                text = self.traceback(rec["id"])
                if text is None:  # the driver's client is busy (a blocked get): later
                    break
                tbs[rec["id"]] = text
                fetched += 1
        msg["tracebacks"] = tbs if msg["type"] == "patch" else dict(self.errors)
        return msg

    def traceback(self, tid: str) -> str | None:
        """The remote traceback of task ``tid`` (hex); None while the driver's client is
        held by another thread (a cell blocked in ``get``), so the pump never waits."""
        text = self.errors.get(tid)
        if text is not None:
            return text
        if source is not None:
            text = self.errors[tid] = str(source.traceback(tid))
            return text
        try:
            client = api._Session.client
            if client is None or client.closed:
                return "(no jray cluster in this kernel now)"
            if not client.lock.acquire(blocking=False):
                return None
            try:
                loc = client.query("task_error", bytes.fromhex(tid), timeout=2.0)
            finally:
                client.lock.release()
        except Exception as e:  # the head may be gone; say so in the view
            return f"(the traceback could not be fetched: {type(e).__name__}: {e})"
        if loc is None or loc[0] != P.LOC_ERROR:
            text = "(no error is recorded for this task any more)"
        else:
            try:
                S.decode(loc)  # an error location raises its exception
                text = "(no error is recorded for this task)"
            except Exception as err:
                text = str(getattr(err, "traceback_str", "") or f"{type(err).__name__}: {err}")
        self.errors[tid] = text
        return text

    def tick(self) -> None:
        self.widgets = [w for w in self.widgets if w.alive()]
        if not self.widgets:
            return
        lv = _running()
        if lv is None:
            for w in self.widgets:
                if w.joined and not getattr(w, "told_no_cluster", False):
                    w.send({"type": "no_cluster"})
                    w.told_no_cluster = True  # type: ignore[attr-defined]
            return
        patch = lv.step()
        if patch is None:
            return
        self._extras(lv, patch)
        for w in self.widgets:
            if w.joined:
                if getattr(w, "told_no_cluster", False):
                    w.told_no_cluster = False  # type: ignore[attr-defined]
                    self.send_full(w)
                else:
                    w.send(patch)

    def send_full(self, w: Sink) -> None:
        with self.lock:
            lv = _running()
            if lv is not None:
                w.send(self._extras(lv, lv.model.full()))
            else:
                w.send({"type": "no_cluster"})
                w.told_no_cluster = True  # type: ignore[attr-defined]


_warned: set[str] = set()


def _warn_once(e: Exception) -> None:
    import warnings

    kind = type(e).__name__
    if kind not in _warned:
        _warned.add(kind)
        warnings.warn(f"jray live views: an update failed ({kind}: {e}); still trying",
                      RuntimeWarning, stacklevel=2)


PUMP = Pump()
atexit.register(PUMP.stop)
#: Where the views' data comes from when not jray's cluster: an object with ``live()``,
#: ``is_initialized()`` and ``traceback(task_id_hex)`` (the Ray backend installs one).
source: Any = None


def _running() -> Any:
    """The live subscription of the views' source, or None when it has no cluster now."""
    if source is None:
        return live_if_running()
    return source.live() if source.is_initialized() else None


def dashboard(height: int = 360) -> Dashboard:
    """A live view of this notebook's cluster: the task DAG grouped by cell or function,
    the object store (and which variables hold its largest objects), counts by state
    and per-worker timelines. Shows in the cell's output when it is the cell's value."""
    if not isinstance(height, int) or height < 100:
        raise ValueError(f"jray.dashboard: height must be an int of at least 100, got {height!r}")
    api.client()  # starts a local cluster, as every other call does
    try:
        from IPython import get_ipython

        cell_tags.install(get_ipython())
    except ImportError:
        pass
    w = Dashboard(height=height)
    PUMP.add(w)
    return w
