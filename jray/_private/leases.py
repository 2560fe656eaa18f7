"""The head's side of leased workers (direct task submission), without I/O.

A lease gives one owner a worker holding one resource shape's resources.
The owner sends tasks straight to the worker and tells the head, batched,
with ``SUBMIT_LEASED``; the head records each task as running on that worker,
so the event stream, the state API, retries, cancellation and lineage see it
as any other task. What the head still decides:

- *which worker*: a ``Granter`` picks an idle worker and takes the shape's
  resources from its node (``HeadGranter`` here, from the head's own view of
  every node; a node daemon can grant from its local resources behind the
  same interface);
- *when a lease ends*: the owner returns it when idle (``LEASE_RETURN``); the
  head revokes it when its worker dies (``LEASE_REVOKED`` to the owner; the
  tasks are retried by the head), when the worker blocks in ``get`` (it lends
  its resources as any blocked worker does, and returns its queued tasks), and
  when queued tasks need the worker (``REVOKE_LEASE`` to the worker, which
  returns the tasks it had not started and answers ``LEASE_RELEASED``), and
  when its owner dies while it lives on (an owner that is a worker, for the
  nested tasks of its task; drivers are the only owners so far): the worker's
  ``LEASE_RELEASED`` then ends the lease, as no owner will return it.

A worker's reports (``LEASED_DONE``, returned tasks) can overtake the owner's
``SUBMIT_LEASED`` (they travel on other sockets): they wait in ``early`` until
the task is known.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from jray._private import protocol as P
from jray._private.resources import Demand, Shape, shape_of
from jray._private.serialization import error_loc
from jray._private.state_tables import Node, Task, Worker
from jray.exceptions import WorkerCrashedError

if TYPE_CHECKING:
    from jray._private.scheduler import Scheduler

#: reports kept for tasks the head has not heard of yet, at most
EARLY_KEPT = 100_000


class Granter(Protocol):
    """Where leases come from: a worker that now holds ``demand`` for a lease, or None.
    ``near`` is the owner's node (None if it has none the head knows)."""

    def grant(self, demand: Demand, shape: Shape, near: Node | None) -> Worker | None: ...


class HeadGranter:
    """Grants from the head's view of every node: an idle worker on a node with room,
    the owner's own node first (its tasks then run where it is, as a node scheduler
    would place them; the others take what it has no room for)."""

    def __init__(self, sched: Scheduler) -> None:
        self.sched = sched

    def grant(self, demand: Demand, shape: Shape, near: Node | None) -> Worker | None:
        sched = self.sched
        if sched.has_placeable_work():  # queued tasks come first
            return None
        nodes = sched.nodes.values()
        if near is None or len(sched.nodes) < 2:
            return sched.claim_worker(nodes, demand)
        if near.alive and not near.idle and near.res.can_acquire(demand):
            sched.spawn_for(near)  # room but no idle worker: one starts there, and the
            return None  # owner asks again soon (its task goes through the head meanwhile)
        return sched.claim_worker([near, *(n for n in nodes if n is not near)], demand)


class HeadLease:
    __slots__ = ("lease_id", "owner", "worker", "shape", "revoking", "orphan")

    def __init__(self, lease_id: bytes, owner: bytes, worker: bytes, shape: Shape) -> None:
        self.lease_id = lease_id
        self.owner = owner
        self.worker = worker
        self.shape = shape
        self.revoking = False
        self.orphan = False  # its owner died: the worker's LEASE_RELEASED ends it


class LeaseTable:
    """Leases granted by the head (see module docstring)."""

    def __init__(self, sched: Scheduler, granter: Granter | None = None) -> None:
        self.sched = sched
        self.granter: Granter = granter if granter is not None else HeadGranter(sched)
        #: every lease the owner has not returned or acknowledged yet
        self.leases: dict[bytes, HeadLease] = {}
        #: worker reports about tasks whose SUBMIT_LEASED has not arrived
        self.early: dict[bytes, list[tuple[bytes, P.Msg]]] = {}
        #: cancels of tasks the head does not know (yet): a leased task's ref can reach
        #: another process (in a result) before its owner's SUBMIT_LEASED reaches the head
        self.early_cancels: dict[bytes, tuple[bool, bool]] = {}
        self.ids = P.IdGen()
        sched.register(P.LEASE_REQUEST, self._on_request)
        sched.register(P.LEASE_RETURN, self._on_return)
        sched.register(P.SUBMIT_LEASED, self._on_submit_leased)
        sched.register(P.LEASE_RELEASED, self._on_released)
        sched.register(P.LEASED_DONE, self._on_leased_done)

    # --- owner --------------------------------------------------------------------
    def _on_request(self, sender: bytes, msg: P.Msg) -> None:
        _, req, demand, node_id = msg
        w = self.granter.grant(demand, shape_of(demand), self.sched.nodes.get(node_id))
        if w is None:
            self.sched.send(sender, (P.LEASE_GRANT, req, None, "", []))
            return
        lid = self.ids.task_id()
        w.lease = lid
        self.leases[lid] = HeadLease(lid, sender, w.ident, shape_of(demand))
        self.sched.send(sender, (P.LEASE_GRANT, req, lid, w.addr, list(w.gpu_ids)))

    def _on_return(self, sender: bytes, msg: P.Msg) -> None:
        lease = self.leases.pop(msg[1], None)
        if lease is None:
            return
        w = self.sched.workers.get(lease.worker)
        if w is not None and w.lease == lease.lease_id:
            w.lease = None
            if not lease.revoking:
                # the owner returns a lease once it has every result of it: nothing of
                # it runs any more, though the worker's reports may still be on their way
                # (the worker idles when they arrive; if it dies first, they are rerun)
                self.sched.release(w)
            self.sched.worker_free(w)

    def _on_submit_leased(self, sender: bytes, msg: P.Msg) -> None:
        _, spec, lid = msg
        sched = self.sched
        task = sched.accept_task(sender, spec)
        sched.pin_inputs(task)
        task.state = "ready"
        task.event("ready")
        lease = self.leases.get(lid)
        w = sched.workers.get(lease.worker) if lease is not None else None
        early = self.early.pop(task.spec[P.T_ID], None)
        if w is None and early is None:  # its worker died before the head heard of it
            self._worker_lost(task)
            return
        task.state = "running"
        if w is not None:
            task.worker = w.ident
            task.event("running", w.pid)
            w.assigned.append(task)
            if w in w.node.idle:  # it went back to the head (blocked) while running this
                w.node.idle.remove(w)
                w.node.res.force_acquire(task.demand, [])
                w.held, w.holding = task.demand, True
        for who, report in early or ():  # what its worker said before the owner did
            if report[0] == P.LEASED_DONE:
                sched.on_task_done(who, report)  # its results now hold the refs inside
                self._hold_inner(report, -1)
            else:
                sched.on_return_tasks(who, report)
        asked = self.early_cancels.pop(task.spec[P.T_ID], None)
        if asked is not None:  # cancelled before the head heard of it
            sched.cancel(task.spec[P.T_ID], *asked)

    def _worker_lost(self, task: Task) -> None:
        if task.retries_left > 0:
            task.retries_left -= 1
            self.sched.requeue(task, "retried")
        else:
            err = WorkerCrashedError(
                f"the leased worker of task {task.name} died before it reported; no retries "
                f"left (max_retries={task.spec[P.T_MAX_RETRIES]})")
            self.sched.fail(task, error_loc(err))

    # --- worker -------------------------------------------------------------------
    def _on_leased_done(self, sender: bytes, msg: P.Msg) -> None:
        if msg[1] in self.sched.tasks:
            self.sched.on_task_done(sender, msg)
        else:  # the refs inside its results live until it is replayed: their maker may
            self._hold_inner(msg, 1)  # free them in this very batch, and the owner borrow later
            self._stash(msg[1], sender, msg)

    def _hold_inner(self, report: P.Msg, n: int) -> None:
        objects = self.sched.objects
        for _, inner in report[6]:
            for oid in inner:
                obj = objects.get(oid)
                if obj is not None:
                    obj.holders += n
                    if n < 0:
                        self.sched.maybe_collect(obj)

    def note_returned(self, sender: bytes, tids: list[bytes]) -> None:
        """Tasks a worker gave back (blocked, or its lease was revoked); those the head
        does not know yet wait for their SUBMIT_LEASED."""
        tasks = self.sched.tasks
        for tid in tids:
            if tid not in tasks:
                self._stash(tid, sender, (P.RETURN_TASKS, [tid]))

    def note_cancel(self, tid: bytes, force: bool, recursive: bool) -> None:
        """A cancel of a task the head does not know: applied if it arrives leased."""
        if len(self.early_cancels) >= EARLY_KEPT:
            del self.early_cancels[next(iter(self.early_cancels))]
        self.early_cancels[tid] = (force, recursive)

    def _stash(self, tid: bytes, sender: bytes, msg: P.Msg) -> None:
        if len(self.early) >= EARLY_KEPT:
            for _, dropped in self.early.pop(next(iter(self.early))):
                if dropped[0] == P.LEASED_DONE:
                    self._hold_inner(dropped, -1)
        self.early.setdefault(tid, []).append((sender, msg))

    def _on_released(self, sender: bytes, msg: P.Msg) -> None:
        lease = self.leases.get(msg[1])
        if lease is not None and lease.orphan:
            del self.leases[msg[1]]
        w = self.sched.workers.get(sender)
        if w is not None and w.lease == msg[1]:
            w.lease = None
            self.sched.worker_free(w)

    # --- revocation ---------------------------------------------------------------
    def revoke(self, w: Worker, tell_worker: bool) -> None:
        """Take ``w``'s lease back: tell its owner; if the worker lives on, unblocked,
        it returns the tasks it has not started and answers LEASE_RELEASED."""
        lease = self.leases.get(w.lease) if w.lease is not None else None
        if lease is None:
            w.lease = None
            return
        if not lease.revoking:
            lease.revoking = True
            self.sched.send(lease.owner, (P.LEASE_REVOKED, lease.lease_id))
        if tell_worker:
            self.sched.send(w.ident, (P.REVOKE_LEASE, lease.lease_id))
        else:
            w.lease = None

    def worker_gone(self, w: Worker) -> None:
        """``w`` died: revoke its lease and take back the leases it owned."""
        if w.lease is not None:
            self.revoke(w, tell_worker=False)
        self.owner_lost(w.ident)

    def owner_lost(self, owner: bytes) -> None:
        """The owner of leases died (a worker owner of nested tasks): take each
        back from its worker, which answers LEASE_RELEASED; no owner will acknowledge."""
        for lid, lease in list(self.leases.items()):
            if lease.owner != owner:
                continue
            w = self.sched.workers.get(lease.worker)
            if w is None or w.lease != lid:
                del self.leases[lid]
                continue
            lease.orphan = lease.revoking = True
            self.sched.send(w.ident, (P.REVOKE_LEASE, lid))

    def reclaim(self) -> None:
        """Queued tasks wait while a leased worker idles: take the lease back."""
        sched = self.sched
        for lease in self.leases.values():
            if lease.revoking:
                continue
            w = sched.workers.get(lease.worker)
            if w is not None and not w.assigned and not w.blocked and w.lease == lease.lease_id:
                self.revoke(w, tell_worker=True)
