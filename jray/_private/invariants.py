"""``Scheduler.validate()``: the head's invariants, checked by the state-machine tests.

Each check raises ``AssertionError`` naming the record that breaks it:

- resources: on every node, available = total - what is held (by workers that
  hold their task's or lease's resources, and by extensions such as actors);
- pins: every object's ``pins`` equals the number of unfinished tasks that pin it;
- queues: a ready queue holds only ready tasks (or ones that ended while queued,
  which ``schedule`` skips), and every ready task is in its shape's queue; a
  waiting task waits for exactly its inputs that do not exist yet;
- workers: a task assigned to a worker runs there; an idle worker holds nothing,
  serves no lease and has nothing assigned; a leased worker is not idle.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from jray._private import protocol as P

if TYPE_CHECKING:
    from jray._private.scheduler import Scheduler

_EPS = 1e-6
_ENDED = ("finished", "failed", "cancelled")


def validate(sched: Scheduler) -> None:
    _resources(sched)
    _pins(sched)
    _queues(sched)
    _workers(sched)


def _resources(sched: Scheduler) -> None:
    held: dict[bytes, dict[str, float]] = {nid: {} for nid in sched.nodes}
    for w in sched.workers.values():
        if w.holding and w.held is not None:
            box = held[w.node.node_id]
            for k, v in w.held.items():
                box[k] = box.get(k, 0.0) + v
    for holders in sched.holders:
        for node_id, demand in holders():
            box = held[node_id]
            for k, v in demand.items():
                box[k] = box.get(k, 0.0) + v
    for nid, node in sched.nodes.items():
        res = node.res
        for k in set(res.total) | set(res.available) | set(held[nid]):
            want = res.total.get(k, 0.0) - held[nid].get(k, 0.0)
            assert abs(res.available.get(k, 0.0) - want) < _EPS, (
                f"node {nid.hex()}: {k} available {res.available.get(k, 0.0)} != total "
                f"{res.total.get(k, 0.0)} - held {held[nid].get(k, 0.0)}")


def _pins(sched: Scheduler) -> None:
    count: dict[bytes, int] = {}
    for task in sched.tasks.values():
        if task.state in _ENDED:
            assert not task.pinned, f"task {task.name} ended {task.state} but pins {task.pinned}"
        for oid in task.pinned:
            count[oid] = count.get(oid, 0) + 1
    for oid, obj in sched.objects.items():
        assert obj.pins == count.get(oid, 0), (
            f"object {oid.hex()}: pins {obj.pins} but {count.get(oid, 0)} tasks pin it")


def _queues(sched: Scheduler) -> None:
    queued: set[bytes] = set()
    for shape, q in sched.ready.items():
        for task in q:
            assert task.state == "ready" or task.state in _ENDED, (
                f"task {task.name} is {task.state} but queued as ready")
            assert task.shape == shape, f"task {task.name} queued under another shape"
            queued.add(task.spec[P.T_ID])
    parked = {task.spec[P.T_ID] for _, task in sched.unknown.tasks}
    for _, task in sched.unknown.tasks:  # waiting for an argument's record to arrive
        assert task.state == "waiting" or task.state in _ENDED, (
            f"task {task.name} is {task.state} but parked for an unknown argument")
    for tid, task in sched.tasks.items():
        if task.state == "ready":
            assert tid in queued, f"task {task.name} is ready but in no queue"
        elif task.state == "waiting" and tid not in parked:
            missing = sum(1 for d in task.spec[P.T_DEPS]
                          if (o := sched.objects.get(d)) is not None and o.loc is None)
            assert task.waiting == missing, (
                f"task {task.name} waits for {task.waiting} inputs, {missing} do not exist")


def _workers(sched: Scheduler) -> None:
    for node in sched.nodes.values():
        for w in node.idle:
            assert not w.holding and not w.blocked and w.lease is None and not w.assigned, (
                f"worker pid {w.pid} is idle but holds {w.held if w.holding else None}, "
                f"blocked={w.blocked}, lease={w.lease!r}, {len(w.assigned)} assigned")
        assert len({id(w) for w in node.idle}) == len(node.idle), "a worker is idle twice"
    for w in sched.workers.values():
        for task in w.assigned:
            if task.state == "running":
                assert task.worker == w.ident, f"task {task.name} assigned to another worker"
        if w.lease is not None:
            assert w.holding or w.blocked, f"leased worker pid {w.pid} holds nothing"
            assert w.lease in sched.leases.leases, f"worker pid {w.pid} serves an unknown lease"
