"""Records the head keeps (nodes, workers, tasks, objects), its event log, and
the plain-data views of them that the state API returns.

Each task keeps its own list of ``(state, timestamp, detail)`` transitions;
the cluster-wide ``EventLog`` (``events``) holds the same transitions (and
object, actor and node events) in order, bounded, with a sequence number.
"""

from __future__ import annotations

import time
from collections import deque
from typing import TYPE_CHECKING, Any

from jray._private import protocol as P
from jray._private.events import TASK_KIND, EventLog, to_plain
from jray._private.resources import Demand, NodeResources, Shape

if TYPE_CHECKING:
    from jray._private.scheduler import Scheduler

_now = time.time


class Node:
    __slots__ = ("node_id", "ident", "res", "hostname", "pid", "workers", "idle",
                 "pending_spawns", "alive")

    def __init__(self, node_id: bytes, ident: bytes, res: NodeResources, hostname: str,
                 pid: int) -> None:
        self.node_id = node_id
        self.ident = ident
        self.res = res
        self.hostname = hostname
        self.pid = pid
        self.workers: set[bytes] = set()
        self.idle: list[Worker] = []
        self.pending_spawns = 0
        self.alive = True


class Worker:
    __slots__ = ("ident", "node", "pid", "addr", "assigned", "held", "holding", "gpu_ids",
                 "blocked", "funcs", "lease")

    def __init__(self, ident: bytes, node: Node, pid: int, addr: str) -> None:
        self.ident = ident
        self.node = node
        self.pid = pid
        self.addr = addr
        self.assigned: deque[Task] = deque()
        self.held: Demand | None = None
        self.holding = False
        self.gpu_ids: list[int] = []
        self.blocked = False
        self.funcs: set[bytes] = set()
        #: the lease it serves (its resources are held for that owner), or None
        self.lease: bytes | None = None


class Task:
    __slots__ = ("spec", "owner", "demand", "shape", "retries_left", "state", "waiting",
                 "worker", "history", "cancelled", "infeasible", "started", "ended", "log",
                 "pinned")

    def __init__(self, spec: P.TaskSpec, owner: bytes, demand: Demand, shape: Shape,
                 retries: int) -> None:
        self.spec = spec
        self.owner = owner
        self.demand = demand
        self.shape = shape
        self.retries_left = retries
        self.state = "submitted"
        self.waiting = 0
        self.worker: bytes | None = None
        self.history: list[tuple[str, float, Any]] = []
        self.cancelled = False
        self.infeasible = False
        self.started = 0.0
        self.ended = 0.0
        self.log: EventLog | None = None
        #: object ids this task pins (its dependencies and refs inside its arguments)
        self.pinned: list[bytes] = []

    @property
    def name(self) -> str:
        return str(self.spec[P.T_NAME])

    def event(self, state: str, detail: Any = None) -> None:
        # hot path (several calls per task): one clock read, no string building
        t = _now()
        self.history.append((state, t, detail))
        log = self.log
        if log is not None:
            log.record(t, TASK_KIND[state], self.spec[0], detail)

    def pin(self, obj: Obj) -> None:
        """This task keeps ``obj`` alive until it ends; the first pin is an event."""
        obj.pins += 1
        self.pinned.append(obj.oid)
        if obj.pins == 1 and self.log is not None:
            self.log.record(_now(), "object_pinned", obj.oid, self.spec[0])

    def unpin(self, obj: Obj) -> None:
        """Drop one pin of ``obj`` (the caller empties ``pinned``); the last is an event."""
        obj.pins -= 1
        if obj.pins == 0 and self.log is not None:
            self.log.record(_now(), "object_unpinned", obj.oid, self.spec[0])


class Obj:
    __slots__ = ("oid", "owner", "task", "loc", "size", "dependents", "subscribers", "freed",
                 "pins", "holders", "contains", "created")

    def __init__(self, oid: bytes, owner: bytes, task: bytes | None) -> None:
        self.oid = oid
        self.owner = owner
        self.task = task
        self.loc: P.Loc | None = None
        self.size = 0
        self.dependents: list[Task] | None = None
        self.subscribers: list[bytes] | None = None
        self.freed = False
        self.pins = 0
        #: borrowing processes plus stored objects whose value contains this ref
        self.holders = 0
        self.contains: list[bytes] | None = None
        self.created = time.time()


def _task_row(t: Task) -> dict[str, Any]:
    return {
        "task_id": t.spec[P.T_ID].hex(),
        "name": t.name,
        "state": t.state.upper(),
        "resources": dict(t.demand),
        "worker_pid": next((d for s, _, d in reversed(t.history) if s == "running"), None),
        "retries_left": t.retries_left,
        "infeasible": t.infeasible,
        "start_time": t.started or None,
        "end_time": t.ended or None,
        "events": [{"state": s.upper(), "time": ts, "detail": d} for s, ts, d in t.history],
        "depends_on": [oid.hex() for oid in t.spec[P.T_DEPS]],
        "returns": [oid.hex() for oid in t.spec[P.T_RETURNS]],
    }


def _object_row(o: Obj, sched: Scheduler) -> dict[str, Any]:
    where = "pending"
    node = None
    if o.loc is not None:
        kind = o.loc[0]
        where = {P.LOC_INLINE: "inline", P.LOC_SHM: "shared_memory", P.LOC_ERROR: "error",
                 P.LOC_SPILLED: "spilled", P.LOC_VIEW: "shared_memory"}[kind]
        if kind in (P.LOC_SHM, P.LOC_SPILLED, P.LOC_VIEW):
            node = o.loc[-1].hex()
    return {
        "object_id": o.oid.hex(),
        "owner": o.owner.hex(),
        "size": o.size,
        "where": where,
        "node_id": node,
        "task_id": o.task.hex() if o.task else None,
        "created": o.created,
        "pinned_by_tasks": o.pins,
        "borrowers_and_containers": o.holders,
        "ref_count": o.pins + o.holders + (0 if o.freed else 1),
        "freed_by_owner": o.freed,
    }


def _limited(rows: list[dict[str, Any]], limit: int | None) -> list[dict[str, Any]]:
    return rows if limit is None else rows[max(0, len(rows) - limit):]


def _filtered_tasks(sched: Scheduler, f: dict[str, Any]) -> list[dict[str, Any]]:
    """Tasks in submission order; ``state``/``label`` filter, ``limit`` keeps the newest."""
    state, label, limit = f.get("state"), f.get("label"), f.get("limit")
    chosen: list[Task] = []
    for t in reversed(sched.tasks.values()):  # newest first, so a limit stops early
        if state is not None and t.state != state:
            continue
        if label is not None and label not in t.name:
            continue
        chosen.append(t)
        if limit is not None and len(chosen) >= limit:
            break
    return [_task_row(t) for t in reversed(chosen)]


def _task_error(sched: Scheduler, tid: bytes) -> P.Loc | None:
    """The error location of a failed task's first return (the driver unpickles it)."""
    task = sched.tasks.get(tid)
    if task is None or task.state not in ("failed", "cancelled"):
        return None
    for oid in task.spec[P.T_RETURNS]:
        obj = sched.objects.get(oid)
        if obj is not None and obj.loc is not None and obj.loc[0] == P.LOC_ERROR:
            return obj.loc
    return None


def _available(sched: Scheduler, node: Node, asker: bytes | None = None) -> dict[str, float]:
    """What no running task holds: a leased worker that runs nothing counts as free
    (the head takes its lease back as soon as queued work needs it). The head hears
    of a leased task only afterwards, so a worker that asks (``asker``: from inside
    its task) is busy whatever the head knows."""
    avail = dict(node.res.available)
    for wid in node.workers:
        w = sched.workers.get(wid)
        if w is not None and w.lease is not None and w.holding and not w.assigned and w.held \
                and wid != asker:
            for k, v in w.held.items():
                avail[k] = avail.get(k, 0.0) + v
    return avail


def describe(sched: Scheduler, kind: str, arg: Any, asker: bytes | None = None) -> Any:
    """Plain-data answers to state queries (they cross the wire as pickles); ``asker``:
    the identity of the peer that asked."""
    if kind == "tasks":
        return _filtered_tasks(sched, arg or {})
    if kind == "objects":
        rows = [_object_row(o, sched) for o in sched.objects.values()]
        where = (arg or {}).get("where")
        if where is not None:
            rows = [r for r in rows if r["where"] == where]
        return _limited(rows, (arg or {}).get("limit"))
    if kind == "task_error":
        return _task_error(sched, arg)
    if kind == "nodes":
        return [
            {
                "NodeID": n.node_id.hex(),
                "Alive": n.alive,
                "NodeManagerHostname": n.hostname,
                "Resources": dict(n.res.total),
                "Available": _available(sched, n, asker),
                "Workers": len(n.workers),
                "pid": n.pid,
            }
            for n in sched.nodes.values()
        ]
    if kind in ("cluster_resources", "available_resources"):
        total: dict[str, float] = {}
        for n in sched.nodes.values():
            src = n.res.total if kind == "cluster_resources" else _available(sched, n, asker)
            for k, v in src.items():
                total[k] = total.get(k, 0.0) + max(v, 0.0)
        # as in Ray, exhausted resources are left out of the available ones
        return total if kind == "cluster_resources" else {
            k: v for k, v in total.items() if v > 1e-9}
    if kind == "events":
        return [to_plain(ev) for ev in sched.events.since(int(arg or 0))]
    if kind == "store":
        return sched.store.summary()
    if kind == "summary":
        counts: dict[str, int] = {}
        for t in sched.tasks.values():
            counts[t.state] = counts.get(t.state, 0) + 1
        return {"tasks": counts, "objects": len(sched.objects), "workers": len(sched.workers),
                "object_bytes": sum(o.size for o in sched.objects.values()),
                "nodes": sum(n.alive for n in sched.nodes.values()),
                "events": sched.events.seq}
    raise ValueError(f"unknown state query {kind!r}")
