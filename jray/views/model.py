"""What the live views show, kept up to date from an event source; no I/O, no widgets.

::

    EventSource.take() ──items──▶ ViewModel.apply() ──▶ tables + layout
                                   ViewModel.patch()  ──▶ JSON-able changes for renderers
                                   ViewModel.full()   ──▶ everything, for a renderer that joins

An *event source* is anything with ``take() -> list[item]`` and ``close()``;
items are ``("snapshot", seq, tables)`` and ``("delta", [event, ...], store)`` as
``jray._private.event_feed`` documents them. The head's subscription
(``jray._private.event_stream.Subscription``) is one; a second backend feeds
the same items.

Layout (stable and incremental, as in dask's graph page): a new task's column
is one more than its deepest input's; its row is the mean of its inputs' rows,
or the next free row for a task without inputs; a taken spot moves it down.
Nothing drawn ever moves. Beyond ``FOLD_AT`` drawn tasks, the oldest finished
ones fold into one summary node per group (cell or function).
"""

from __future__ import annotations

import heapq
from collections import OrderedDict, deque
from typing import Any, Protocol

from jray._private import protocol as P
from jray._private.events import TASK_KIND, TERMINAL_TASK_KINDS

FOLD_AT = 5000
TIMELINE_PER_WORKER = 20
TOP_OBJECTS = 12
_TERMINAL = {"finished", "failed", "cancelled"}
_WHERE = {P.LOC_INLINE: "inline", P.LOC_SHM: "shared_memory", P.LOC_ERROR: "error",
          P.LOC_SPILLED: "spilled"}
#: the state a task event moves a task to (a retried or requeued task waits again)
_STATE_OF: dict[str, str] = {kind: "ready" if s in ("retried", "requeued") else s
                             for s, kind in TASK_KIND.items() if s != "submitted"}


class EventSource(Protocol):
    def take(self) -> list[tuple[Any, ...]]: ...

    def close(self) -> None: ...


class ViewModel:
    """Tasks, objects, nodes and workers of one cluster, as the views draw them."""

    def __init__(self, fold_at: int = FOLD_AT) -> None:
        self.fold_at = fold_at
        self.seq = 0
        self.reset()

    def reset(self) -> None:
        #: task id (hex) -> record (a dict the renderers read as JSON)
        self.tasks: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._raw: dict[bytes, dict[str, Any]] = {}  # the same records by raw task id
        self._object_bytes = 0
        self._pinned: set[bytes] = set()  # objects some unfinished task needs (events)
        #: object id (raw) -> (size, where, node id (raw) or None, pins, created); the
        #: largest are made records in ``summary``. ``pins``: the snapshot's count of
        #: tasks that pin it, then 1 or 0 from the pinned / unpinned events
        self.objects: dict[bytes, tuple[Any, ...]] = {}
        self._top: list[bytes] | None = None  # the largest objects' ids; None: find again
        self._top_min = -1  # the smallest size among them, once there are TOP_OBJECTS
        self.nodes: dict[str, dict[str, Any]] = {}
        self.workers: dict[int, str] = {}  # pid -> node id
        self.actors: dict[str, dict[str, Any]] = {}
        self.store: dict[str, dict[str, Any]] = {}
        self.counts: dict[str, int] = {}
        self.folded: dict[str, dict[str, Any]] = {}
        self.timeline: dict[int, deque[dict[str, Any]]] = {}  # pid -> ended task records
        self.left_out = 0
        self._occupied: set[tuple[int, int]] = set()
        self._next_row = 0
        self._new: dict[str, None] = {}  # ordered set: tasks added since the last patch
        self._changed: set[str] = set()
        self._removed: list[str] = []
        self._full_reset = True

    # --- feeding ------------------------------------------------------------------
    def apply(self, items: list[tuple[Any, ...]]) -> None:
        for item in items:
            if item[0] == "snapshot":
                self._apply_snapshot(item[1], item[2])
            else:
                self._apply_events(item[1])
                if len(item) > 2:
                    self.store = item[2]
        self._fold()

    def _apply_snapshot(self, seq: int, snap: dict[str, Any]) -> None:
        self.reset()
        self.seq = seq
        self.left_out = int(snap.get("tasks_left_out", 0))
        for node_id, host, pid, alive, total, avail in snap.get("nodes", []):
            self.nodes[node_id.hex()] = {"id": node_id.hex(), "host": host, "pid": pid,
                                         "alive": alive, "resources": total,
                                         "available": avail}
        for _, pid, node_id in snap.get("workers", []):
            self.workers[pid] = node_id.hex()
        for row in snap.get("actors", []):
            self.actors[row["actor_id"]] = dict(row)
        self.store = dict(snap.get("store", {}))
        for (tid, label, state, deps, returns, _owner, tag, pid, submitted, started,
             ended) in snap.get("tasks", []):
            rec = self._add_task(tid, label, deps, returns, tag, submitted)
            self._set_state(rec, state)
            rec["pid"] = pid
            rec["node"] = self.workers.get(pid) if pid is not None else None
            rec["start"] = started or None
            rec["end"] = ended or None
        for row in snap.get("objects", []):
            oid, size, where, node, task, _owner, pins, _holders, created = row
            self.objects[oid] = (size, where, node or None, pins, created)
            self._object_bytes += int(size)

    def _apply_events(self, events: list[tuple[Any, ...]]) -> None:
        """The hot path (several events per task, the views' whole cost): task state
        changes inline, the rarer kinds through ``_apply_event``."""
        raw, counts, changed, workers = self._raw, self.counts, self._changed, self.workers
        state_of, terminal = _STATE_OF, TERMINAL_TASK_KINDS
        for ev in events:
            kind = ev[2]
            state = state_of.get(kind)
            if state is None:
                if kind == "task_submitted":
                    label, deps, returns, _owner, tag = ev[4]
                    self._add_task(ev[3], label, deps, returns, tag, ev[1])
                elif kind == "object_created":
                    self._apply_object(kind, ev[3], ev[4], ev[1])
                else:
                    self._apply_event(ev)
                continue
            rec = raw.get(ev[3])
            if rec is None:
                continue
            old = rec["state"]
            if old != state:
                counts[old] -= 1
                counts[state] = counts.get(state, 0) + 1
                rec["state"] = state
                changed.add(rec["id"])
            if state == "running":
                rec["pid"] = ev[4]
                rec["node"] = workers.get(ev[4])
                rec["start"] = ev[1]
            elif kind in terminal:
                rec["end"] = ev[1]
                self._on_ended(rec)
        if events:
            self.seq = events[-1][0]

    def _apply_event(self, ev: tuple[Any, ...]) -> None:
        seq, t, kind, ident, detail = ev
        if kind == "task_infeasible":
            rec = self._raw.get(ident)
            if rec is not None:
                rec["infeasible"] = detail
                self._changed.add(rec["id"])
        elif kind.startswith("object_"):
            self._apply_object(kind, ident, detail, t)
        elif kind == "worker_started":
            self.workers[detail[0]] = detail[1].hex()
        elif kind == "node_added":
            total, host, pid = detail
            self.nodes[ident.hex()] = {"id": ident.hex(), "host": host, "pid": pid,
                                       "alive": True, "resources": total, "available": total}
        elif kind == "node_lost":
            node = self.nodes.get(ident.hex())
            if node is not None:
                node["alive"] = False
        elif kind.startswith("actor_"):
            rec = self.actors.setdefault(ident.hex(), {"actor_id": ident.hex()})
            rec["state"] = kind[6:].upper()
            if kind == "actor_created":
                rec["class_name"] = detail
            elif kind == "actor_alive":
                rec["pid"] = detail

    def _apply_object(self, kind: str, ident: bytes, detail: Any, t: float) -> None:
        objects = self.objects
        if kind == "object_created":
            size, loc_kind, node = detail
            old = objects.get(ident)
            self._object_bytes += int(size) - (int(old[0]) if old else 0)
            objects[ident] = (size, _WHERE.get(loc_kind, "?"), node or None,
                              int(ident in self._pinned), t)
            top = self._top
            if top is not None and (size > self._top_min or old is not None):
                self._top = None
        elif kind == "object_pinned" or kind == "object_unpinned":
            pinned = kind == "object_pinned"
            if pinned:
                self._pinned.add(ident)
            else:
                self._pinned.discard(ident)
            obj = objects.get(ident)
            if obj is not None:
                objects[ident] = (*obj[:3], int(pinned), obj[4])
                self._touched(ident)
        elif kind == "object_freed":
            self._pinned.discard(ident)
            gone = objects.pop(ident, None)
            if gone is not None:
                self._object_bytes -= int(gone[0])
                self._touched(ident)
        elif kind == "object_spilled":
            obj = objects.get(ident)
            if obj is not None:
                objects[ident] = (obj[0], "spilled", *obj[2:])
                self._touched(ident)

    def _touched(self, oid: bytes) -> None:
        if self._top is not None and oid in self._top:
            self._top = None  # one of the largest changed or went

    # --- tasks and layout -----------------------------------------------------------
    def _add_task(self, tid: bytes, label: str, deps: list[bytes], returns: list[bytes],
                  tag: Any, t: float) -> dict[str, Any]:
        hid = tid.hex()
        srcs: list[dict[str, Any]] = []
        if deps:
            raw, task_of = self._raw, P.task_of
            for oid in deps:
                src = raw.get(task_of(oid) or b"")
                if src is not None and src not in srcs:
                    srcs.append(src)
        x, y = self._place(srcs)
        cell = list(tag) if type(tag) in (tuple, list) and len(tag) == 2 else None
        group = f"In [{cell[1]}] {label}" if cell and cell[1] is not None else label
        rec: dict[str, Any] = {
            "id": hid, "label": label, "state": "submitted",
            "inputs": [r["id"] for r in srcs] if srcs else [],
            "returns": list(map(bytes.hex, returns)),
            "cell": cell, "group": group, "x": x, "y": y, "pid": None, "node": None,
            "submit": t, "start": None, "end": None,
        }
        self.tasks[hid] = rec
        self._raw[tid] = rec
        self._new[hid] = None
        self.counts["submitted"] = self.counts.get("submitted", 0) + 1
        return rec

    def _place(self, srcs: list[dict[str, Any]]) -> tuple[int, int]:
        occupied = self._occupied
        if srcs:
            x = 1 + max(r["x"] for r in srcs)
            y = round(sum(r["y"] for r in srcs) / len(srcs))
        else:
            x, y = 0, self._next_row
        while (x, y) in occupied:
            y += 1
        occupied.add((x, y))
        if not srcs:
            self._next_row = max(self._next_row, y + 1)
        return x, y

    def _set_state(self, rec: dict[str, Any], state: str) -> None:
        old = rec["state"]
        if old == state:
            return
        self.counts[old] -= 1
        self.counts[state] = self.counts.get(state, 0) + 1
        rec["state"] = state
        self._changed.add(rec["id"])

    def _on_ended(self, rec: dict[str, Any]) -> None:
        pid = rec["pid"]
        if pid is None:
            return
        line = self.timeline.get(pid)
        if line is None:
            line = self.timeline[pid] = deque(maxlen=TIMELINE_PER_WORKER)
        line.append(rec)

    def _fold(self) -> None:
        """Fold the oldest finished tasks into their group's summary node."""
        excess = len(self.tasks) - self.fold_at
        if excess <= 0:
            return
        victims: list[dict[str, Any]] = []
        for rec in self.tasks.values():  # oldest first; stops at the first `excess` ended
            if rec["state"] in _TERMINAL:
                victims.append(rec)
                if len(victims) >= excess:
                    break
        for rec in victims:
            hid = rec["id"]
            del self.tasks[hid]
            del self._raw[bytes.fromhex(hid)]
            self._occupied.discard((rec["x"], rec["y"]))
            g = self.folded.get(rec["group"])
            if g is None:
                g = self.folded[rec["group"]] = {"group": rec["group"], "count": 0,
                                                 "failed": 0, "x": rec["x"], "y": rec["y"]}
            g["count"] += 1
            g["failed"] += rec["state"] != "finished"
            self._changed.discard(hid)
            if hid in self._new:
                del self._new[hid]
            else:
                self._removed.append(hid)

    # --- reading --------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        return {
            "seq": self.seq, "counts": dict(self.counts), "store": self.store,
            "nodes": list(self.nodes.values()), "actors": list(self.actors.values()),
            "folded": list(self.folded.values()), "left_out": self.left_out,
            "timeline": {str(pid): [[r["id"], r["label"], r["start"], r["end"], r["state"]]
                                    for r in line] for pid, line in self.timeline.items()},
            "objects": self._largest(),
            "object_count": len(self.objects),
            "object_bytes": self._object_bytes,
        }

    def _largest(self) -> list[dict[str, Any]]:
        """The ``TOP_OBJECTS`` largest objects as records (found again only when an object
        that could be among them came, changed or went)."""
        objects = self.objects
        if self._top is None:
            top = heapq.nlargest(TOP_OBJECTS, objects.items(), key=lambda kv: int(kv[1][0]))
            self._top = [oid for oid, _ in top]
            self._top_min = int(top[-1][1][0]) if len(top) == TOP_OBJECTS else -1
        out = []
        for oid in self._top:
            size, where, node, pins, created = objects[oid]
            tid = P.task_of(oid)
            out.append({"id": oid.hex(), "size": size, "where": where,
                        "node": node.hex() if node else None, "task": tid.hex() if tid else None,
                        "pins": pins, "created": created})
        return out

    def full(self) -> dict[str, Any]:
        """Everything a renderer needs to draw from scratch. The task records are the
        model's own (no copies): encode the message before the next ``apply``."""
        return {"type": "full", "tasks": list(self.tasks.values()),
                **self.summary()}

    def patch(self) -> dict[str, Any] | None:
        """The changes since the last call (``None``: nothing changed); a ``full``
        after a snapshot (the renderer redraws)."""
        if self._full_reset:
            self._full_reset = False
            self._new, self._changed, self._removed = {}, set(), []
            return self.full()
        if not (self._new or self._changed or self._removed):
            return None
        new = self._new
        out = {
            "type": "patch",
            "new": [r for h in new if (r := self.tasks.get(h)) is not None],
            "changed": [[h, r["state"], r["pid"], r["node"], r["start"], r["end"]]
                        for h in self._changed if h not in new
                        and (r := self.tasks.get(h)) is not None],
            "removed": self._removed,
            **self.summary(),
        }
        self._new, self._changed, self._removed = {}, set(), []
        return out
