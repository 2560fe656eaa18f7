"""The head's control state and DAG scheduler, as a state machine without I/O.

``Scheduler.handle(sender, msg)`` takes one decoded message from a driver,
worker or node daemon, updates the tables (nodes, workers, tasks, objects,
functions) and appends the messages it wants sent to ``self.out``, keyed by
the receiver's ZeroMQ identity. The head process (``head.py``) does the
socket work; tests drive this class directly, with no process at all.

Scheduling rules:

- A task is *ready* once every top-level ``ObjectRef`` argument exists. Ready
  tasks queue per resource shape, in submission order.
- A ready task goes to an idle worker on a node whose available resources
  cover it; the worker holds those resources until its queue empties.
- Short tasks (their function's recent mean run time under ``PIPELINE_MAX_S``) may
  also queue behind a busy worker that holds the same resource shape, up to
  ``PIPELINE_DEPTH``: this hides the head round trip without ever running more
  tasks at once than the declared resources allow.
- A worker that blocks in ``get`` lends its resources back and returns the tasks it
  had queued; the head starts more workers when tasks fit the free resources but no
  worker is idle (nested tasks never deadlock).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from jray._private import invariants, lineage
from jray._private import protocol as P
from jray._private.event_feed import EventFeed
from jray._private.events import EventLog
from jray._private.leases import LeaseTable
from jray._private.membership import Membership
from jray._private.object_table import ObjectTable
from jray._private.resources import Demand, Shape, shape_of
from jray._private.serialization import error_loc
from jray._private.state_tables import Node, Obj, Task, Worker
from jray._private.store import StorePolicy
from jray._private.unknown_objects import UnknownObjects
from jray.exceptions import (
    ObjectLostError,
    TaskCancelledError,
    WorkerCrashedError,
)

PIPELINE_DEPTH = 32
PIPELINE_MAX_S = 0.002
FINISHED_TASKS_KEPT = 100_000
SIGINT, SIGKILL = 2, 9


class Scheduler(ObjectTable):
    """Global control state of one cluster (see module docstring)."""

    def __init__(self, session: str = "") -> None:
        self.session = session
        self.nodes: dict[bytes, Node] = {}
        self.workers: dict[bytes, Worker] = {}
        self.tasks: dict[bytes, Task] = {}
        self.objects: dict[bytes, Obj] = {}
        self.view_bases: dict[bytes, int] = {}
        self.functions: dict[bytes, bytes] = {}
        self.func_runtime: dict[bytes, float] = {}
        self.ready: dict[Shape, deque[Task]] = {}
        self.feasible: set[Shape] = set()
        self.finished: deque[bytes] = deque()
        #: tasks submitted by a running task (its worker's current task), for
        #: ``cancel(recursive=True)``; dropped when the parent ends
        self.children: dict[bytes, list[bytes]] = {}
        self.events = EventLog()
        self.out: dict[bytes, list[P.Msg]] = {}
        self.shutdown_requested = False
        #: extensions (actors) that place work of their own when resources free up
        self.schedule_hooks: list[Callable[[], None]] = []
        #: extensions (actors) told when a node is lost, ``hook(node)``
        self.node_lost_hooks: list[Callable[[Node], None]] = []
        self.lifetime_hooks: list[Callable[[bytes], None]] = []
        self.store: StorePolicy  # set below, once handlers exist
        #: extensions that hold node resources themselves (actors): each yields
        #: (node_id, demand) per holding; ``validate`` counts them
        self.holders: list[Callable[[], Any]] = []
        #: extensions' parts of an event snapshot (actors): name -> rows
        self.snapshot_parts: dict[str, Callable[[], Any]] = {}
        self._handlers: dict[int, Any] = {
            P.SUBMIT: self._on_submit,
            P.PUT: self._on_put,
            P.SUBSCRIBE: self._on_subscribe,
            P.CANCEL: self._on_cancel,
            P.FREE: self._on_free,
            P.BORROW: self._on_borrow,
            P.UNBORROW: self._on_unborrow,
            P.HELLO: self._on_hello,
            P.SHUTDOWN: self._on_shutdown,
            P.WORKER_READY: self._on_worker_ready,
            P.TASK_DONE: self._on_task_done,
            P.BLOCKED: self._on_blocked,
            P.UNBLOCKED: self._on_unblocked,
            P.RETURN_TASKS: self._on_return_tasks,
            P.WORKER_DIED: self._on_worker_died,
            P.STATE: self.on_state,
        }
        self.store = StorePolicy(self)
        self.feed = EventFeed(self)
        self.leases = LeaseTable(self)
        self.membership = Membership(self)
        self.node_lost = self.membership.node_lost  # a node stopped answering
        self.unknown = UnknownObjects(self)

    # --- entry points -------------------------------------------------------------
    def register(self, op: int, handler: Any) -> None:
        """Add the handler of an extension op (actors): ``handler(sender, msg)``."""
        if op in self._handlers:
            raise ValueError(f"head: op {op} already has a handler")
        self._handlers[op] = handler

    def handle(self, sender: bytes, msg: P.Msg) -> None:
        handler = self._handlers.get(msg[0])
        if handler is None:
            raise ValueError(f"head: unknown message op {msg[0]!r} from {sender!r}")
        handler(sender, msg)

    def handle_many(self, sender: bytes, batch: list[P.Msg]) -> None:
        """Handle a batch without placing tasks (the head calls ``schedule`` once per
        drained round of frames)."""
        handlers = self._handlers
        for msg in batch:
            handler = handlers.get(msg[0])
            if handler is None:
                raise ValueError(f"head: unknown message op {msg[0]!r} from {sender!r}")
            handler(sender, msg)

    def handle_batch(self, sender: bytes, batch: list[P.Msg]) -> None:
        self.handle_many(sender, batch)
        self.schedule()

    def take_outbox(self) -> dict[bytes, list[P.Msg]]:
        """The messages to send; called once per drained round, which is also when
        event subscribers get their deltas."""
        if self.feed.subs:
            self.feed.push()
        out, self.out = self.out, {}
        return out

    def _send(self, ident: bytes, msg: P.Msg) -> None:
        box = self.out.get(ident)
        if box is None:
            self.out[ident] = [msg]
        else:
            box.append(msg)

    # --- membership ---------------------------------------------------------------
    def _on_hello(self, sender: bytes, msg: P.Msg) -> None:
        self.events.add("driver_connected", sender, msg[2] if len(msg) > 2 else None)

    def _on_shutdown(self, sender: bytes, msg: P.Msg) -> None:
        self.shutdown_requested = True
        for node in self.nodes.values():
            self._send(node.ident, (P.NODE_EXIT,))

    def _on_worker_ready(self, sender: bytes, msg: P.Msg) -> None:
        _, node_id, pid, addr = msg
        node = self.nodes.get(node_id)
        if node is None or not node.alive:  # unknown, or lost while this worker started
            self._send(sender, (P.EXIT,))
            return
        w = Worker(sender, node, pid, addr)
        self.workers[sender] = w
        node.workers.add(sender)
        node.idle.append(w)
        if node.pending_spawns > 0:
            node.pending_spawns -= 1
        self.events.add("worker_started", sender, (pid, node_id))

    def _on_worker_died(self, sender: bytes, msg: P.Msg) -> None:
        _, wid, exitcode = msg
        w = self.workers.pop(wid, None)
        if w is None:
            return
        node = w.node
        node.workers.discard(wid)
        if w in node.idle:
            node.idle.remove(w)
        self._release(w)
        self.leases.worker_gone(w)  # its lease, and those its nested tasks held
        how = f"killed by signal {-exitcode}" if exitcode < 0 else f"exited with code {exitcode}"
        self.events.add("worker_died", wid, how)
        for i, task in enumerate(w.assigned):
            task.worker = None
            if task.state != "running":
                continue
            if i > 0:
                self._requeue(task, "requeued")
            elif task.cancelled:
                continue
            elif task.retries_left > 0:
                task.retries_left -= 1
                self._requeue(task, "retried")
            else:
                err = WorkerCrashedError(
                    f"the worker (pid {w.pid}) running task {task.name} {how}; "
                    f"no retries left (max_retries={task.spec[P.T_MAX_RETRIES]})"
                )
                self._fail(task, error_loc(err))
        w.assigned.clear()

    # --- tasks --------------------------------------------------------------------
    def _on_submit(self, sender: bytes, msg: P.Msg) -> None:
        self._admit(self.accept_task(sender, msg[1]))

    def accept_task(self, sender: bytes, spec: P.TaskSpec) -> Task:
        """Record a submitted task, its code and its return objects."""
        tid = spec[P.T_ID]
        if spec[P.T_FUNC_BLOB] is not None:
            self.functions[spec[P.T_FUNC_ID]] = spec[P.T_FUNC_BLOB]
        demand: Demand = spec[P.T_RESOURCES]
        task = Task(spec, sender, demand, shape_of(demand), spec[P.T_MAX_RETRIES])
        task.log = self.events
        task.state = "waiting"
        self.tasks[tid] = task
        parent = spec[P.T_PARENT] if len(spec) > P.T_PARENT else None
        if parent is None:  # not from a running task's worker: the sender's running task
            w = self.workers.get(sender)
            parent = w.assigned[0].spec[P.T_ID] if w is not None and w.assigned else None
        if parent is not None:  # submitted from inside a running task
            self.children.setdefault(parent, []).append(tid)
        for oid in spec[P.T_RETURNS]:
            self.objects[oid] = Obj(oid, sender, tid)
        task.event("submitted", (spec[P.T_NAME], spec[P.T_DEPS], spec[P.T_RETURNS], sender,
                                 spec[P.T_TAG] if len(spec) > P.T_TAG else None))
        return task

    def pin_inputs(self, task: Task) -> None:
        """Pin the inputs of a task whose owner sent it with them (a leased task)."""
        for oid in (*task.spec[P.T_NESTED], *task.spec[P.T_DEPS]):
            obj = self.objects.get(oid)
            if obj is not None:
                task.pin(obj)

    def _admit(self, task: Task, wait: bool = True) -> None:
        """Pin a task's inputs and queue it once they exist (submit, lineage rebuild)."""
        spec = task.spec
        task.state = "waiting"
        task.waiting = 0
        if wait and spec[P.T_DEPS] and self.unknown.any_unknown(spec[P.T_DEPS]):
            return self.unknown.park_task(task)  # may still be on its way: unknown_objects
        for oid in spec[P.T_NESTED]:  # refs inside the arguments live while the task does
            obj = self.objects.get(oid)
            if obj is not None:
                task.pin(obj)
        for oid in spec[P.T_DEPS]:
            obj = self.objects.get(oid) or lineage.revive(self, oid)
            if obj is None:
                err = ObjectLostError(
                    f"argument {oid.hex()} of task {task.name} no longer exists (it was freed "
                    f"and cannot be rebuilt)"
                )
                self._fail(task, error_loc(err))
                return
            task.pin(obj)
            self.store.touched(obj)
            if obj.loc is None:
                task.waiting += 1
                if obj.dependents is None:
                    obj.dependents = [task]
                else:
                    obj.dependents.append(task)
            elif obj.loc[0] == P.LOC_ERROR:
                self._fail(task, obj.loc)
                return
        self._check_feasible(task)
        if task.waiting == 0:
            self._make_ready(task)
        else:
            task.event("waiting")

    def _check_feasible(self, task: Task) -> None:
        if not self.nodes or not task.demand or task.shape in self.feasible:
            return
        best: Demand | None = None
        for node in self.nodes.values():
            if not node.alive:
                continue
            missing = node.res.missing(task.demand)
            if not missing:
                self.feasible.add(task.shape)
                return
            if best is None or len(missing) < len(best):
                best = missing
        text = (
            f"task {task.name} needs {task.demand} but no node in the cluster can "
            f"ever provide {best}; it stays pending until a node with those "
            f"resources joins (get with a timeout raises GetTimeoutError)"
        )
        task.infeasible = True
        self.events.add("task_infeasible", task.spec[P.T_ID], text)
        self._send(task.owner, (P.WARN, text))

    def _make_ready(self, task: Task) -> None:
        task.state = "ready"
        task.event("ready")
        q = self.ready.get(task.shape)
        if q is None:
            self.ready[task.shape] = q = deque()
        q.append(task)

    def _requeue(self, task: Task, why: str) -> None:
        objects = self.objects
        if any((o := objects.get(d)) is None or o.loc is None or o.loc[0] == P.LOC_ERROR
               for d in task.spec[P.T_DEPS]):
            # a leased task whose inputs the head has not seen yet (or failed): admit again
            task.event(why)
            pinned, task.pinned = task.pinned, []
            for oid in pinned:
                task.unpin(objects[oid])
            task.worker = None
            self._admit(task)
            return
        task.state = "ready"
        task.worker = None
        task.event(why)
        q = self.ready.get(task.shape)
        if q is None:
            self.ready[task.shape] = q = deque()
        q.appendleft(task)

    def _finish(self, task: Task, state: str) -> None:
        task.state = state
        task.event(state)
        pinned, task.pinned = task.pinned, []
        for oid in pinned:
            obj = self.objects.get(oid)
            if obj is not None:
                task.unpin(obj)
                self._maybe_collect(obj)
        if state != "finished" or task.spec[P.T_MAX_RETRIES] == 0:
            # keep the arguments of retriable tasks: their outputs can be rebuilt (lineage)
            task.spec = task.spec[: P.T_ARGS] + (None,) + task.spec[P.T_ARGS + 1 :]
        self.finished.append(task.spec[P.T_ID])
        self.children.pop(task.spec[P.T_ID], None)
        if len(self.finished) > FINISHED_TASKS_KEPT:
            self.tasks.pop(self.finished.popleft(), None)

    def _fail(self, task: Task, loc: P.Loc) -> None:
        if task.state in ("finished", "failed", "cancelled"):
            return
        self._finish(task, "cancelled" if task.cancelled else "failed")
        for oid in task.spec[P.T_RETURNS]:
            obj = self.objects.get(oid)
            if obj is not None:
                self._object_ready(obj, loc, notify_owner=True)

    def _on_task_done(self, sender: bytes, msg: P.Msg) -> None:
        _, tid, results, status, t0, t1, nested = msg
        w = self.workers.get(sender)
        task = self.tasks.get(tid)
        if w is not None:
            if w.assigned and w.assigned[0] is task:
                w.assigned.popleft()
            elif task is not None and task in w.assigned:
                w.assigned.remove(task)
            self.worker_free(w)
        if task is None or task.state != "running":
            for oid, loc in results:  # a cancelled or forgotten task: drop its output
                self._unlink(loc, oid)
            return
        fid = task.spec[P.T_FUNC_ID]
        prev = self.func_runtime.get(fid)
        dt = t1 - t0
        self.func_runtime[fid] = dt if prev is None else 0.8 * prev + 0.2 * dt
        task.started, task.ended = t0, t1
        if status == P.DONE_RETRY:
            task.retries_left -= 1
            self._requeue(task, "retried")
            return
        for oid, inner in nested:  # first: a result may hold the task's own inputs
            obj = self.objects.get(oid)
            if obj is not None:
                self._contain(obj, inner)
        self._finish(task, "finished" if status == P.DONE_OK else "failed")
        for oid, loc in results:
            obj = self.objects.get(oid)
            if obj is None:
                self._unlink(loc, oid)
            else:
                self._object_ready(obj, loc, notify_owner=False)

    def _on_cancel(self, sender: bytes, msg: P.Msg) -> None:
        _, oid, force, recursive = msg
        tid = P.task_of(oid)
        if tid is not None:
            self._cancel(tid, force, recursive)

    def _cancel(self, tid: bytes, force: bool, recursive: bool) -> None:
        task = self.tasks.get(tid)
        if task is None or task.state in ("finished", "failed", "cancelled"):
            if task is None:  # a leased task whose owner has not told the head yet?
                self.leases.note_cancel(tid, force, recursive)
            return
        if recursive:  # children first: a parent blocked in get must not see them fail
            for child in self.children.pop(tid, []):
                self._cancel(child, force, recursive)
        task.cancelled = True
        err = TaskCancelledError(f"task {task.name} was cancelled")
        w = self.workers.get(task.worker) if task.worker is not None else None
        if w is not None:
            if w.lease is not None:  # its owner must not send more there before it hears
                self.leases.revoke(w, tell_worker=True)
            if w.assigned and w.assigned[0] is task:
                node = w.node
                self._send(node.ident, (P.SIGNAL_WORKER, w.ident, SIGKILL if force else SIGINT))
            else:
                w.assigned.remove(task)
                self._send(w.ident, (P.CANCEL_QUEUED, task.spec[P.T_ID]))
        self._fail(task, error_loc(err))

    # --- blocking workers ---------------------------------------------------------
    def _on_blocked(self, sender: bytes, msg: P.Msg) -> None:
        w = self.workers.get(sender)
        if w is None:
            return
        w.blocked = True
        self._release(w)
        if w in w.node.idle:  # (a worker retiring after max_calls: blocked for good)
            w.node.idle.remove(w)
        if w.lease is not None:  # the worker stopped taking the lease's tasks itself
            self.leases.revoke(w, tell_worker=False)
        returned = set(msg[1])
        self.leases.note_returned(sender, msg[1])
        keep: deque[Task] = deque()
        for task in w.assigned:
            if task.spec[P.T_ID] in returned:
                self._requeue(task, "requeued")
            else:
                keep.append(task)
        w.assigned = keep
        if keep:
            keep[0].event("blocked")

    def _on_unblocked(self, sender: bytes, msg: P.Msg) -> None:
        w = self.workers.get(sender)
        if w is None or not w.blocked:
            return
        w.blocked = False
        if w.assigned:
            task = w.assigned[0]
            w.node.res.force_acquire(task.demand, w.gpu_ids)
            w.held, w.holding = task.demand, True
            if task.state == "running":  # not one cancelled while it waited
                task.event("running")
        else:
            w.node.idle.append(w)

    def _on_return_tasks(self, sender: bytes, msg: P.Msg) -> None:
        w = self.workers.get(sender)
        returned = set(msg[1])
        self.leases.note_returned(sender, msg[1])
        for tid in msg[1]:
            task = self.tasks.get(tid)
            if task is not None and task.state == "running":
                self._requeue(task, "requeued")
        if w is not None:
            w.assigned = deque(t for t in w.assigned if t.spec[P.T_ID] not in returned)
            self.worker_free(w)

    def worker_free(self, w: Worker) -> None:
        """An unleased worker with nothing to do gives its resources back and idles."""
        if not w.assigned and not w.blocked and w.lease is None:
            self._release(w)
            if w not in w.node.idle:
                w.node.idle.append(w)

    # --- placement ----------------------------------------------------------------
    def _release(self, w: Worker) -> None:
        if w.holding and w.held is not None:
            w.node.res.release(w.held, w.gpu_ids)
            w.holding = False
            w.gpu_ids = []

    def schedule(self) -> None:
        """Place as many ready tasks as resources and workers allow."""
        for hook in self.schedule_hooks:
            hook()
        if not self.ready:
            return
        for shape in list(self.ready):
            q = self.ready[shape]
            while q:
                task = q[0]
                if task.state != "ready":
                    q.popleft()
                    continue
                w = self._place(task)
                if w is None:
                    break
                q.popleft()
                self._dispatch(w, task)
            if not q:
                del self.ready[shape]
        if self.ready and self.leases.leases and self.has_placeable_work():
            self.leases.reclaim()

    def has_placeable_work(self) -> bool:
        """Some ready task could run on a cluster node (is not infeasible)."""
        return any(q and not q[0].infeasible for q in self.ready.values())

    def spawn_for(self, node: Node) -> None:
        """Ask ``node`` for one more worker, unless enough are on their way."""
        if node.pending_spawns < max(1, int(node.res.available.get("CPU", 0))):
            node.pending_spawns += 1
            self._send(node.ident, (P.SPAWN_WORKERS, 1))

    def claim_worker(self, nodes: Iterable[Node], demand: Demand) -> Worker | None:
        """An idle worker of the first live node in ``nodes`` whose free resources
        cover ``demand``, now holding them; a node that could but has no idle worker
        is asked for one. None if no node can take it now."""
        for node in nodes:
            if not node.alive or not node.res.can_acquire(demand):
                continue
            if node.idle:
                w = node.idle.pop()
                w.gpu_ids = node.res.acquire(demand)
                w.held, w.holding = demand, True
                return w
            self.spawn_for(node)
        return None

    def _place(self, task: Task) -> Worker | None:
        w = self.claim_worker(self.membership.node_order(task), task.demand)
        if w is not None:
            return w
        runtime = self.func_runtime.get(task.spec[P.T_FUNC_ID])
        if runtime is None or runtime > PIPELINE_MAX_S:
            return None
        best: Worker | None = None
        runtimes = self.func_runtime
        for node in self.nodes.values():
            for wid in node.workers:
                w = self.workers[wid]
                if (
                    w.holding
                    and w.lease is None
                    and not w.blocked
                    and len(w.assigned) < PIPELINE_DEPTH
                    and w.held == task.demand  # the same shape (dicts compare unordered)
                    and (best is None or len(w.assigned) < len(best.assigned))
                    # never behind a task that may run long (another function's)
                    and w.assigned
                    and runtimes.get(w.assigned[0].spec[P.T_FUNC_ID], 1.0) <= PIPELINE_MAX_S
                ):
                    best = w
        return best

    def _dispatch(self, w: Worker, task: Task) -> None:
        spec = task.spec
        fid = spec[P.T_FUNC_ID]
        blob = None
        if fid not in w.funcs:
            blob = self.functions.get(fid)
            w.funcs.add(fid)
        dep_locs = [(d, self.objects[d].loc) for d in spec[P.T_DEPS]]
        task.state = "running"
        task.worker = w.ident
        task.event("running", w.pid)
        w.assigned.append(task)
        self._send(
            w.ident,
            (
                P.EXECUTE,
                (
                    spec[P.T_ID], fid, blob, spec[P.T_NAME], spec[P.T_ARGS], dep_locs,
                    spec[P.T_RETURNS], spec[P.T_OWNER], w.gpu_ids, task.retries_left,
                    spec[P.T_RETRY_EXC], spec[P.T_OUTPUT], spec[P.T_RESOURCES],
                ),
            ),
        )

    # --- state queries ------------------------------------------------------------
    def query(self, kind: str, arg: Any, asker: bytes | None = None) -> Any:
        from jray._private.state_tables import describe

        return describe(self, kind, arg, asker)

    def on_state(self, sender: bytes, msg: P.Msg) -> None:
        try:
            payload: Any = ("ok", self.query(msg[2], msg[3], sender))
        except Exception as exc:  # a bad query must not take the head down
            payload = ("error", f"{type(exc).__name__}: {exc}")
        self._send(sender, (P.STATE_REPLY, msg[1], payload))

    def validate(self) -> None:
        """Check the invariants (``invariants``); AssertionError names what broke."""
        invariants.validate(self)

    # the narrow interface that extensions (leases, actors, store policy, lineage) use
    send, fail, requeue, release, admit, cancel = _send, _fail, _requeue, _release, _admit, _cancel
    check_feasible, worker_died = _check_feasible, _on_worker_died
    on_task_done, on_return_tasks = _on_task_done, _on_return_tasks
