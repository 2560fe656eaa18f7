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

from collections import OrderedDict, deque
from typing import Any, Protocol

from jray._private import protocol as P
from jray._private.events import TERMINAL_TASK_KINDS

FOLD_AT = 5000
TIMELINE_PER_WORKER = 20
_TERMINAL = {"finished", "failed", "cancelled"}
_WHERE = {P.LOC_INLINE: "inline", P.LOC_SHM: "shared_memory", P.LOC_ERROR: "error",
          P.LOC_SPILLED: "spilled"}


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
        self.objects: dict[str, dict[str, Any]] = {}
        self.nodes: dict[str, dict[str, Any]] = {}
        self.workers: dict[int, str] = {}  # pid -> node id
        self.actors: dict[str, dict[str, Any]] = {}
        self.store: dict[str, dict[str, Any]] = {}
        self.counts: dict[str, int] = {}
        self.folded: dict[str, dict[str, Any]] = {}
        self.timeline: dict[int, deque[list[Any]]] = {}
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
                for ev in item[1]:
                    self._apply_event(ev)
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
            self._set_state(rec, state, submitted)
            rec["pid"] = pid
            rec["node"] = self.workers.get(pid) if pid is not None else None
            rec["start"] = started or None
            rec["end"] = ended or None
        for row in snap.get("objects", []):
            oid, size, where, node, task, _owner, pins, _holders, created = row
            self.objects[oid.hex()] = {"id": oid.hex(), "size": size, "where": where,
                                       "node": node.hex() if node else None,
                                       "task": task.hex() if task else None,
                                       "pins": pins, "created": created}

    def _apply_event(self, ev: tuple[Any, ...]) -> None:
        seq, t, kind, ident, detail = ev
        self.seq = seq
        if kind.startswith("task_"):
            hid = ident.hex()
            if kind == "task_submitted":
                label, deps, returns, _owner, tag = detail
                self._add_task(ident, label, deps, returns, tag, t)
                self._set_state(self.tasks[hid], "submitted", t)
                return
            rec = self.tasks.get(hid)
            if rec is None:
                return
            if kind == "task_infeasible":
                rec["infeasible"] = detail
                self._changed.add(hid)
                return
            state = kind[5:]
            if state in ("retried", "requeued"):
                state = "ready"
            self._set_state(rec, state, t)
            if kind == "task_running":
                rec["pid"] = detail
                rec["node"] = self.workers.get(detail)
                rec["start"] = t
            elif kind in TERMINAL_TASK_KINDS:
                rec["end"] = t
                self._on_ended(rec)
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
        hid = ident.hex()
        if kind == "object_created":
            tid = P.task_of(ident)
            size, loc_kind, node = detail
            self.objects[hid] = {"id": hid, "size": size, "where": _WHERE.get(loc_kind, "?"),
                                 "node": node.hex() if node else None,
                                 "task": tid.hex() if tid else None, "pins": 0, "created": t}
        elif kind == "object_freed":
            self.objects.pop(hid, None)
        elif kind == "object_spilled":
            obj = self.objects.get(hid)
            if obj is not None:
                obj["where"] = "spilled"

    # --- tasks and layout -----------------------------------------------------------
    def _add_task(self, tid: bytes, label: str, deps: list[bytes], returns: list[bytes],
                  tag: Any, t: float) -> dict[str, Any]:
        hid = tid.hex()
        inputs: list[str] = []
        for oid in deps:
            src = P.task_of(oid)
            if src is not None and src.hex() in self.tasks and src.hex() not in inputs:
                inputs.append(src.hex())
        x, y = self._place(inputs)
        cell = list(tag) if isinstance(tag, (tuple, list)) and len(tag) == 2 else None
        group = f"In [{cell[1]}] {label}" if cell and cell[1] is not None else label
        rec: dict[str, Any] = {
            "id": hid, "label": label, "state": "submitted", "inputs": inputs,
            "returns": [r.hex() for r in returns], "cell": cell, "group": group,
            "x": x, "y": y, "pid": None, "node": None, "submit": t, "start": None,
            "end": None,
        }
        self.tasks[hid] = rec
        self._new[hid] = None
        return rec

    def _place(self, inputs: list[str]) -> tuple[int, int]:
        if inputs:
            recs = [self.tasks[i] for i in inputs]
            x = 1 + max(r["x"] for r in recs)
            y = round(sum(r["y"] for r in recs) / len(recs))
        else:
            x, y = 0, self._next_row
        while (x, y) in self._occupied:
            y += 1
        self._occupied.add((x, y))
        self._next_row = max(self._next_row, y + 1) if not inputs else self._next_row
        return x, y

    def _set_state(self, rec: dict[str, Any], state: str, t: float) -> None:
        old = rec["state"]
        if old == state and rec["id"] not in self._new:
            return
        if rec.get("_counted"):
            self.counts[old] = self.counts.get(old, 1) - 1
        rec["_counted"] = True
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
        line.append([rec["id"], rec["label"], rec["start"], rec["end"], rec["state"]])

    def _fold(self) -> None:
        """Fold the oldest finished tasks into their group's summary node."""
        excess = len(self.tasks) - self.fold_at
        if excess <= 0:
            return
        for hid in list(self.tasks):
            if excess <= 0:
                break
            rec = self.tasks[hid]
            if rec["state"] not in _TERMINAL:
                continue
            del self.tasks[hid]
            self._occupied.discard((rec["x"], rec["y"]))
            g = self.folded.setdefault(rec["group"], {"group": rec["group"], "count": 0,
                                                      "failed": 0, "x": rec["x"],
                                                      "y": rec["y"]})
            g["count"] += 1
            g["failed"] += rec["state"] != "finished"
            self._changed.discard(hid)
            if hid in self._new:
                del self._new[hid]
            else:
                self._removed.append(hid)
            excess -= 1

    # --- reading --------------------------------------------------------------------
    @staticmethod
    def _public(rec: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in rec.items() if not k.startswith("_")}

    def summary(self) -> dict[str, Any]:
        return {
            "seq": self.seq, "counts": dict(self.counts), "store": self.store,
            "nodes": list(self.nodes.values()), "actors": list(self.actors.values()),
            "folded": list(self.folded.values()), "left_out": self.left_out,
            "timeline": {str(pid): list(v) for pid, v in self.timeline.items()},
            "objects": sorted(self.objects.values(), key=lambda o: -int(o["size"]))[:12],
            "object_count": len(self.objects),
            "object_bytes": sum(int(o["size"]) for o in self.objects.values()),
        }

    def full(self) -> dict[str, Any]:
        """Everything a renderer needs to draw from scratch."""
        return {"type": "full", "tasks": [self._public(r) for r in self.tasks.values()],
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
            "new": [self._public(self.tasks[h]) for h in self._new if h in self.tasks],
            "changed": [[h, r["state"], r["pid"], r["node"], r["start"], r["end"]]
                        for h in self._changed if h not in new
                        and (r := self.tasks.get(h)) is not None],
            "removed": self._removed,
            **self.summary(),
        }
        self._new, self._changed, self._removed = {}, set(), []
        return out
