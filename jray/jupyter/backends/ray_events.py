"""Ray's state as jray's event stream: the live views (inline and panel) on a Ray cluster.

::

    Ray's state API (list_tasks / list_objects / list_nodes / list_actors, in ray_backend)
        ──rows, every POLL_S, on a thread of its own──▶ RayEvents.items()  (this module)
        ──("snapshot" | "delta") items──▶ RaySource.take() ──▶ ViewModel (jray.views)

Ray has no event stream a driver can subscribe to, so the source reads Ray's
tables and turns what changed since the last read into jray's events
(``jray._private.events``): the same view code then draws Ray's cluster. This
module never imports Ray (the rows are plain dicts); it is tested with
recorded rows, and against a real Ray cluster by the browser test.

What Ray does not record is not guessed (``docs/ray-backend.md``):

- *Inputs of a task* (the DAG's edges): Ray's task table has no arguments. The
  tasks this notebook's cells submitted are recorded as they are submitted
  (``NotebookTasks``: their input refs and cell); every other task is drawn
  without inputs, labelled ``(inputs unknown)``.
- *Where an object lives* (inline or shared memory) and *spilled bytes*: the
  object rows give neither, so the view shows ``?`` and ``–``; the store bar of
  a node counts the objects Ray lists as owned by a process on it.
- Ray's ids are longer than jray's: a task is shown under an id made of the
  first 8 bytes of its Ray id (the part that differs between tasks) and the
  job; its traceback text names the full Ray task id.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from jray._private import protocol as P

POLL_S = 1.0
#: the most rows of each table read per poll (Ray's state API caps at 10,000 by default)
LIMIT = 10_000
UNKNOWN_INPUTS = " (inputs unknown)"
#: Ray's task states -> jray's (``events.TaskState``)
STATES = {
    "NIL": "submitted", "PENDING_ARGS_AVAIL": "waiting",
    "PENDING_NODE_ASSIGNMENT": "ready", "PENDING_OBJ_STORE_MEM_AVAIL": "ready",
    "PENDING_ARGS_FETCH": "ready", "SUBMITTED_TO_WORKER": "ready",
    "PENDING_ACTOR_TASK_ARGS_FETCH": "ready",
    "PENDING_ACTOR_TASK_ORDERING_OR_CONCURRENCY": "ready",
    "RUNNING": "running", "RUNNING_IN_RAY_GET": "blocked", "RUNNING_IN_RAY_WAIT": "blocked",
    "FINISHED": "finished", "FAILED": "failed",
}
_ACTOR_KINDS = {"PENDING_CREATION": "actor_spawning", "ALIVE": "actor_alive",
                "RESTARTING": "actor_restarting", "DEAD": "actor_dead"}
#: an object's place: not in Ray's object rows (views show "?")
LOC_UNKNOWN = -1
Rows = dict[str, list[dict[str, Any]]]


class NotebookTasks:
    """What only the notebook knows of the Ray tasks it submitted: their inputs and cell."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        #: Ray task id (hex) -> (the Ray object ids (hex) of its ref arguments, cell tag)
        self.tasks: dict[str, tuple[list[str], Any]] = {}

    def record(self, task_hex: str, inputs: list[str], tag: Any) -> None:
        with self.lock:
            self.tasks[task_hex] = (inputs, tag)

    def get(self, task_hex: str) -> tuple[list[str], Any] | None:
        with self.lock:
            return self.tasks.get(task_hex)


def _ms(v: Any, default: float) -> float:
    return float(v) / 1000.0 if v else default


class RayEvents:
    """Turns successive reads of Ray's tables into view items (no I/O; see the module doc)."""

    def __init__(self, notebook: NotebookTasks | None = None,
                 hide: tuple[str, ...] = ()) -> None:
        self.notebook = notebook or NotebookTasks()
        #: names of tasks not drawn (the notebook layer's own: its output hub's calls)
        self.hide = hide
        self.seq = 0
        self.ids = P.IdGen()
        self.tids: dict[str, bytes] = {}  # Ray task id (hex) -> the view's task id
        self.ray_tid: dict[str, str] = {}  # the view's task id (hex) -> Ray's
        self.oids: dict[str, bytes] = {}
        self.task_state: dict[str, str] = {}
        self.errors: dict[str, str] = {}  # Ray task id -> error text (failed tasks)
        self.objects: dict[str, int] = {}  # Ray object id -> size
        self.nodes: dict[str, bool] = {}  # node id -> alive
        self.actors: dict[str, str] = {}
        self.workers: set[int] = set()
        self.started = False

    # --- ids ------------------------------------------------------------------------
    def task_id(self, ray_hex: str) -> bytes:
        tid = self.tids.get(ray_hex)
        if tid is None:
            raw = bytes.fromhex(ray_hex)
            tid = raw[:8] + raw[-6:] + b"\0\0" if len(raw) >= 14 else self.ids.task_id()
            if tid.hex() in self.ray_tid:  # two Ray ids alike in those bytes: a fresh one
                tid = self.ids.task_id()
            self.tids[ray_hex] = tid
            self.ray_tid[tid.hex()] = ray_hex
        return tid

    def object_id(self, ray_hex: str) -> bytes:
        """A Ray object id (its task's id and a 4-byte index) as a view id: return
        ``index`` of its task's view id, or an id of its own for a ``put`` (whose index
        Ray counts from 10**8 up)."""
        oid = self.oids.get(ray_hex)
        if oid is None:
            raw = bytes.fromhex(ray_hex)
            index = int.from_bytes(raw[-4:], "little")
            if len(raw) > 4 and 1 <= index < 0xFFFF:
                oid = P.return_id(self.task_id(raw[:-4].hex()), index - 1)
            else:
                oid = self.ids.put_id()
            self.oids[ray_hex] = oid
        return oid

    # --- reads -> items -------------------------------------------------------------
    def items(self, rows: Rows, now: float | None = None) -> list[tuple[Any, ...]]:
        """The items for one read of Ray's tables (``tasks``, ``objects``, ``nodes``,
        ``actors``: lists of Ray's state rows as dicts); the first read starts with an
        empty snapshot."""
        now = time.time() if now is None else now
        events: list[tuple[int, float, str, bytes, Any]] = []

        def emit(t: float, kind: str, ident: bytes, detail: Any = None) -> None:
            self.seq += 1
            events.append((self.seq, t, kind, ident, detail))

        out: list[tuple[Any, ...]] = []
        if not self.started:
            self.started = True
            out.append(("snapshot", 0, {}))
        ips = self._nodes(rows.get("nodes", []), now, emit)
        self._actors(rows.get("actors", []), now, emit)
        self._tasks(rows.get("tasks", []), now, emit)
        store = self._objects(rows.get("objects", []), rows.get("nodes", []), ips, now, emit)
        out.append(("delta", events, store))
        return out

    def _nodes(self, nodes: list[dict[str, Any]], now: float,
               emit: Callable[..., None]) -> dict[str, str]:
        ips: dict[str, str] = {}
        for n in nodes:
            nid = str(n["node_id"])
            ips[str(n.get("node_ip", ""))] = nid
            alive = n.get("state") == "ALIVE"
            if nid not in self.nodes:
                res = {k: float(v) for k, v in (n.get("resources_total") or {}).items()
                       if not k.startswith("node:")}
                emit(now, "node_added", bytes.fromhex(nid),
                     (res, n.get("node_name") or n.get("node_ip"), None))
                self.nodes[nid] = True
            if self.nodes[nid] and not alive:
                emit(now, "node_lost", bytes.fromhex(nid),
                     f"Ray reports it {n.get('state')}: {n.get('state_message') or ''}")
            self.nodes[nid] = alive
        return ips

    def _actors(self, actors: list[dict[str, Any]], now: float,
                emit: Callable[..., None]) -> None:
        for a in actors:
            aid, state = str(a["actor_id"]), str(a.get("state"))
            ident = bytes.fromhex(aid)
            if aid not in self.actors:
                emit(now, "actor_created", ident, a.get("class_name"))
            if self.actors.get(aid) != state and state in _ACTOR_KINDS:
                kind = _ACTOR_KINDS[state]
                detail = a.get("pid") if kind == "actor_alive" else (
                    a.get("death_cause") and str(a["death_cause"])[:200]
                    if kind == "actor_restarting" else None)
                emit(now, kind, ident, detail)
            self.actors[aid] = state

    def _tasks(self, tasks: list[dict[str, Any]], now: float,
               emit: Callable[..., None]) -> None:
        # a task's inputs are drawn before it: oldest first, and within a millisecond
        # the tasks whose known inputs come from others after them
        depth: dict[str, int] = {}

        def deep(rid: str, seen: int = 0) -> int:
            if rid not in depth:
                known = self.notebook.get(rid)
                depth[rid] = 0 if known is None or seen > 50 else 1 + max(
                    (deep(o[:-8], seen + 1) for o in known[0]), default=-1)
            return depth[rid]

        for row in sorted(tasks, key=lambda r: (r.get("creation_time_ms") or 0,
                                                deep(str(r["task_id"])))):
            rid = str(row["task_id"])
            if self.hide and str(row.get("name") or "").startswith(self.hide):
                continue
            state = STATES.get(str(row.get("state")), "ready")
            if state == "failed" and row.get("error_type") == "TASK_CANCELLED":
                state = "cancelled"
            if state in ("failed", "cancelled"):
                self.errors[rid] = str(row.get("error_message") or row.get("error_type") or "")
            old = self.task_state.get(rid)
            if old == state:
                continue
            tid = self.task_id(rid)
            created = _ms(row.get("creation_time_ms"), now)
            if old is None:
                known = self.notebook.get(rid)
                name = str(row.get("name") or row.get("func_or_class_name") or "task")
                label = name if known is not None else name + UNKNOWN_INPUTS
                deps = [self.object_id(o) for o in known[0]] if known is not None else []
                emit(created, "task_submitted", tid,
                     (label, deps, [], None, known[1] if known is not None else None))
            pid = row.get("worker_pid")
            if pid and pid not in self.workers and row.get("node_id"):
                self.workers.add(pid)
                wid = bytes.fromhex(str(row.get("worker_id") or "")) or pid.to_bytes(8, "little")
                emit(now, "worker_started", wid, (pid, bytes.fromhex(str(row["node_id"]))))
            ran = state in ("running", "blocked", "finished", "failed", "cancelled")
            if ran and old not in ("running", "blocked") and (pid or state == "running"):
                emit(_ms(row.get("start_time_ms"), now), "task_running", tid, pid)
            if state not in ("submitted", "running"):
                ended = state in ("finished", "failed", "cancelled")
                emit(_ms(row.get("end_time_ms"), now) if ended else now, "task_" + state, tid)
            self.task_state[rid] = state

    def _objects(self, objects: list[dict[str, Any]], nodes: list[dict[str, Any]],
                 ips: dict[str, str], now: float,
                 emit: Callable[..., None]) -> dict[str, dict[str, Any]]:
        seen: dict[str, tuple[int, str | None]] = {}
        for o in objects:  # one row per holder of a ref: one object per id
            size = max(int(o.get("object_size") or 0), 0)
            prev = seen.get(str(o["object_id"]))
            seen[str(o["object_id"])] = (max(size, prev[0] if prev else 0),
                                         ips.get(str(o.get("ip", ""))))
        used: dict[str, int] = {}
        for rid, (size, node) in seen.items():
            if node is not None:
                used[node] = used.get(node, 0) + size
            if rid not in self.objects:
                emit(now, "object_created", self.object_id(rid),
                     (size, LOC_UNKNOWN, bytes.fromhex(node) if node else None))
            self.objects[rid] = size
        for rid in [r for r in self.objects if r not in seen]:
            emit(now, "object_freed", self.object_id(rid), self.objects.pop(rid))
        return {str(n["node_id"]): {
            "used": used.get(str(n["node_id"]), 0),
            "capacity": int((n.get("resources_total") or {}).get("object_store_memory", 0)),
            "spilled_bytes": None} for n in nodes if n.get("state") == "ALIVE"}

    def traceback(self, view_tid: str) -> str:
        """What Ray recorded of a failed task's error, with its Ray task id."""
        rid = self.ray_tid.get(view_tid)
        if rid is None:
            return "(this task is not one Ray reported)"
        text = self.errors.get(rid) or "(Ray recorded no error message for this task)"
        return f"{text.rstrip()}\n(Ray task {rid})"


class RaySource:
    """An event source (``jray.views.model.EventSource``) over Ray's tables: ``read()``
    runs on a thread of its own every ``POLL_S``; ``take`` never blocks."""

    def __init__(self, read: Callable[[], Rows], events: RayEvents,
                 poll_s: float = POLL_S) -> None:
        self.read, self.events, self.poll_s = read, events, poll_s
        self.queue: deque[tuple[Any, ...]] = deque()
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.error: str | None = None  # why the last read failed (None: it worked)
        self.thread = threading.Thread(target=self._loop, name="jray-ray-views", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.stop.is_set():
            try:
                rows = self.read()
            except Exception as e:  # Ray's API server may be busy or gone: try again
                self.error = f"{type(e).__name__}: {e}"
            else:
                self.error = None
                items = self.events.items(rows)
                with self.lock:
                    self.queue.extend(items)
            self.stop.wait(self.poll_s)

    def take(self) -> list[tuple[Any, ...]]:
        with self.lock:
            items = list(self.queue)
            self.queue.clear()
        return items

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)
