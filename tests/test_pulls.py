"""The head's side of objects between machines (``pulls.py``) as a state machine
(no process): which reader's LOST becomes a pull, one pull per object and node,
copies answered at once, counted, evicted for room, dropped when collected or
when a node is lost, and placement that counts copies."""

from __future__ import annotations

import pickle

from jray._private import protocol as P
from jray._private.scheduler import Scheduler

FID = b"f" * 16
DRIVER = b"d" + b"1" * 7
A, B, C = b"nodeA---", b"nodeB---", b"nodeC---"
ADDR = {A: "tcp://10.0.0.1:5000", B: "tcp://10.0.0.2:5000", C: "tcp://10.0.0.1:5001"}
DOMAIN = {A: "boot1/20", B: "boot2/20", C: "boot1/20"}  # C shares A's /dev/shm
MIB = 1 << 20


class Cluster:
    def __init__(self) -> None:
        self.sched = Scheduler("test")
        self.ids = P.IdGen()
        for node in (A, B, C):
            res = {"CPU": 1.0, "_object_store_memory": 100.0 * MIB}
            self.send(b"n" + node, (P.NODE_REGISTER, node, res, "host", 1, DOMAIN[node],
                                    ADDR[node]))
        self.workers: dict[bytes, int] = {}

    def send(self, sender: bytes, *msgs: P.Msg) -> dict[bytes, list[P.Msg]]:
        self.sched.handle_batch(sender, list(msgs))
        return self.sched.take_outbox()

    def worker(self, node: bytes) -> bytes:
        n = self.workers.get(node, 0) + 1
        self.workers[node] = n
        ident = b"w" + node[4:5] + bytes([n]) * 6
        self.send(ident, (P.WORKER_READY, node, 100 + n, "ipc://x"))
        return ident

    def put(self, node: bytes, size: int) -> tuple[bytes, P.Loc]:
        oid = self.ids.put_id()
        loc = (P.LOC_SHM, f"seg-{oid.hex()}", size, node)
        self.send(DRIVER, (P.PUT, oid, loc, []))
        return oid, loc

    def summary(self, node: bytes) -> dict[str, int]:
        st: dict[str, int] = self.sched.store.summary()[node.hex()]
        return st


def _ops(out: dict[bytes, list[P.Msg]], ident: bytes, op: int) -> list[P.Msg]:
    return [m for m in out.get(ident, []) if m[0] == op]


def test_readers_on_another_machine_share_one_pull_and_then_the_copy() -> None:
    c = Cluster()
    w1, w2, w3 = c.worker(B), c.worker(B), c.worker(B)
    oid, loc = c.put(A, 8 * MIB)
    out = c.send(w1, (P.LOST, oid, loc, B))
    assert _ops(out, b"n" + B, P.PULL_OBJECT) == [(P.PULL_OBJECT, oid, loc, ADDR[A])]
    assert _ops(c.send(w2, (P.LOST, oid, loc, B)), b"n" + B, P.PULL_OBJECT) == []
    copy = (P.LOC_SHM, f"copy-{oid.hex()}", 8 * MIB, B)
    out = c.send(b"n" + B, (P.PULLED, B, oid, copy, None))
    assert _ops(out, w1, P.OBJECT_READY) == [(P.OBJECT_READY, oid, copy)]
    assert _ops(out, w2, P.OBJECT_READY) == [(P.OBJECT_READY, oid, copy)]
    out = c.send(w3, (P.LOST, oid, loc, B))  # later readers get the copy at once
    assert _ops(out, w3, P.OBJECT_READY) == [(P.OBJECT_READY, oid, copy)]
    st = c.summary(B)
    assert (st["pulls"], st["copies"], st["copy_bytes"], st["used"]) == (1, 1, 8 * MIB, 8 * MIB)
    # collected: the copy's segment goes too
    out = c.send(DRIVER, (P.FREE, [oid]))
    assert (P.UNLINK, [copy[1]]) in out[b"n" + B]
    assert c.summary(B)["copies"] == 0 and c.summary(B)["used"] == 0


def test_a_reader_sharing_the_store_does_not_pull() -> None:
    c = Cluster()
    wc = c.worker(C)
    oid, loc = c.put(A, 8 * MIB)
    out = c.send(wc, (P.LOST, oid, loc, C))  # C shares A's /dev/shm: really lost
    assert not _ops(out, b"n" + C, P.PULL_OBJECT)
    (ready,) = _ops(out, wc, P.OBJECT_READY)
    assert ready[2][0] == P.LOC_ERROR and b"ObjectLostError" in ready[2][1]


def test_a_failed_pull_names_the_node_and_why() -> None:
    c = Cluster()
    wb = c.worker(B)
    oid, loc = c.put(A, 8 * MIB)
    c.send(wb, (P.LOST, oid, loc, B))
    out = c.send(b"n" + B, (P.PULLED, B, oid, None, "no data from tcp://10.0.0.1:5000"))
    (ready,) = _ops(out, wb, P.OBJECT_READY)
    err = pickle.loads(ready[2][1])
    assert "could not be copied to node" in str(err) and "no data from" in str(err)


def test_copies_make_room_first_and_are_pulled_again() -> None:
    c = Cluster()
    wb = c.worker(B)
    oid, loc = c.put(A, 60 * MIB)
    c.send(wb, (P.LOST, oid, loc, B))
    copy = (P.LOC_SHM, "copy", 60 * MIB, B)
    c.send(b"n" + B, (P.PULLED, B, oid, copy, None))
    out = c.send(wb, (P.RESERVE, 7, c.ids.put_id(), 50 * MIB, B))  # 60 + 50 > 100 MiB
    assert (P.UNLINK, ["copy"]) in out[b"n" + B]
    assert (P.RESERVED, 7, None) in out[wb]
    assert c.summary(B)["copies_evicted"] == 1 and c.summary(B)["copies"] == 0
    out = c.send(wb, (P.LOST, oid, copy, B))  # the evicted copy is missed: pull again
    assert _ops(out, b"n" + B, P.PULL_OBJECT) == [(P.PULL_OBJECT, oid, loc, ADDR[A])]
    assert c.summary(B)["pulls"] == 2


def test_a_lost_holder_leaves_its_copies_and_pulls_elsewhere() -> None:
    c = Cluster()
    wb, wc = c.worker(B), c.worker(C)
    oid, loc = c.put(A, 8 * MIB)
    c.send(wb, (P.LOST, oid, loc, B))
    copy = (P.LOC_SHM, "copy", 8 * MIB, B)
    c.send(b"n" + B, (P.PULLED, B, oid, copy, None))
    c.sched.node_lost(A, "test")
    out = c.send(wc, (P.LOST, oid, loc, C))  # A is gone: C pulls from B's copy
    assert _ops(out, b"n" + C, P.PULL_OBJECT) == [(P.PULL_OBJECT, oid, copy, ADDR[B])]
    c.sched.node_lost(B, "test")  # and now the source of that pull is lost too
    out = c.sched.take_outbox()
    (ready,) = _ops(out, wc, P.OBJECT_READY)  # a put object: no lineage, lost
    assert ready[2][0] == P.LOC_ERROR
    assert c.sched.store.pulls.copies == {} and c.sched.store.pulls.pending == {}


def test_placement_counts_copies() -> None:
    c = Cluster()
    wa, wb = c.worker(A), c.worker(B)
    big, loc = c.put(A, 64 * MIB)
    small, _ = c.put(B, 1 * MIB)
    c.send(wb, (P.LOST, big, loc, B))
    c.send(b"n" + B, (P.PULLED, B, big, (P.LOC_SHM, "copy", 64 * MIB, B), None))
    tid = c.ids.task_id()
    spec = (tid, FID, b"code", "f", pickle.dumps(((), {})), [big, small],
            [P.return_id(tid, 0)], {"CPU": 1.0}, 1, False, "ipc://owner", "ipc://out", [])
    out = c.send(DRIVER, (P.SUBMIT, spec))
    ran = [ident for ident, msgs in out.items() if any(m[0] == P.EXECUTE for m in msgs)]
    assert ran == [wb]  # B holds 65 MiB of its arguments (64 of them a copy), A 64
    assert wa not in ran


def test_a_pull_that_would_not_fit_drops_older_copies_first() -> None:
    c = Cluster()
    wb = c.worker(B)
    first, loc1 = c.put(A, 60 * MIB)
    second, loc2 = c.put(A, 60 * MIB)
    c.send(wb, (P.LOST, first, loc1, B))
    c.send(b"n" + B, (P.PULLED, B, first, (P.LOC_SHM, "copy1", 60 * MIB, B), None))
    out = c.send(wb, (P.LOST, second, loc2, B))  # 60 + 60 > 100 MiB: copy1 goes
    assert out[b"n" + B][:2] == [(P.UNLINK, ["copy1"]),
                                 (P.PULL_OBJECT, second, loc2, ADDR[A])]
    assert c.summary(B)["copies_evicted"] == 1
