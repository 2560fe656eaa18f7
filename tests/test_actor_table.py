"""The head's actor table as a state machine: no process, no socket."""

from __future__ import annotations

import pickle
import time
from typing import Any

import pytest

from jray._private import actor_protocol as A
from jray._private import protocol as P
from jray._private.actor_table import ActorTable
from jray._private.scheduler import Scheduler
from jray.exceptions import ActorDiedError

NODE = b"node0001"
NODE_IDENT = b"n" + NODE
DRIVER = b"driver-1"
OTHER = b"driver-2"


def _spec(n: int = 1, **over: Any) -> A.ActorSpec:
    spec: A.ActorSpec = {
        "actor_id": bytes([n]) * 16,
        "meta": {"class_name": "Counter", "methods": {"inc": 1}, "max_task_retries": 0,
                 "is_async": False},
        "class_blob": b"cls",
        "args": ("inline", pickle.dumps(([], {}))),
        "name": None,
        "namespace": "",
        "demand": {"CPU": 1.0},
        "hold": False,
        "max_restarts": 0,
        "max_concurrency": 1,
        "checkpoint_interval": 0,
        "checkpoint_interval_s": 0.0,
        "detached": False,
        "get_if_exists": False,
        "output_addr": "",
        "owner_actor": None,
    }
    spec.update(over)  # type: ignore[typeddict-item]
    return spec


class Head:
    """A scheduler with an actor table, and helpers to feed it and read its outbox."""

    def __init__(self, cpus: float = 2.0, register: bool = True) -> None:
        self.sched = Scheduler("test")
        self.table = ActorTable(self.sched)
        if register:
            self.node(cpus)

    def node(self, cpus: float = 2.0) -> None:
        self.send(NODE_IDENT, (P.NODE_REGISTER, NODE, {"CPU": cpus}, "host", 1))

    def send(self, sender: bytes, msg: P.Msg) -> dict[bytes, list[P.Msg]]:
        self.sched.handle_batch(sender, [msg])
        return self.sched.take_outbox()

    def start(self, spec: A.ActorSpec, owner: bytes = DRIVER) -> dict[bytes, list[P.Msg]]:
        """Create, spawn, hello and alive: returns the outbox of the ALIVE step."""
        out = self.send(owner, (A.ACTOR_CREATE, spec, 0))
        assert _ops(out, NODE_IDENT) == [A.ACTOR_SPAWN]
        inc = out[NODE_IDENT][0][2]
        return self.alive(spec["actor_id"], inc)

    def alive(self, actor_id: bytes, inc: int) -> dict[bytes, list[P.Msg]]:
        proc = b"A" + actor_id + bytes([inc])
        out = self.send(proc, (A.ACTOR_HELLO, actor_id, inc))
        assert out[proc][0][0] == A.ACTOR_INIT and out[proc][0][1] is not None
        return self.send(proc, (A.ACTOR_ALIVE, actor_id, inc, f"ipc://call-{inc}", 100 + inc))


def _ops(out: dict[bytes, list[P.Msg]], ident: bytes) -> list[int]:
    return [m[0] for m in out.get(ident, [])]


def _state(out: dict[bytes, list[P.Msg]], ident: bytes) -> P.Msg:
    states = [m for m in out.get(ident, []) if m[0] == A.ACTOR_STATE]
    assert states, f"no ACTOR_STATE for {ident!r} in {out}"
    return states[-1]


def _error(loc: P.Loc) -> BaseException:
    assert loc[0] == P.LOC_ERROR
    err: BaseException = pickle.loads(loc[1])
    return err


def test_create_spawn_alive_notifies_creator_and_lookups() -> None:
    head = Head()
    spec = _spec()
    out = head.start(spec)
    _, aid, state, inc, addr, cause = _state(out, DRIVER)
    assert (aid, state, inc, addr, cause) == (spec["actor_id"], A.ALIVE, 0, "ipc://call-0", None)
    out = head.send(OTHER, (A.ACTOR_LOOKUP, spec["actor_id"]))
    assert _state(out, OTHER)[2] == A.ALIVE
    assert OTHER in head.table.actors[spec["actor_id"]].subscribers


def test_actor_created_before_any_node_is_placed_when_one_registers() -> None:
    head = Head(register=False)
    out = head.send(DRIVER, (A.ACTOR_CREATE, _spec(), 0))
    assert NODE_IDENT not in out
    head.sched.handle_batch(NODE_IDENT, [(P.NODE_REGISTER, NODE, {"CPU": 2.0}, "h", 1)])
    out = head.sched.take_outbox()
    assert A.ACTOR_SPAWN in _ops(out, NODE_IDENT)


def test_hello_from_a_stale_incarnation_is_told_to_exit() -> None:
    head = Head()
    spec = _spec(max_restarts=1)
    head.start(spec)
    out = head.send(b"old", (A.ACTOR_HELLO, spec["actor_id"], 7))
    assert out[b"old"] == [(A.ACTOR_INIT, None, None)]


def test_process_death_restarts_then_dies_with_exit_code() -> None:
    head = Head()
    spec = _spec(max_restarts=1)
    aid = spec["actor_id"]
    head.start(spec)
    out = head.send(NODE_IDENT, (A.ACTOR_PROC_DIED, aid, 0, -9))
    _, _, state, inc, _, cause = _state(out, DRIVER)
    assert (state, inc) == (A.RESTARTING, 0)
    assert "SIGKILL" in str(_error(cause))
    spawn = [m for m in out[NODE_IDENT] if m[0] == A.ACTOR_SPAWN]
    assert spawn and spawn[0][2] == 1
    out = head.alive(aid, 1)
    assert _state(out, DRIVER)[2:4] == (A.ALIVE, 1)
    # a late report about the old incarnation changes nothing
    assert head.send(NODE_IDENT, (A.ACTOR_PROC_DIED, aid, 0, -9)) == {}
    out = head.send(NODE_IDENT, (A.ACTOR_PROC_DIED, aid, 1, 3))
    _, _, state, _, _, cause = _state(out, DRIVER)
    err = _error(cause)
    assert state == A.DEAD and isinstance(err, ActorDiedError)
    assert err.exitcode == 3 and "exited with code 3" in str(err)
    assert "no restarts left (max_restarts=1)" in str(err)


def test_infinite_restarts() -> None:
    head = Head()
    spec = _spec(max_restarts=-1)
    aid = spec["actor_id"]
    head.start(spec)
    for inc in range(5):
        out = head.send(NODE_IDENT, (A.ACTOR_PROC_DIED, aid, inc, -9))
        assert _state(out, DRIVER)[2] == A.RESTARTING
        head.alive(aid, inc + 1)
    assert head.table.actors[aid].num_restarts == 5


def test_constructor_failure_is_final() -> None:
    head = Head()
    spec = _spec(max_restarts=3)
    aid = spec["actor_id"]
    head.send(DRIVER, (A.ACTOR_CREATE, spec, 0))
    head.send(b"p", (A.ACTOR_HELLO, aid, 0))
    loc = P.LOC_ERROR, pickle.dumps(ActorDiedError("ctor raised"))
    out = head.send(b"p", (A.ACTOR_INIT_FAILED, aid, 0, loc))
    assert _state(out, DRIVER)[2] == A.DEAD
    assert head.send(NODE_IDENT, (A.ACTOR_PROC_DIED, aid, 0, 1)) == {}


def test_intentional_exit_is_not_restarted() -> None:
    head = Head()
    spec = _spec(max_restarts=3)
    aid = spec["actor_id"]
    head.start(spec)
    head.send(b"p", (A.ACTOR_EXITING, aid, 0, "all handles to it went out of scope"))
    out = head.send(NODE_IDENT, (A.ACTOR_PROC_DIED, aid, 0, 0))
    _, _, state, _, _, cause = _state(out, DRIVER)
    assert state == A.DEAD and "went out of scope" in str(_error(cause))


@pytest.mark.parametrize("no_restart, expected", [(True, A.DEAD), (False, A.RESTARTING)])
def test_kill_signals_the_node_and_respects_no_restart(no_restart: bool, expected: str) -> None:
    head = Head()
    spec = _spec(max_restarts=1)
    aid = spec["actor_id"]
    head.start(spec)
    out = head.send(DRIVER, (A.ACTOR_KILL, aid, no_restart))
    assert out[NODE_IDENT] == [(A.ACTOR_SIGNAL, aid, 0, 9)]
    out = head.send(NODE_IDENT, (A.ACTOR_PROC_DIED, aid, 0, -9))
    _, _, state, _, _, cause = _state(out, DRIVER)
    assert state == expected and "jray.kill()" in str(_error(cause))


def test_kill_before_placement_kills_at_once() -> None:
    head = Head(cpus=1.0)
    head.start(_spec(1, hold=True, demand={"CPU": 1.0}))  # takes the only CPU
    spec = _spec(2, hold=True, demand={"CPU": 1.0})
    out = head.send(DRIVER, (A.ACTOR_CREATE, spec, 0))
    assert NODE_IDENT not in out
    out = head.send(DRIVER, (A.ACTOR_KILL, spec["actor_id"], True))
    assert _state(out, DRIVER)[2] == A.DEAD


def test_held_resources_block_placement_until_released() -> None:
    head = Head()
    res = head.sched.nodes[NODE].res
    a, b = _spec(1, hold=True), _spec(2, hold=True, demand={"CPU": 2.0})
    head.start(a)
    assert res.available["CPU"] == 1.0
    out = head.send(DRIVER, (A.ACTOR_CREATE, b, 0))
    assert NODE_IDENT not in out  # waits for a free CPU
    out = head.send(NODE_IDENT, (A.ACTOR_PROC_DIED, a["actor_id"], 0, -9))
    assert A.ACTOR_SPAWN in _ops(out, NODE_IDENT)  # a's CPU came back: b is placed
    assert res.available["CPU"] == 0.0


def test_default_actor_holds_nothing() -> None:
    head = Head()
    for n in range(5):  # more actors than CPUs: placed all the same
        head.start(_spec(n + 1))
    assert head.sched.nodes[NODE].res.available["CPU"] == 2.0


def test_infeasible_actor_warns_its_creator() -> None:
    head = Head()
    out = head.send(DRIVER, (A.ACTOR_CREATE, _spec(demand={"GPU": 1.0}, hold=True), 0))
    assert [m for m in out[DRIVER] if m[0] == P.WARN]


def test_names_conflict_lookup_and_get_if_exists() -> None:
    head = Head()
    first = _spec(1, name="ps", namespace="ns")
    out = head.send(DRIVER, (A.ACTOR_CREATE, first, 5))
    assert (A.ACTOR_REPLY, 5, True, (first["actor_id"], first["meta"])) in out[DRIVER]
    out = head.send(OTHER, (A.ACTOR_CREATE, _spec(2, name="ps", namespace="ns"), 6))
    reply = [m for m in out[OTHER] if m[0] == A.ACTOR_REPLY][0]
    assert reply[2] is False and "'ps' already exists" in reply[3]
    out = head.send(OTHER, (A.ACTOR_CREATE, _spec(3, name="ps", namespace="ns",
                                                  get_if_exists=True), 7))
    assert (A.ACTOR_REPLY, 7, True, (first["actor_id"], first["meta"])) in out[OTHER]
    out = head.send(OTHER, (A.ACTOR_CREATE, _spec(4, name="ps"), 8))  # other namespace
    assert (A.ACTOR_REPLY, 8, True, (bytes([4]) * 16, first["meta"])) in out[OTHER]
    out = head.send(OTHER, (A.ACTOR_REQUEST, 9, "get_named", ("ps", "ns")))
    assert (A.ACTOR_REPLY, 9, True, (first["actor_id"], first["meta"])) in out[OTHER]
    out = head.send(OTHER, (A.ACTOR_REQUEST, 10, "get_named", ("nope", "")))
    assert out[OTHER][0][2] is False and "'nope'" in out[OTHER][0][3]


def test_name_is_free_again_after_death() -> None:
    head = Head()
    spec = _spec(1, name="solo")
    head.send(DRIVER, (A.ACTOR_CREATE, spec, 1))
    head.send(DRIVER, (A.ACTOR_KILL, spec["actor_id"], True))
    head.send(NODE_IDENT, (A.ACTOR_PROC_DIED, spec["actor_id"], 0, -9))
    out = head.send(DRIVER, (A.ACTOR_CREATE, _spec(2, name="solo"), 2))
    assert [m for m in out[DRIVER] if m[0] == A.ACTOR_REPLY][0][2] is True


def test_checkpoints_keep_only_the_newest_and_restore_on_restart() -> None:
    head = Head()
    spec = _spec(max_restarts=1, checkpoint_interval=2)
    aid = spec["actor_id"]
    head.start(spec)
    shm1 = (P.LOC_SHM, "seg-1", 10, NODE)
    head.send(b"p", (A.ACTOR_CHECKPOINT, aid, 0, shm1))
    out = head.send(b"p", (A.ACTOR_CHECKPOINT, aid, 0, (P.LOC_INLINE, b"state-2")))
    assert (P.UNLINK, ["seg-1"]) in out[NODE_IDENT]
    head.send(NODE_IDENT, (A.ACTOR_PROC_DIED, aid, 0, -9))
    out = head.send(b"q", (A.ACTOR_HELLO, aid, 1))
    assert out[b"q"] == [(A.ACTOR_INIT, spec, (P.LOC_INLINE, b"state-2"), {})]


def test_call_results_become_objects_either_order() -> None:
    head = Head()
    objects = head.sched.objects
    oid1, oid2 = A.result_id(b"c" * 16, 0), A.result_id(b"d" * 16, 0)
    assert A.is_actor_result(oid1) and not A.is_actor_result(P.return_id(b"c" * 16, 0))
    head.send(DRIVER, (A.ACTOR_EXPECT, [oid1]))
    assert objects[oid1].loc is None and objects[oid1].owner == DRIVER
    head.send(b"p", (A.ACTOR_RESULTS, [(oid1, (P.LOC_INLINE, b"1"), DRIVER, None),
                                       (oid2, (P.LOC_INLINE, b"2"), DRIVER, None)]))
    assert objects[oid1].loc == (P.LOC_INLINE, b"1")
    head.send(DRIVER, (A.ACTOR_EXPECT, [oid2]))  # after its result: nothing changes
    assert objects[oid2].loc == (P.LOC_INLINE, b"2")
    head.send(DRIVER, (P.FREE, [oid1, oid2]))
    assert oid1 not in objects and oid2 not in objects


def test_subscribers_of_a_pending_result_hear_when_it_arrives() -> None:
    head = Head()
    oid = A.result_id(b"e" * 16, 0)
    head.send(DRIVER, (A.ACTOR_EXPECT, [oid]))
    assert head.send(OTHER, (P.SUBSCRIBE, [oid])) == {}
    out = head.send(b"p", (A.ACTOR_RESULTS, [(oid, (P.LOC_INLINE, b"v"), DRIVER, None)]))
    assert (P.OBJECT_READY, oid, (P.LOC_INLINE, b"v")) in out[OTHER]
    oid2 = A.result_id(b"f" * 16, 0)
    head.send(DRIVER, (A.ACTOR_EXPECT, [oid2]))
    head.send(OTHER, (P.SUBSCRIBE, [oid2]))
    err = (P.LOC_ERROR, pickle.dumps(ActorDiedError("dead")))
    out = head.send(DRIVER, (A.ACTOR_CALLS_FAILED, [(oid2, err)]))
    assert (P.OBJECT_READY, oid2, err) in out[OTHER]


def test_list_and_unknown_lookup() -> None:
    head = Head()
    head.start(_spec(1, name="a"))
    out = head.send(OTHER, (A.ACTOR_REQUEST, 3, "list", None))
    rows = out[OTHER][0][3]
    assert [(r["class_name"], r["state"], r["name"]) for r in rows] == [("Counter", A.ALIVE, "a")]
    out = head.send(OTHER, (A.ACTOR_LOOKUP, b"z" * 16))
    assert OTHER not in out  # it may be created in a moment: the answer waits
    head.table.early[b"z" * 16] = (time.monotonic() - 60, [OTHER])  # long ago
    out = head.send(OTHER, (A.ACTOR_REQUEST, 4, "list", None))  # any batch expires it
    assert _state(out, OTHER)[2] == A.DEAD
    assert "unknown to this cluster. It might be dead or it's from a different cluster" in str(
        _error(_state(out, OTHER)[5]))  # (Ray's sentence)


def test_a_lookup_before_the_creation_is_answered_by_it() -> None:
    # a handle can reach another process, and its lookup the head, before the
    # creator's ACTOR_CREATE does
    head = Head()
    spec = _spec(1)
    out = head.send(OTHER, (A.ACTOR_LOOKUP, spec["actor_id"]))
    assert OTHER not in out
    out = head.send(DRIVER, (A.ACTOR_CREATE, spec, 0))
    assert _state(out, OTHER)[2] == A.PENDING
    out = head.alive(spec["actor_id"], 0)
    assert _state(out, OTHER)[2] == A.ALIVE


def test_gpu_actors_get_distinct_devices() -> None:
    head = Head(register=False)
    head.send(NODE_IDENT, (P.NODE_REGISTER, NODE, {"CPU": 2.0, "GPU": 2.0}, "h", 1))
    spawned = []
    for n in (1, 2, 3):
        out = head.send(DRIVER, (A.ACTOR_CREATE, _spec(n, hold=True, demand={"GPU": 1.0}), 0))
        spawned += [m[3] for m in out.get(NODE_IDENT, []) if m[0] == A.ACTOR_SPAWN]
    assert sorted(spawned) == [[0], [1]]  # the third waits for a free GPU
    head.send(NODE_IDENT, (A.ACTOR_PROC_DIED, bytes([1]) * 16, 0, -9))
    assert head.sched.nodes[NODE].res.available["GPU"] == 0.0  # the third took it


def test_exception_retries_reach_the_next_incarnation() -> None:
    head = Head()
    spec = _spec(max_restarts=1)
    aid = spec["actor_id"]
    head.start(spec)
    head.send(b"p", (A.ACTOR_RETRIED, aid, 0, b"k1"))
    head.send(NODE_IDENT, (A.ACTOR_PROC_DIED, aid, 0, 1))
    head.send(b"p", (A.ACTOR_RETRIED, aid, 0, b"k1"))  # may come after the death notice
    out = head.send(b"q", (A.ACTOR_HELLO, aid, 1))
    assert out[b"q"] == [(A.ACTOR_INIT, spec, None, {b"k1": 2})]


def test_collecting_the_lifetime_object_ends_the_actor() -> None:
    head = Head()
    spec = _spec()
    aid = spec["actor_id"]
    head.start(spec)
    life = A.lifetime_id(aid)
    head.send(DRIVER, (P.PUT, life, (P.LOC_INLINE, b"N."), []))
    head.send(b"borrower", (P.BORROW, [life]))
    out = head.send(DRIVER, (P.FREE, [life]))
    assert all(m[0] != A.ACTOR_SHUTDOWN for msgs in out.values() for m in msgs)
    out = head.send(b"borrower", (P.UNBORROW, [life]))  # the last copy is gone
    proc = b"A" + aid + bytes([0])
    assert out[proc] == [(A.ACTOR_SHUTDOWN, "all handles to it went out of scope")]
