"""The head's event subscriptions: a snapshot first, then deltas, never too fast.

::

    client ──EVENTS_SUBSCRIBE──▶ head ──EVENTS_SNAPSHOT(seq, tables)──▶ client
                                      ──EVENTS_DELTA([events after seq])──▶
    client ──EVENTS_ACK(seq)────▶     ──EVENTS_DELTA(...)──▶   (one in flight at a time)

A state machine without I/O, owned by the ``Scheduler``: the head calls
:meth:`EventFeed.push` once per drained round (from ``take_outbox``), and
the messages land in the scheduler's outbox like every other reply.

Flow control keeps a slow subscriber from costing the scheduler anything:
each subscriber has at most one delta in flight, and gets the next only after
its ``EVENTS_ACK``; deltas go out at most every ``PUSH_INTERVAL_S``, so a
fast one sees events coalesced into a few large batches. A subscriber that
has fallen further behind than ``max_batch`` events (or behind the log's
ring) gets a fresh snapshot instead of the backlog. One that never acks again
costs a dictionary entry, nothing per event.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from jray._private import protocol as P

if TYPE_CHECKING:
    from jray._private.scheduler import Scheduler
    from jray._private.state_tables import Obj, Task

PUSH_INTERVAL_S = 0.1
DEFAULT_MAX_BATCH = 50_000
#: the snapshot holds at most this many tasks (the newest); the rest are counted
SNAPSHOT_TASKS = 20_000
SNAPSHOT_OBJECTS = 20_000
MAX_SUBSCRIBERS = 64
_clock = time.monotonic


class _Sub:
    __slots__ = ("ident", "cursor", "credit", "last_push", "max_batch")

    def __init__(self, ident: bytes, max_batch: int) -> None:
        self.ident = ident
        self.cursor = 0
        self.credit = True
        self.last_push = 0.0
        self.max_batch = max_batch


class EventFeed:
    """Subscribers of one head's event log (see module docstring)."""

    def __init__(self, sched: Scheduler) -> None:
        self.sched = sched
        self.subs: dict[bytes, _Sub] = {}
        #: counters for tests and ``statistics()``
        self.snapshots_sent = 0
        self.deltas_sent = 0
        self.events_sent = 0
        sched.register(P.EVENTS_SUBSCRIBE, self.on_subscribe)
        sched.register(P.EVENTS_ACK, self.on_ack)
        sched.register(P.EVENTS_UNSUBSCRIBE, self.on_unsubscribe)

    # --- messages -----------------------------------------------------------------
    def on_subscribe(self, sender: bytes, msg: P.Msg) -> None:
        max_batch = msg[1] if len(msg) > 1 else DEFAULT_MAX_BATCH
        if not isinstance(max_batch, int) or max_batch < 1:
            max_batch = DEFAULT_MAX_BATCH
        if sender not in self.subs and len(self.subs) >= MAX_SUBSCRIBERS:
            del self.subs[next(iter(self.subs))]  # the oldest goes
        sub = self.subs[sender] = _Sub(sender, max_batch)
        self._snapshot(sub)

    def on_ack(self, sender: bytes, msg: P.Msg) -> None:
        sub = self.subs.get(sender)
        if sub is not None:
            sub.credit = True

    def on_unsubscribe(self, sender: bytes, msg: P.Msg) -> None:
        self.subs.pop(sender, None)

    def poll_ms(self, idle_ms: int) -> int:
        """How long the head may wait for messages: until the next delta is due, when one
        is waiting (so the last events of a burst reach the views while the cluster idles)."""
        seq = self.sched.events.seq
        due = [s.last_push + PUSH_INTERVAL_S for s in self.subs.values()
               if s.credit and s.cursor < seq]
        if not due:
            return idle_ms
        return max(1, min(idle_ms, int((min(due) - _clock()) * 1000) + 1))

    # --- once per drained round -------------------------------------------------
    def push(self) -> None:
        log = self.sched.events
        now = _clock()
        for sub in self.subs.values():
            if not sub.credit or sub.cursor >= log.seq or now - sub.last_push < PUSH_INTERVAL_S:
                continue
            if log.seq - sub.cursor > sub.max_batch or sub.cursor + 1 < log.first_seq:
                self._snapshot(sub)  # too far behind: the tables now, not the backlog
                continue
            events = log.since(sub.cursor, sub.max_batch)
            sub.cursor = events[-1][0]
            sub.credit = False
            sub.last_push = now
            self.deltas_sent += 1
            self.events_sent += len(events)
            self.sched.send(sub.ident, (P.EVENTS_DELTA, events, self.sched.store.summary()))

    def _snapshot(self, sub: _Sub) -> None:
        seq = self.sched.events.seq
        self.sched.send(sub.ident, (P.EVENTS_SNAPSHOT, seq, snapshot(self.sched)))
        sub.cursor = seq
        sub.credit = False
        sub.last_push = _clock()
        self.snapshots_sent += 1


def _task_tuple(t: Task) -> tuple[Any, ...]:
    spec = t.spec
    submitted = t.history[0][1] if t.history else 0.0
    tag = spec[P.T_TAG] if len(spec) > P.T_TAG else None
    pid = next((d for s, _, d in reversed(t.history) if s == "running"), None)
    return (spec[P.T_ID], spec[P.T_NAME], t.state, list(spec[P.T_DEPS]),
            list(spec[P.T_RETURNS]), t.owner, tag, pid, submitted, t.started, t.ended)


def _object_tuple(o: Obj) -> tuple[Any, ...]:
    where, node = "pending", None
    if o.loc is not None:
        kind = o.loc[0]
        where = {P.LOC_INLINE: "inline", P.LOC_SHM: "shared_memory", P.LOC_ERROR: "error",
                 P.LOC_SPILLED: "spilled", P.LOC_VIEW: "shared_memory"}.get(kind, "unknown")
        if kind in (P.LOC_SHM, P.LOC_SPILLED, P.LOC_VIEW):
            node = o.loc[-1]
    return (o.oid, o.size, where, node, o.task, o.owner, o.pins, o.holders, o.created)


def snapshot(sched: Scheduler) -> dict[str, Any]:
    """The head's tables as plain tuples (raw ids), newest tasks and objects first cut.

    Layouts: ``tasks``: (id, label, state, deps, returns, owner, tag, pid, submitted,
    started, ended); ``objects``: (id, size, where, node_id, task_id, owner, pins,
    holders, created); ``nodes``: (node_id, hostname, pid, alive, total, available);
    ``workers``: (worker_id, pid, node_id).
    """
    tasks = list(sched.tasks.values())
    objects = list(sched.objects.values())
    parts = {name: fn() for name, fn in sched.snapshot_parts.items()}
    return {
        "tasks": [_task_tuple(t) for t in tasks[-SNAPSHOT_TASKS:]],
        "tasks_left_out": max(0, len(tasks) - SNAPSHOT_TASKS),
        "objects": [_object_tuple(o) for o in objects[-SNAPSHOT_OBJECTS:]],
        "objects_left_out": max(0, len(objects) - SNAPSHOT_OBJECTS),
        "nodes": [(n.node_id, n.hostname, n.pid, n.alive, dict(n.res.total),
                   dict(n.res.available)) for n in sched.nodes.values()],
        "workers": [(w.ident, w.pid, w.node.node_id) for w in sched.workers.values()],
        "store": sched.store.summary(),
        **parts,
    }
