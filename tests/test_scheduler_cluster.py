"""The scheduler's cluster events as a state machine (no process): a node lost
with work on it, placement by where the arguments' bytes are, a lost node's
heartbeat answered with NODE_REJOIN by the head's handler."""

from __future__ import annotations

import pickle

from jray._private import protocol as P
from jray._private.scheduler import Scheduler

FID = b"f" * 16
DRIVER = b"d" + b"1" * 7


class TwoNodes:
    def __init__(self, cpus: float = 1.0) -> None:
        self.sched = Scheduler("test")
        self.ids = P.IdGen()
        self.workers: dict[bytes, list[bytes]] = {}
        for node in (b"nodeA---", b"nodeB---"):
            self.send(b"n" + node, (P.NODE_REGISTER, node, {"CPU": cpus}, "host", 1))
            self.workers[node] = []

    def send(self, sender: bytes, *msgs: P.Msg) -> dict[bytes, list[P.Msg]]:
        self.sched.handle_batch(sender, list(msgs))
        return self.sched.take_outbox()

    def worker(self, node: bytes) -> bytes:
        ident = b"w" + node[4:5] + bytes([len(self.workers[node])]) * 6
        self.workers[node].append(ident)
        self.send(ident, (P.WORKER_READY, node, 100 + len(self.workers[node]), "ipc://x"))
        return ident

    def submit(self, deps: tuple[bytes, ...] = (), retries: int = 1
               ) -> tuple[bytes, dict[bytes, list[P.Msg]]]:
        tid = self.ids.task_id()
        spec = (tid, FID, b"code", "f", pickle.dumps(((), {})), list(deps),
                [P.return_id(tid, 0)], {"CPU": 1.0}, retries, False, "ipc://owner",
                "ipc://out", [])
        return tid, self.send(DRIVER, (P.SUBMIT, spec))


def _executed(out: dict[bytes, list[P.Msg]]) -> dict[bytes, list[bytes]]:
    return {ident: [m[1][P.E_ID] for m in msgs if m[0] == P.EXECUTE]
            for ident, msgs in out.items() if any(m[0] == P.EXECUTE for m in msgs)}


def test_a_task_goes_to_the_node_holding_its_largest_argument() -> None:
    c = TwoNodes()
    wa, wb = c.worker(b"nodeA---"), c.worker(b"nodeB---")
    small, big = c.ids.put_id(), c.ids.put_id()
    c.send(DRIVER, (P.PUT, small, (P.LOC_SHM, "seg-small", 1 << 20, b"nodeA---"), []),
           (P.PUT, big, (P.LOC_SHM, "seg-big", 64 << 20, b"nodeB---"), []))
    tid, out = c.submit(deps=(small, big))
    assert _executed(out) == {wb: [tid]}  # B holds 64 MiB of its arguments, A 1 MiB
    # B is busy now: the next such task goes where there is room
    tid2, out = c.submit(deps=(small, big))
    assert _executed(out) == {wa: [tid2]}


def test_a_lost_node_s_running_task_is_retried_on_another_node() -> None:
    c = TwoNodes()
    wa = c.worker(b"nodeA---")
    tid, out = c.submit(retries=1)
    assert _executed(out) == {wa: [tid]}
    wb = c.worker(b"nodeB---")
    c.sched.node_lost(b"nodeA---", "no heartbeat for 4.0 s")
    c.sched.schedule()
    out = c.sched.take_outbox()
    assert _executed(out) == {wb: [tid]}
    node = c.sched.nodes[b"nodeA---"]
    assert not node.alive and not node.workers
    assert any(e[2] == "node_lost" for e in c.sched.events.since(0))
    # nothing more is placed on the lost node, even when it has free resources
    late = b"w" + b"A" + b"9" * 6  # a worker of the lost node that was still starting
    out = c.send(late, (P.WORKER_READY, b"nodeA---", 999, "ipc://y"))
    assert out[late] == [(P.EXIT,)]
    tid2, out = c.submit()
    assert not _executed(out)  # B's worker is busy, A is lost
    c.sched.node_lost(b"nodeA---", "again")  # a second report changes nothing
    assert c.sched.tasks[tid2].state == "ready"


def test_a_lost_node_s_task_without_retries_fails() -> None:
    c = TwoNodes()
    wa = c.worker(b"nodeA---")
    tid, out = c.submit(retries=0)
    assert _executed(out) == {wa: [tid]}
    c.sched.node_lost(b"nodeA---", "cut off")
    assert c.sched.tasks[tid].state == "failed"


def test_a_lease_is_granted_on_the_owners_node_first_then_elsewhere() -> None:
    c = TwoNodes(cpus=2.0)
    on_a = {c.worker(b"nodeA---"), c.worker(b"nodeA---")}
    on_b = {c.worker(b"nodeB---"), c.worker(b"nodeB---")}
    # a driver on node B: both of B's CPUs first, then A's
    granted = []
    for req in range(3):
        out = c.send(DRIVER, (P.LEASE_REQUEST, req, {"CPU": 1.0}, b"nodeB---"))
        (grant,) = [m for m in out[DRIVER] if m[0] == P.LEASE_GRANT]
        granted.append(c.sched.leases.leases[grant[2]].worker)
        c.sched.validate()
    assert set(granted[:2]) == on_b and granted[2] in on_a
    # an owner that names no node the head knows gets the first node with room
    out = c.send(DRIVER, (P.LEASE_REQUEST, 9, {"CPU": 1.0}, b""))
    (grant,) = [m for m in out[DRIVER] if m[0] == P.LEASE_GRANT]
    assert c.sched.leases.leases[grant[2]].worker in on_a


def _child(c: TwoNodes) -> tuple[bytes, P.TaskSpec]:
    tid = c.ids.task_id()
    return tid, (tid, FID, None, "child", pickle.dumps(((), {})), [], [P.return_id(tid, 0)],
                 {"CPU": 1.0}, 0, False, "ipc://owner", "ipc://out", [])


def test_a_task_submitted_by_a_task_runs_on_its_node_while_there_is_room() -> None:
    c = TwoNodes()
    wa, wb = c.worker(b"nodeA---"), c.worker(b"nodeB---")
    first, _ = c.submit()
    parent, _ = c.submit()
    assert (c.sched.tasks[first].worker, c.sched.tasks[parent].worker) == (wa, wb)
    c.send(wa, (P.TASK_DONE, first, [(P.return_id(first, 0), (P.LOC_INLINE, b"1"))],
                P.DONE_OK, 1.0, 2.0, []))  # A is idle again
    c.send(wb, (P.BLOCKED, []))  # the parent on B waits in get: B's CPU is lent
    wb2 = c.worker(b"nodeB---")
    tid, spec = _child(c)
    out = c.send(wb, (P.SUBMIT, spec))
    assert _executed(out) == {wb2: [tid]}  # A is idle too, but the child stays on B
    c.sched.validate()
    tid2, spec2 = _child(c)
    out = c.send(wb, (P.SUBMIT, spec2))
    assert _executed(out) == {wa: [tid2]}  # B is full: the next one goes to A
    c.sched.validate()
