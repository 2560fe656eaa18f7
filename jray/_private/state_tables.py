"""Records the head keeps (nodes, workers, tasks, objects), its event log, and
the plain-data views of them that the state API returns.

Each task keeps its own list of ``(state, timestamp, detail)`` transitions;
the cluster-wide ``EventLog`` holds the same transitions (and object and node
events) in order, bounded, with a sequence number, so that live views can
ask for "everything after event N" cheaply.
"""

from __future__ import annotations

import time
from collections import deque
from typing import TYPE_CHECKING, Any

from jray._private import protocol as P
from jray._private.resources import Demand, NodeResources, Shape

if TYPE_CHECKING:
    from jray._private.scheduler import Scheduler

EVENTS_KEPT = 200_000
_now = time.time
_TASK_KINDS = {s: "task_" + s for s in (
    "submitted", "waiting", "ready", "running", "finished", "failed", "cancelled",
    "retried", "requeued", "blocked")}


class EventLog:
    """A bounded, ordered stream of ``(seq, time, kind, id, detail)`` events."""

    __slots__ = ("_log", "seq")

    def __init__(self, maxlen: int = EVENTS_KEPT) -> None:
        self._log: deque[tuple[int, float, str, bytes, Any]] = deque(maxlen=maxlen)
        self.seq = 0

    def add(self, kind: str, ident: bytes, detail: Any = None) -> None:
        self.seq += 1
        self._log.append((self.seq, _now(), kind, ident, detail))

    def since(self, seq: int, limit: int = 10_000) -> list[tuple[int, float, str, str, Any]]:
        out = []
        for ev in self._log:
            if ev[0] > seq:
                out.append((ev[0], ev[1], ev[2], ev[3].hex(), ev[4]))
                if len(out) >= limit:
                    break
        return out


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
                 "blocked", "funcs")

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
            log.seq += 1
            kind = _TASK_KINDS.get(state) or "task_" + state
            log._log.append((log.seq, t, kind, self.spec[0], detail))


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
                 P.LOC_SPILLED: "spilled"}[kind]
        if kind in (P.LOC_SHM, P.LOC_SPILLED):
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


def describe(sched: Scheduler, kind: str, arg: Any) -> Any:
    """Plain-data answers to state queries (they cross the wire as pickles)."""
    if kind == "tasks":
        return [_task_row(t) for t in sched.tasks.values()]
    if kind == "objects":
        return [_object_row(o, sched) for o in sched.objects.values()]
    if kind == "nodes":
        return [
            {
                "NodeID": n.node_id.hex(),
                "Alive": n.alive,
                "NodeManagerHostname": n.hostname,
                "Resources": dict(n.res.total),
                "Available": dict(n.res.available),
                "Workers": len(n.workers),
                "pid": n.pid,
            }
            for n in sched.nodes.values()
        ]
    if kind in ("cluster_resources", "available_resources"):
        total: dict[str, float] = {}
        for n in sched.nodes.values():
            src = n.res.total if kind == "cluster_resources" else n.res.available
            for k, v in src.items():
                total[k] = total.get(k, 0.0) + max(v, 0.0)
        return total
    if kind == "events":
        return sched.events.since(int(arg or 0))
    if kind == "store":
        return sched.store.summary()
    if kind == "summary":
        counts: dict[str, int] = {}
        for t in sched.tasks.values():
            counts[t.state] = counts.get(t.state, 0) + 1
        return {"tasks": counts, "objects": len(sched.objects), "workers": len(sched.workers)}
    raise ValueError(f"unknown state query {kind!r}")
