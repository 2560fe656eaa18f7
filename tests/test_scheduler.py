"""The head's scheduler and resource accounting as state machines: no process, no socket.

Each test feeds ``Scheduler.handle_batch`` the messages a node daemon, workers
and a driver would send, and asserts on the messages it puts in its outbox.
"""

from __future__ import annotations

import pickle
from typing import Any

import pytest

from jray._private import protocol as P
from jray._private import serialization as S
from jray._private.resources import NodeResources, shape_of, validate_demand
from jray._private.scheduler import SIGINT, SIGKILL, Scheduler
from jray.exceptions import TaskCancelledError, WorkerCrashedError

NODE = b"node0001"
NODE_IDENT = b"n" + NODE
DRIVER = b"driver-1"
FID = b"f" * 16

Out = dict[bytes, list[P.Msg]]


class Head:
    """A scheduler plus helpers that play the node daemon, the workers and a driver."""

    def __init__(self, resources: dict[str, float] | None = None) -> None:
        self.sched = Scheduler("test")
        self.ids = P.IdGen()
        self.pids = iter(range(1000, 2000))
        self.workers: list[bytes] = []
        self.last: Out = {}
        res = {"CPU": 2.0} if resources is None else resources
        self.register = self.send(NODE_IDENT, (P.NODE_REGISTER, NODE, dict(res), "host", 1))

    def send(self, sender: bytes, *msgs: P.Msg) -> Out:
        self.sched.handle_batch(sender, list(msgs))
        self.sched.validate()  # the invariants hold after every step
        return self.sched.take_outbox()

    def worker(self) -> bytes:
        ident = b"w" + bytes([len(self.workers)]) * 7
        self.workers.append(ident)
        #: what the scheduler sent when this worker became ready (it may get work at once)
        self.last = self.send(ident, (P.WORKER_READY, NODE, next(self.pids), f"ipc://{ident.hex()}"))
        return ident

    def submit(self, *, deps: tuple[bytes, ...] = (), demand: dict[str, float] | None = None,
               retries: int = 0, name: str = "f", num_returns: int = 1,
               fid: bytes = FID, sender: bytes = DRIVER) -> tuple[bytes, Out]:
        tid = self.ids.task_id()
        returns = [P.return_id(tid, i) for i in range(num_returns)]
        spec = (tid, fid, b"code", name, pickle.dumps(((), {})), list(deps), returns,
                {"CPU": 1.0} if demand is None else demand, retries, False, "ipc://owner",
                "ipc://out", [])
        return tid, self.send(sender, (P.SUBMIT, spec))

    def done(self, worker: bytes, tid: bytes, value: Any = 1,
             status: int = P.DONE_OK, seconds: float = 1.0) -> Out:
        results = [(P.return_id(tid, 0), (P.LOC_INLINE, pickle.dumps(value)))]
        return self.send(worker, (P.TASK_DONE, tid, results, status, 1.0, 1.0 + seconds, []))

    def died(self, worker: bytes, exitcode: int = -9) -> Out:
        return self.send(NODE_IDENT, (P.WORKER_DIED, worker, exitcode))

    def state(self, tid: bytes) -> str:
        return self.sched.tasks[tid].state

    def available(self) -> dict[str, float]:
        return dict(self.sched.nodes[NODE].res.available)


def _executes(out: Out) -> dict[bytes, list[bytes]]:
    """Task ids sent to each worker in EXECUTE messages."""
    return {ident: [m[1][P.E_ID] for m in msgs if m[0] == P.EXECUTE]
            for ident, msgs in out.items() if any(m[0] == P.EXECUTE for m in msgs)}


def _ops(out: Out, ident: bytes) -> list[int]:
    return [m[0] for m in out.get(ident, [])]


def _error_of(loc: P.Loc) -> BaseException:
    assert loc[0] == P.LOC_ERROR
    with pytest.raises(BaseException) as info:
        S.decode(loc)
    return info.value


def test_task_waits_for_its_dependency_then_is_placed() -> None:
    h = Head()
    w = h.worker()
    parent, out = h.submit()
    assert _executes(out) == {w: [parent]}
    child, out = h.submit(deps=(P.return_id(parent, 0),))
    assert h.state(child) == "waiting"
    assert not _executes(out)  # the worker is busy and the input does not exist yet
    out = h.done(w, parent, 41)
    assert _executes(out) == {w: [child]}
    # the EXECUTE carries the dependency's location
    (execute,) = [m for m in out[w] if m[0] == P.EXECUTE]
    assert execute[1][P.E_DEP_LOCS] == [(P.return_id(parent, 0),
                                         (P.LOC_INLINE, pickle.dumps(41)))]
    h.done(w, child)
    assert h.state(child) == "finished"
    states = [s for s, _, _ in h.sched.tasks[child].history]
    assert states == ["submitted", "waiting", "ready", "running", "finished"]


def test_code_travels_once_per_worker() -> None:
    h = Head()
    w = h.worker()
    t1, out = h.submit()
    assert out[w][0][1][P.E_FUNC_BLOB] == b"code"
    h.done(w, t1)
    _, out = h.submit()
    assert out[w][0][1][P.E_FUNC_BLOB] is None


def test_resource_accounting_never_exceeds_declared() -> None:
    h = Head({"CPU": 2.0})
    ws = [h.worker() for _ in range(4)]
    tids = [h.submit()[0] for _ in range(5)]
    running = [t for t in tids if h.state(t) == "running"]
    assert len(running) == 2
    assert h.available()["CPU"] == 0.0
    # Finish tasks one by one: at most 2 ever run, and availability stays in [0, 2].
    finished = 0
    while finished < 5:
        busy = {h.sched.tasks[t].worker for t in tids if h.state(t) == "running"}
        assert len(busy) <= 2
        assert 0.0 <= h.available()["CPU"] <= 2.0
        wid = next(iter(busy))
        assert wid in ws
        tid = next(t for t in tids if h.state(t) == "running" and h.sched.tasks[t].worker == wid)
        h.done(wid, tid)
        finished += 1
    assert all(h.state(t) == "finished" for t in tids)
    assert h.available()["CPU"] == 2.0


def test_two_cpu_task_runs_alone() -> None:
    h = Head({"CPU": 2.0})
    w1, w2 = h.worker(), h.worker()
    big, out = h.submit(demand={"CPU": 2.0})
    small, out2 = h.submit()
    assert h.state(big) == "running"
    assert h.state(small) == "ready"
    assert not _executes(out2)
    busy = h.sched.tasks[big].worker
    assert busy is not None
    out = h.done(busy, big)
    assert h.state(small) == "running"
    assert list(_executes(out).values()) == [[small]]
    assert {w1, w2} >= set(_executes(out))


def test_spawns_workers_when_tasks_fit_but_none_is_idle() -> None:
    h = Head({"CPU": 2.0})
    _, out = h.submit()
    assert _ops(out, NODE_IDENT) == [P.SPAWN_WORKERS]
    w = h.worker()  # the new worker gets the waiting task at once
    assert _executes(h.last) == {w: [next(iter(h.sched.tasks))]}


def test_short_tasks_pipeline_only_behind_short_tasks() -> None:
    h = Head({"CPU": 2.0})
    w1, w2 = h.worker(), h.worker()
    short_fid, long_fid = b"s" * 16, b"l" * 16
    t, _ = h.submit(fid=short_fid)
    runner = h.sched.tasks[t].worker
    assert runner is not None
    h.done(runner, t, seconds=0.0001)  # the head now knows `short` is short
    long_task, _ = h.submit(fid=long_fid)  # its run time is unknown: maybe long
    busy_short, _ = h.submit(fid=short_fid)
    long_worker = h.sched.tasks[long_task].worker
    short_worker = h.sched.tasks[busy_short].worker
    assert {long_worker, short_worker} == {w1, w2}
    sent: dict[bytes, list[bytes]] = {}
    for _ in range(10):  # no CPU free: they may queue, but only behind the short task
        _, out = h.submit(fid=short_fid)
        for ident, tids in _executes(out).items():
            sent.setdefault(ident, []).extend(tids)
    assert long_worker not in sent
    assert short_worker is not None and len(sent[short_worker]) == 10
    assert h.available()["CPU"] == 0.0  # pipelining never takes more than declared


def test_gpu_ids_are_distinct_for_concurrent_tasks() -> None:
    h = Head({"CPU": 4.0, "GPU": 2.0})
    for _ in range(3):
        h.worker()
    t1, o1 = h.submit(demand={"CPU": 1.0, "GPU": 1.0})
    t2, o2 = h.submit(demand={"CPU": 1.0, "GPU": 1.0})
    t3, o3 = h.submit(demand={"CPU": 1.0, "GPU": 1.0})
    gpus = [m[1][P.E_GPU_IDS] for o in (o1, o2) for ms in o.values() for m in ms
            if m[0] == P.EXECUTE]
    assert sorted(g for ids in gpus for g in ids) == [0, 1]
    assert h.state(t3) == "ready"  # no third GPU
    w = h.sched.tasks[t1].worker
    assert w is not None
    out = h.done(w, t1)
    (execute,) = [m for ms in out.values() for m in ms if m[0] == P.EXECUTE]
    assert execute[1][P.E_ID] == t3
    assert execute[1][P.E_GPU_IDS] == gpus[0]


def test_retry_on_worker_death_then_worker_crashed_error() -> None:
    h = Head()
    w1 = h.worker()
    tid, out = h.submit(retries=1)
    assert _executes(out) == {w1: [tid]}
    out = h.died(w1)
    assert h.state(tid) == "ready"
    assert h.sched.tasks[tid].retries_left == 0
    assert _ops(out, NODE_IDENT) == [P.SPAWN_WORKERS]  # no idle worker left: ask for one
    assert h.available()["CPU"] == 2.0  # the dead worker's CPU came back
    w2 = h.worker()
    assert _executes(h.last) == {w2: [tid]}
    out = h.died(w2, exitcode=-11)
    assert h.state(tid) == "failed"
    ready = [m for m in out.get(DRIVER, []) if m[0] == P.OBJECT_READY]
    assert [m[1] for m in ready] == [P.return_id(tid, 0)]
    err = _error_of(ready[0][2])
    assert isinstance(err, WorkerCrashedError)
    assert "signal 11" in str(err) and "max_retries=1" in str(err)
    states = [s for s, _, _ in h.sched.tasks[tid].history]
    assert states.count("retried") == 1 and states[-1] == "failed"


def test_application_retry_request_requeues_task() -> None:
    h = Head()
    w = h.worker()
    tid, _ = h.submit(retries=2)
    out = h.send(w, (P.TASK_DONE, tid, [], P.DONE_RETRY, 1.0, 2.0, []))
    assert _executes(out) == {w: [tid]}
    assert h.sched.tasks[tid].retries_left == 1


def test_failed_dependency_fails_dependents() -> None:
    h = Head()
    w = h.worker()
    parent, _ = h.submit()
    child, _ = h.submit(deps=(P.return_id(parent, 0),))
    grandchild, _ = h.submit(deps=(P.return_id(child, 0),))
    err = S.task_error_loc("f", ValueError("boom"))
    out = h.send(w, (P.TASK_DONE, parent, [(P.return_id(parent, 0), err)], P.DONE_ERROR,
                     1.0, 2.0, []))
    assert h.state(child) == "failed" and h.state(grandchild) == "failed"
    assert not _executes(out)
    ready = {m[1]: m[2] for m in out.get(DRIVER, []) if m[0] == P.OBJECT_READY}
    assert ready[P.return_id(child, 0)] == err
    assert ready[P.return_id(grandchild, 0)] == err


def test_infeasible_task_warns_naming_task_and_resource() -> None:
    h = Head({"CPU": 2.0})
    h.worker()
    tid, out = h.submit(demand={"CPU": 1.0, "TPU": 1.0}, name="train")
    warns = [m[1] for m in out.get(DRIVER, []) if m[0] == P.WARN]
    assert len(warns) == 1 and "train" in warns[0] and "TPU" in warns[0]
    assert h.sched.tasks[tid].infeasible and h.state(tid) == "ready"
    _, out = h.submit(demand={"CPU": 3.0}, name="wide")
    warns = [m[1] for m in out.get(DRIVER, []) if m[0] == P.WARN]
    assert len(warns) == 1 and "wide" in warns[0] and "CPU" in warns[0]
    _, out = h.submit(name="fine")  # a feasible task is placed and not warned about
    assert not [m for m in out.get(DRIVER, []) if m[0] == P.WARN]
    assert _executes(out)


def test_task_submitted_before_any_node_is_judged_when_one_registers() -> None:
    sched = Scheduler("test")
    tid = P.IdGen().task_id()
    spec = (tid, FID, b"code", "early", b"", [], [P.return_id(tid, 0)], {"GPU": 1.0}, 0,
            False, "ipc://o", "ipc://out", [])
    sched.handle_batch(DRIVER, [(P.SUBMIT, spec)])
    assert not sched.take_outbox().get(DRIVER)
    sched.handle_batch(NODE_IDENT, [(P.NODE_REGISTER, NODE, {"CPU": 1.0}, "host", 1)])
    warns = [m[1] for m in sched.take_outbox().get(DRIVER, []) if m[0] == P.WARN]
    assert len(warns) == 1 and "early" in warns[0] and "GPU" in warns[0]


def test_cancel_pending_and_running_tasks() -> None:
    h = Head({"CPU": 1.0})
    w = h.worker()
    running, _ = h.submit()
    pending, _ = h.submit()
    out = h.send(DRIVER, (P.CANCEL, P.return_id(pending, 0), False, True))
    assert h.state(pending) == "cancelled"
    ready = [m for m in out[DRIVER] if m[0] == P.OBJECT_READY]
    assert isinstance(_error_of(ready[0][2]), TaskCancelledError)
    out = h.send(DRIVER, (P.CANCEL, P.return_id(running, 0), False, True))
    assert (P.SIGNAL_WORKER, w, SIGINT) in out[NODE_IDENT]
    assert h.state(running) == "cancelled"
    h.done(w, running)  # the worker's late result is dropped; the error stays
    assert h.sched.objects[P.return_id(running, 0)].loc is not None
    assert h.sched.objects[P.return_id(running, 0)].loc[0] == P.LOC_ERROR  # type: ignore[index]


@pytest.mark.parametrize("recursive", [True, False])
def test_cancel_reaches_the_tasks_a_task_submitted_when_recursive(recursive: bool) -> None:
    h = Head({"CPU": 1.0})
    w = h.worker()
    parent, _ = h.submit()
    child, _ = h.submit(sender=w)  # submitted by the parent while it runs on w
    grandchild, _ = h.submit(deps=(P.return_id(child, 0),), sender=w)
    assert h.state(child) == "ready" and h.state(grandchild) == "waiting"
    h.send(DRIVER, (P.CANCEL, P.return_id(parent, 0), False, recursive))
    assert h.state(parent) == "cancelled"
    if recursive:
        assert h.state(child) == "cancelled"
        # the grandchild depends on the child: it fails with the child's cancellation
        assert h.state(grandchild) in ("cancelled", "failed")
        loc = h.sched.objects[P.return_id(grandchild, 0)].loc
        assert loc is not None and isinstance(_error_of(loc), TaskCancelledError)
    else:
        assert h.state(child) == "ready" and h.state(grandchild) == "waiting"


def test_force_cancel_kills_worker_and_does_not_retry() -> None:
    h = Head()
    w = h.worker()
    tid, _ = h.submit(retries=3)
    out = h.send(DRIVER, (P.CANCEL, P.return_id(tid, 0), True, True))
    assert (P.SIGNAL_WORKER, w, SIGKILL) in out[NODE_IDENT]
    out = h.died(w)
    assert h.state(tid) == "cancelled"
    assert not _executes(out)


def test_blocked_worker_lends_its_cpu() -> None:
    h = Head({"CPU": 1.0})
    w1 = h.worker()
    parent, _ = h.submit()
    child, out = h.submit()
    assert h.state(child) == "ready"
    out = h.send(w1, (P.BLOCKED, []))
    assert h.available()["CPU"] == 1.0
    assert _ops(out, NODE_IDENT) == [P.SPAWN_WORKERS]
    w2 = h.worker()
    assert _executes(h.last) == {w2: [child]}
    h.done(w2, child)
    h.send(w1, (P.UNBLOCKED,))  # takes its CPU back, even if that overcommits briefly
    assert h.available()["CPU"] == 0.0
    h.done(w1, parent)
    assert h.available()["CPU"] == 1.0


def test_state_query_answers_and_bad_query_does_not_raise() -> None:
    h = Head()
    w = h.worker()
    tid, _ = h.submit()
    h.done(w, tid)
    out = h.send(DRIVER, (P.STATE, 1, "tasks", None), (P.STATE, 2, "nonsense", None))
    replies = {m[1]: m[2] for m in out[DRIVER] if m[0] == P.STATE_REPLY}
    status, rows = replies[1]
    assert status == "ok" and rows[0]["state"] == "FINISHED"
    assert [e["state"] for e in rows[0]["events"]][-1] == "FINISHED"
    assert replies[2][0] == "error" and "nonsense" in replies[2][1]


def test_unknown_op_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown message op"):
        Scheduler().handle(DRIVER, (999,))


# --- resources.py -------------------------------------------------------------------

def test_node_resources_acquire_release() -> None:
    r = NodeResources({"CPU": 2.0, "GPU": 2.0, "tpu": 1.0})
    assert r.can_acquire({"CPU": 2.0})
    assert not r.can_acquire({"CPU": 3.0})
    ids = r.acquire({"CPU": 1.0, "GPU": 1.0})
    assert ids == [0]
    assert r.acquire({"CPU": 1.0, "GPU": 1.0}) == [1]
    assert not r.can_acquire({"CPU": 0.0, "GPU": 1.0})
    r.release({"CPU": 1.0, "GPU": 1.0}, [0])
    assert r.available["CPU"] == 1.0 and r.gpu_free[0] == 1.0
    assert r.missing({"tpu": 2.0, "CPU": 1.0}) == {"tpu": 2.0}


def test_fractional_gpus_share_a_device() -> None:
    r = NodeResources({"GPU": 1.0})
    assert r.acquire({"GPU": 0.5}) == [0]
    assert r.acquire({"GPU": 0.5}) == [0]
    assert not r.can_acquire({"GPU": 0.5})
    r.release({"GPU": 0.5}, [0])
    assert r.can_acquire({"GPU": 0.5}) and not r.can_acquire({"GPU": 1.0})


@pytest.mark.parametrize("demand, message", [
    ({"x": -1}, ">= 0"),
    ({"x": "a"}, "must be a number"),
    ({"": 1}, "non-empty"),
    ({"GPU": 1.5}, "whole number"),
    ({"x": float("nan")}, "must be a number"),
])
def test_validate_demand_rejects(demand: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate_demand(demand, "where")


def test_validate_demand_drops_zeros_and_shape_is_order_free() -> None:
    assert validate_demand({"a": 0, "b": 2}, "w") == {"b": 2.0}
    assert shape_of({"a": 1.0, "b": 2.0}) == shape_of({"b": 2.0, "a": 1.0})


def test_cancelled_blocked_task_stays_cancelled_when_its_worker_wakes() -> None:
    h = Head({"CPU": 1.0})
    w = h.worker()
    tid, _ = h.submit()
    h.send(w, (P.BLOCKED, []))
    h.send(DRIVER, (P.CANCEL, P.return_id(tid, 0), False, True))
    h.send(w, (P.UNBLOCKED,))
    assert h.state(tid) == "cancelled"
    assert h.sched.tasks[tid].history[-1][0] == "cancelled"
    h.done(w, tid)  # the interrupted task reports; its worker is free again
    assert h.available()["CPU"] == 1.0


def test_reservation_is_released_when_a_cancelled_tasks_segment_arrives() -> None:
    # A task cancelled while it writes a large result: its TASK_DONE arrives after
    # the cancel, the segment is dropped, and the room reserved for it comes back.
    h = Head({"CPU": 2.0, "_object_store_memory": float(64 << 20)})
    w = h.worker()
    tid, _ = h.submit()
    oid = P.return_id(tid, 0)
    size = 8 << 20
    out = h.send(w, (P.RESERVE, 1, oid, size, NODE))
    assert (P.RESERVED, 1, None) in out[w]
    store = h.sched.store.stores[NODE]
    assert store.reserved == size
    h.send(DRIVER, (P.CANCEL, oid, False, True))
    assert h.state(tid) == "cancelled"
    loc = (P.LOC_SHM, "jray-test-seg", size, NODE)
    out = h.send(w, (P.TASK_DONE, tid, [(oid, loc)], P.DONE_OK, 1.0, 1.1, []))
    assert store.reserved == 0 and not store.reservations
    assert any(m[0] in (P.UNLINK, P.POOL) for m in out.get(NODE_IDENT, []))
