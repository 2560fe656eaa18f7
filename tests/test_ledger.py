"""The owner's lease ledger as a state machine: events in, instructions out, no process.

Time is an argument of every event, so nothing here sleeps or reads a clock.
"""

from __future__ import annotations

import pytest

from jray._private import protocol as P
from jray._private.ledger import LeaseLedger
from jray._private.resources import shape_of

CPU = {"CPU": 1.0}
GPU = {"CPU": 1.0, "GPU": 1.0}
FID = b"f" * 16


def _granted(ledger: LeaseLedger, demand: dict[str, float], now: float,
             lease_id: bytes = b"L1") -> None:
    assert ledger.route(shape_of(demand), demand, now) is None
    (req,) = ledger.take()
    assert req[0] == P.LEASE_REQUEST and req[2] == demand
    ledger.granted(req[1], lease_id, "ipc://w", [0] if "GPU" in demand else [], now)
    assert ledger.take() == []


def test_first_task_asks_once_then_tasks_go_on_the_lease() -> None:
    ledger = LeaseLedger(depth=2, node_id=b"node-B")
    shape = shape_of(CPU)
    assert ledger.route(shape, CPU, 0.0) is None
    assert ledger.route(shape, CPU, 0.0) is None  # still asking: no second request
    (req,) = ledger.take()
    assert req == (P.LEASE_REQUEST, 1, CPU, b"node-B")  # the head grants on node B first
    ledger.granted(1, b"L1", "ipc://w1", [], 0.001)
    lease = ledger.route(shape, CPU, 0.002)
    assert lease is not None and lease.addr == "ipc://w1"
    assert ledger.sent(lease, b"r1", FID, 0.002) is True  # the code goes with the first one
    assert ledger.sent(lease, b"r2", FID, 0.002) is False
    assert ledger.route(shape, CPU, 0.003) is None  # two in flight = depth: the head takes it
    assert ledger.take() == []  # ... without another request
    ledger.result(b"r1", 0.004)
    assert ledger.route(shape, CPU, 0.004) is lease


def test_shapes_have_their_own_leases() -> None:
    ledger = LeaseLedger()
    _granted(ledger, CPU, 0.0, b"L1")
    _granted(ledger, GPU, 0.0, b"L2")
    cpu = ledger.route(shape_of(CPU), CPU, 0.0)
    gpu = ledger.route(shape_of(GPU), GPU, 0.0)
    assert cpu is not None and gpu is not None
    assert (cpu.lease_id, gpu.lease_id) == (b"L1", b"L2")
    assert gpu.gpu_ids == [0]


def test_refusal_waits_before_asking_again() -> None:
    ledger = LeaseLedger(retry_s=0.05)
    shape = shape_of(CPU)
    ledger.route(shape, CPU, 0.0)
    (req,) = ledger.take()
    ledger.granted(req[1], None, "", [], 0.0)
    assert ledger.route(shape, CPU, 0.01) is None
    assert ledger.take() == []
    ledger.route(shape, CPU, 0.06)
    assert [m[0] for m in ledger.take()] == [P.LEASE_REQUEST]


def test_idle_lease_goes_back_busy_one_stays() -> None:
    ledger = LeaseLedger(idle_s=0.2)
    _granted(ledger, CPU, 0.0)
    lease = ledger.route(shape_of(CPU), CPU, 0.0)
    assert lease is not None
    ledger.sent(lease, b"r1", FID, 0.0)
    ledger.tick(10.0)  # long, but a task is in flight
    assert ledger.take() == [] and ledger.held()
    ledger.result(b"r1", 10.0)
    ledger.tick(10.1)
    assert ledger.take() == []
    ledger.tick(10.25)
    assert ledger.take() == [(P.LEASE_RETURN, b"L1")]
    assert not ledger.held()
    # the next task asks for a new lease
    assert ledger.route(shape_of(CPU), CPU, 10.3) is None
    assert [m[0] for m in ledger.take()] == [P.LEASE_REQUEST]


def test_revoked_lease_is_acknowledged_dropped_and_its_tasks_forgotten() -> None:
    ledger = LeaseLedger(retry_s=0.05)
    _granted(ledger, CPU, 0.0)
    lease = ledger.route(shape_of(CPU), CPU, 0.0)
    assert lease is not None
    ledger.sent(lease, b"r1", FID, 0.0)
    ledger.revoked(b"L1", 0.01)
    assert ledger.take() == [(P.LEASE_RETURN, b"L1")]  # the head forgets it on this ack
    assert ledger.in_flight() == 0  # the head finishes (or reruns) what was sent
    ledger.result(b"r1", 0.02)  # its result still arrives: nothing to do
    assert ledger.route(shape_of(CPU), CPU, 0.02) is None
    assert ledger.take() == []  # not before retry_s
    ledger.route(shape_of(CPU), CPU, 0.07)
    assert [m[0] for m in ledger.take()] == [P.LEASE_REQUEST]
    # a revocation the owner already handled is only acknowledged again
    ledger.revoked(b"L1", 0.08)
    assert ledger.take() == [(P.LEASE_RETURN, b"L1")]


def test_a_new_lease_sends_the_code_again() -> None:
    ledger = LeaseLedger(idle_s=0.0)
    _granted(ledger, CPU, 0.0, b"L1")
    lease = ledger.route(shape_of(CPU), CPU, 0.0)
    assert lease is not None and ledger.sent(lease, b"r1", FID, 0.0)
    ledger.result(b"r1", 0.0)
    ledger.tick(0.0)
    ledger.take()
    _granted(ledger, CPU, 0.0, b"L2")
    lease = ledger.route(shape_of(CPU), CPU, 0.0)
    assert lease is not None and ledger.sent(lease, b"r2", FID, 0.0) is True


def test_unknown_or_duplicate_grants_go_back() -> None:
    ledger = LeaseLedger()
    ledger.granted(99, b"LX", "ipc://x", [], 0.0)
    assert ledger.take() == [(P.LEASE_RETURN, b"LX")]
    _granted(ledger, CPU, 0.0, b"L1")
    ledger.pending[7] = shape_of(CPU)  # a second answer for a shape that has a lease
    ledger.granted(7, b"L2", "ipc://y", [], 0.0)
    assert ledger.take() == [(P.LEASE_RETURN, b"L2")]
    assert ledger.by_shape[shape_of(CPU)].lease_id == b"L1"


def test_release_all_returns_every_lease() -> None:
    ledger = LeaseLedger()
    _granted(ledger, CPU, 0.0, b"L1")
    _granted(ledger, GPU, 0.0, b"L2")
    ledger.release_all()
    assert sorted(ledger.take()) == [(P.LEASE_RETURN, b"L1"), (P.LEASE_RETURN, b"L2")]
    assert not ledger.held()


def test_depth_must_be_positive() -> None:
    with pytest.raises(ValueError, match="depth"):
        LeaseLedger(depth=0)


def test_a_task_waiting_on_a_lease_goes_after_it_there_whatever_the_depth() -> None:
    ledger = LeaseLedger(depth=1)
    _granted(ledger, CPU, 0.0, b"L1")
    lease = ledger.route(shape_of(CPU), CPU, 0.0)
    assert lease is not None
    tid = P.IdGen().task_id()
    ledger.sent(lease, P.return_id(tid, 0), FID, 0.0)
    assert ledger.lease_making(P.return_id(tid, 1)) is lease  # any of that task's results
    assert ledger.lease_making(b"x" * 14 + b"\xff\xff") is None  # a put object
    assert ledger.route(shape_of(CPU), CPU, 0.0) is None  # at depth: a free task goes to the head
    assert ledger.route(shape_of(CPU), CPU, 0.0, after=lease) is lease  # a chained one follows
    assert ledger.route(shape_of(GPU), GPU, 0.0, after=lease) is None  # not of another shape
    ledger.result(P.return_id(tid, 0), 0.0)
    assert ledger.lease_making(P.return_id(tid, 0)) is None
