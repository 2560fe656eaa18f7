"""``jray.dashboard()``: the live DAG and object-store view in a cell's output.

::

    head ──events──▶ Subscription ──▶ ViewModel (jray.views.live)
                                         │  Pump.tick(), every 200 ms on the kernel's event loop
                                         ▼
                         Dashboard widgets (anywidget) ──msg:custom──▶ views.js (browser)

The widget is an anywidget whose front end is ``jray/views/static/views.js``,
the renderer the JupyterLab panel also uses. Updates are pushed from a
periodic callback on the kernel's own event loop (never from a thread: since
ipykernel 7, widget messages from other threads go missing), so they flow
between cells and while ``--no-block`` cells run. The pump also adds what only
the kernel knows: which notebook variables hold each large object, and the
remote tracebacks of failed tasks.
"""

from __future__ import annotations

import asyncio
import pathlib
from typing import Any, Protocol

import anywidget
import traitlets

from jray._private import api
from jray._private import protocol as P
from jray._private import serialization as S
from jray.jupyter import cell_tags
from jray.views.live import live

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
        sink.joined = True
        PUMP.send_full(sink)
    elif kind == "traceback" and isinstance(content.get("id"), str):
        sink.send({"type": "traceback", "id": content["id"],
                   "text": PUMP.traceback(content["id"])})


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
    """Steps the live model and sends each patch to every joined widget."""

    def __init__(self) -> None:
        self.widgets: list[Sink] = []
        self.errors: dict[str, str] = {}
        self.handle: asyncio.TimerHandle | None = None
        self.render_ms: list[float] = []

    def add(self, w: Sink) -> None:
        self.widgets.append(w)
        if self.handle is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no event loop (a plain script): call tick() yourself
                return
            self.handle = loop.call_later(INTERVAL_S, self._scheduled)

    def _scheduled(self) -> None:
        self.handle = None
        try:
            self.tick()
        finally:
            if self.widgets:
                self.handle = asyncio.get_running_loop().call_later(INTERVAL_S, self._scheduled)

    def _extras(self, msg: dict[str, Any]) -> dict[str, Any]:
        model = _live().model
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
                tbs[rec["id"]] = self.traceback(rec["id"])
                fetched += 1
        msg["tracebacks"] = tbs if msg["type"] == "patch" else dict(self.errors)
        return msg

    def traceback(self, tid: str) -> str:
        text = self.errors.get(tid)
        if text is not None:
            return text
        if source is not None:
            text = self.errors[tid] = str(source.traceback(tid))
            return text
        try:
            loc = api.client().query("task_error", bytes.fromhex(tid), timeout=2.0)
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
        if not _up():
            for w in self.widgets:
                if w.joined and not getattr(w, "told_no_cluster", False):
                    w.send({"type": "no_cluster"})
                    w.told_no_cluster = True  # type: ignore[attr-defined]
            return
        patch = _live().step()
        if patch is None:
            return
        self._extras(patch)
        for w in self.widgets:
            if w.joined:
                if getattr(w, "told_no_cluster", False):
                    w.told_no_cluster = False  # type: ignore[attr-defined]
                    self.send_full(w)
                else:
                    w.send(patch)

    def send_full(self, w: Sink) -> None:
        if _up():
            w.send(self._extras(_live().model.full()))
        else:
            w.send({"type": "no_cluster"})
            w.told_no_cluster = True  # type: ignore[attr-defined]


PUMP = Pump()
#: Where the views' data comes from when not jray's cluster: an object with ``live()``,
#: ``is_initialized()`` and ``traceback(task_id_hex)`` (the Ray backend installs one).
source: Any = None


def _live() -> Any:
    return live() if source is None else source.live()


def _up() -> bool:
    return api.is_initialized() if source is None else bool(source.is_initialized())


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
