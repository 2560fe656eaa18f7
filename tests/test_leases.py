"""The head's side of leases as a state machine: messages in, outbox out, no process.

``Head`` (from test_scheduler) runs ``Scheduler.validate()`` after every step, so
each test also checks that resources, pins and queues stay consistent.
"""

from __future__ import annotations

import pickle

from test_scheduler import DRIVER, NODE, NODE_IDENT, Head, _error_of, _executes, _ops

from jray._private import protocol as P
from jray.exceptions import TaskCancelledError, WorkerCrashedError

SIGINT = 2


def _lease(h: Head, demand: dict[str, float] | None = None) -> tuple[bytes, bytes]:
    """Ask for a lease as a driver; returns (lease id, worker ident)."""
    out = h.send(DRIVER, (P.LEASE_REQUEST, 1, demand or {"CPU": 1.0}, b""))
    (grant,) = [m for m in out[DRIVER] if m[0] == P.LEASE_GRANT]
    assert grant[1] == 1 and grant[2] is not None
    worker = next(w for w in h.workers if f"ipc://{w.hex()}" == grant[3])
    return grant[2], worker


def _spec(h: Head, *, deps: tuple[bytes, ...] = (), retries: int = 0) -> P.TaskSpec:
    tid = h.ids.task_id()
    return (tid, b"f" * 16, b"code", "f", pickle.dumps(((), {})), list(deps),
            [P.return_id(tid, 0)], {"CPU": 1.0}, retries, False, "ipc://owner", "ipc://out", [])


def _leased_done(h: Head, worker: bytes, tid: bytes, value: object = 1) -> dict[bytes, list[P.Msg]]:
    results = [(P.return_id(tid, 0), (P.LOC_INLINE, pickle.dumps(value)))]
    return h.send(worker, (P.LEASED_DONE, tid, results, P.DONE_OK, 1.0, 1.001, []))


def test_lease_holds_resources_and_its_tasks_are_recorded() -> None:
    h = Head({"CPU": 2.0})
    h.worker(), h.worker()
    lid, w = _lease(h)
    assert h.available()["CPU"] == 1.0  # the lease holds its shape's resources
    spec = _spec(h)
    tid = spec[P.T_ID]
    h.send(DRIVER, (P.SUBMIT_LEASED, spec, lid))
    assert h.state(tid) == "running" and h.sched.tasks[tid].worker == w
    _leased_done(h, w, tid, 7)
    assert h.state(tid) == "finished"
    states = [s for s, _, _ in h.sched.tasks[tid].history]
    assert states == ["submitted", "ready", "running", "finished"]
    assert h.available()["CPU"] == 1.0  # still leased: held until returned
    h.send(DRIVER, (P.LEASE_RETURN, lid))
    assert h.available()["CPU"] == 2.0


def test_worker_report_before_the_owners_record_is_held_until_it() -> None:
    h = Head({"CPU": 1.0})
    h.worker()
    lid, w = _lease(h)
    spec = _spec(h)
    tid = spec[P.T_ID]
    _leased_done(h, w, tid, 3)  # overtook SUBMIT_LEASED
    assert tid not in h.sched.tasks
    h.send(DRIVER, (P.SUBMIT_LEASED, spec, lid))
    assert h.state(tid) == "finished"
    assert h.sched.objects[P.return_id(tid, 0)].loc == (P.LOC_INLINE, pickle.dumps(3))
    assert not h.sched.leases.early


def test_refs_inside_an_early_report_outlive_their_makers_free() -> None:
    """A leased task puts a value and returns its ref; its worker sends the PUT, the
    report and (its own ref gone) the FREE in one batch, before the owner's record."""
    h = Head({"CPU": 1.0})
    h.worker()
    lid, w = _lease(h)
    spec = _spec(h)
    tid, ret = spec[P.T_ID], P.return_id(spec[P.T_ID], 0)
    inner = P.IdGen().put_id()
    results = [(ret, (P.LOC_INLINE, pickle.dumps("a list holding the ref")))]
    h.send(w, (P.PUT, inner, (P.LOC_INLINE, pickle.dumps(5)), []),
           (P.LEASED_DONE, tid, results, P.DONE_OK, 1.0, 1.001, [(ret, [inner])]),
           (P.FREE, [inner]))
    assert inner in h.sched.objects  # held for the report that waits
    h.send(DRIVER, (P.SUBMIT_LEASED, spec, lid))
    assert h.state(tid) == "finished" and h.sched.objects[inner].holders == 1  # by ret
    h.send(DRIVER, (P.FREE, [ret]))  # the owner drops the result: the ref inside goes too
    assert ret not in h.sched.objects and inner not in h.sched.objects


def test_no_lease_while_tasks_queue_and_none_beyond_the_resources() -> None:
    h = Head({"CPU": 1.0})
    h.worker()
    _lease(h)
    out = h.send(DRIVER, (P.LEASE_REQUEST, 2, {"CPU": 1.0}, b""))
    assert (P.LEASE_GRANT, 2, None, "", []) in out[DRIVER]  # no CPU left: refused
    assert h.available()["CPU"] == 0.0


def test_queued_work_takes_an_idle_lease_back() -> None:
    h = Head({"CPU": 1.0})
    h.worker()
    lid, w = _lease(h)
    tid, out = h.submit()  # through the head: no worker free
    assert h.state(tid) == "ready"
    assert (P.REVOKE_LEASE, lid) in out[w] and (P.LEASE_REVOKED, lid) in out[DRIVER]
    out = h.send(w, (P.LEASE_RELEASED, lid))  # the worker gave it up
    assert _executes(out) == {w: [tid]}
    h.send(DRIVER, (P.LEASE_RETURN, lid))  # the owner's acknowledgement
    assert not h.sched.leases.leases


def test_revoked_lease_tasks_the_worker_returns_run_through_the_head() -> None:
    h = Head({"CPU": 1.0})
    h.worker()
    lid, w = _lease(h)
    spec = _spec(h)
    tid = spec[P.T_ID]
    other, _ = h.submit()  # queued work: the head revokes the idle lease
    h.send(w, (P.RETURN_TASKS, [tid]), (P.LEASE_RELEASED, lid))  # came after the revocation
    assert h.state(other) == "running"
    h.send(DRIVER, (P.SUBMIT_LEASED, spec, lid))
    assert h.state(tid) == "ready"  # queued behind `other`, on the head's own terms
    assert [s for s, _, _ in h.sched.tasks[tid].history] == [
        "submitted", "ready", "running", "requeued"]
    out = h.done(w, other)
    assert _executes(out) == {w: [tid]}


def test_worker_death_revokes_the_lease_and_retries_its_task() -> None:
    h = Head({"CPU": 2.0})
    h.worker(), h.worker()
    lid, w = _lease(h)
    spec = _spec(h, retries=1)
    tid = spec[P.T_ID]
    h.send(DRIVER, (P.SUBMIT_LEASED, spec, lid))
    out = h.died(w)
    assert (P.LEASE_REVOKED, lid) in out[DRIVER]
    assert h.state(tid) == "running"  # retried on the other worker
    assert h.sched.tasks[tid].worker != w
    assert [s for s, _, _ in h.sched.tasks[tid].history][-2:] == ["retried", "running"]
    h.send(DRIVER, (P.LEASE_RETURN, lid))
    assert h.available()["CPU"] == 1.0  # only the retry holds a CPU


def test_task_on_a_lease_whose_worker_already_died_fails_without_retries() -> None:
    h = Head({"CPU": 1.0})
    h.worker()
    lid, w = _lease(h)
    h.died(w)
    spec = _spec(h, retries=0)
    tid = spec[P.T_ID]
    out = h.send(DRIVER, (P.SUBMIT_LEASED, spec, lid))
    assert h.state(tid) == "failed"
    (ready,) = [m for m in out[DRIVER] if m[0] == P.OBJECT_READY]
    err = _error_of(ready[2])
    assert isinstance(err, WorkerCrashedError) and "leased worker" in str(err)


def test_blocked_leased_worker_lends_its_cpu_and_loses_the_lease() -> None:
    h = Head({"CPU": 1.0})
    h.worker()
    lid, w = _lease(h)
    spec, queued = _spec(h), _spec(h)
    h.send(DRIVER, (P.SUBMIT_LEASED, spec, lid), (P.SUBMIT_LEASED, queued, lid))
    out = h.send(w, (P.BLOCKED, [queued[P.T_ID]]))  # the running one waits in get
    assert (P.LEASE_REVOKED, lid) in out[DRIVER]
    assert h.available()["CPU"] == 1.0  # lent while it waits
    assert h.state(queued[P.T_ID]) == "ready"
    assert _ops(out, NODE_IDENT) == [P.SPAWN_WORKERS]  # nested work gets a worker
    h.send(w, (P.UNBLOCKED,))
    assert h.available()["CPU"] == 0.0
    _leased_done(h, w, spec[P.T_ID])
    assert h.state(spec[P.T_ID]) == "finished"


def test_cancel_of_a_leased_task_interrupts_it_and_revokes_the_lease() -> None:
    h = Head({"CPU": 1.0})
    h.worker()
    lid, w = _lease(h)
    spec = _spec(h)
    tid = spec[P.T_ID]
    h.send(DRIVER, (P.SUBMIT_LEASED, spec, lid))
    out = h.send(DRIVER, (P.CANCEL, P.return_id(tid, 0), False, True))
    assert (P.SIGNAL_WORKER, w, SIGINT) in out[NODE_IDENT]
    # the owner hears of the revocation before the error, on the same socket
    ops = [m[0] for m in out[DRIVER]]
    assert ops.index(P.LEASE_REVOKED) < ops.index(P.OBJECT_READY)
    assert isinstance(_error_of(out[DRIVER][ops.index(P.OBJECT_READY)][2]), TaskCancelledError)
    assert (P.REVOKE_LEASE, lid) in out[w]
    assert h.state(tid) == "cancelled"


def test_resource_queries_count_an_idle_lease_as_free() -> None:
    h = Head({"CPU": 2.0})
    h.worker(), h.worker()
    lid, w = _lease(h)
    assert h.available()["CPU"] == 1.0  # held by the lease...
    assert h.sched.query("available_resources", None)["CPU"] == 2.0  # ...but nothing runs
    spec = _spec(h)
    h.send(DRIVER, (P.SUBMIT_LEASED, spec, lid))
    assert h.sched.query("available_resources", None)["CPU"] == 1.0
    (node,) = h.sched.query("nodes", None)
    assert node["Available"]["CPU"] == 1.0
    _leased_done(h, w, spec[P.T_ID])
    assert h.sched.query("available_resources", None)["CPU"] == 2.0


def test_no_lease_on_a_lost_node() -> None:
    h = Head({"CPU": 2.0})
    h.worker()
    h.sched.node_lost(NODE, "no heartbeat")
    h.sched.take_outbox()
    out = h.send(DRIVER, (P.LEASE_REQUEST, 1, {"CPU": 1.0}, b""))
    (grant,) = [m for m in out[DRIVER] if m[0] == P.LEASE_GRANT]
    assert grant[2] is None  # nothing to lease: the only node is gone
    assert P.SPAWN_WORKERS not in _ops(out, NODE_IDENT)  # and it is not asked to spawn one


def test_a_worker_owner_that_dies_loses_its_leases() -> None:
    h = Head({"CPU": 3.0})
    h.worker(), h.worker(), h.worker()
    parent, out = h.submit()  # a task whose worker submits nested tasks on a lease
    ((parent_w, ran),) = _executes(out).items()
    assert ran == [parent]
    out = h.send(parent_w, (P.LEASE_REQUEST, 1, {"CPU": 1.0}, b""))
    (grant,) = [m for m in out[parent_w] if m[0] == P.LEASE_GRANT]
    lid = grant[2]
    assert lid is not None and h.available()["CPU"] == 1.0
    leased = h.sched.leases.leases[lid].worker
    spec = _spec(h)
    h.send(parent_w, (P.SUBMIT_LEASED, spec, lid))
    out = h.died(parent_w)  # the owner dies: nobody will return the lease
    assert (P.REVOKE_LEASE, lid) in out[leased]
    _leased_done(h, leased, spec[P.T_ID])  # the nested task it was running ends
    h.send(leased, (P.LEASE_RELEASED, lid))  # the worker gave the lease up
    assert h.sched.workers[leased].lease is None
    assert lid not in h.sched.leases.leases
    assert h.available()["CPU"] == 3.0  # nothing holds resources any more


def test_a_cancel_that_overtakes_the_owners_record_applies_when_it_arrives() -> None:
    h = Head({"CPU": 2.0})
    h.worker(), h.worker()
    lid, w = _lease(h)
    spec = _spec(h)
    tid = spec[P.T_ID]
    # another process got the ref (in a result) and cancels before the head knows the task
    h.send(b"d-other-driver", (P.CANCEL, P.return_id(tid, 0), False, True))
    assert tid not in h.sched.tasks
    out = h.send(DRIVER, (P.SUBMIT_LEASED, spec, lid))
    assert (P.SIGNAL_WORKER, w, SIGINT) in out[NODE_IDENT]
    assert h.state(tid) == "cancelled"
    (ready,) = [m for m in out[DRIVER] if m[0] == P.OBJECT_READY]
    assert isinstance(_error_of(ready[2]), TaskCancelledError)
    assert not h.sched.leases.early_cancels
