"""The caller's actor-call ledger as a state machine: events in, instructions out, no process.

Time is an argument of the events that need it, so nothing here sleeps or reads a clock.
"""

from __future__ import annotations

from typing import Any

import pytest

from jray._private import actor_protocol as A
from jray._private import call_ledger as L
from jray._private import protocol as P
from jray._private import serialization as S
from jray._private.call_ledger import Call, CallLedger, Conn
from jray.exceptions import ActorDiedError, PendingCallsLimitExceeded, TaskCancelledError

ACTOR = b"a" * 16
ADDR1, ADDR2 = "ipc://actor-1", "ipc://actor-2"
_n = 0


def _call(retries: int = 0, returns: int = 1) -> Call:
    global _n
    _n += 1
    tid = _n.to_bytes(14, "big") + bytes(2)
    oids = [A.result_id(tid, i) for i in range(returns)]
    msg = (A.ACTOR_CALL, f"m{_n}", None, None, oids, "ipc://me", b"me")
    return Call(msg, oids[0], None, retries)


def _alive(ledger: CallLedger, addr: str = ADDR1, inc: int = 0) -> Conn:
    conn, _ = ledger.connect(ACTOR)
    ledger.state(ACTOR, A.ALIVE, inc, addr, None)
    ledger.take()
    return conn


def _error(loc: P.Loc) -> BaseException:
    with pytest.raises(BaseException) as info:
        S.decode(loc)
    return info.value


def _failed(out: list[Any]) -> dict[bytes, BaseException]:
    return {oid: _error(loc) for ins in out if ins[0] == L.FAIL for oid, loc in ins[1]}


def test_calls_wait_for_the_address_then_leave_in_order() -> None:
    ledger = CallLedger()
    conn, new = ledger.connect(ACTOR)
    assert new and ledger.connect(ACTOR) == (conn, False)
    first, second = _call(), _call()
    ledger.call(conn, first, 0.0)
    ledger.call(conn, second, 1.0)
    assert ledger.take() == [(L.ARM,)]  # the flusher looks for the address (once)
    assert ledger.looking()
    ledger.state(ACTOR, A.ALIVE, 0, ADDR1, None)
    assert ledger.take() == [(L.SEND, ADDR1)]
    assert ledger.take_box(ADDR1) == [first.msg, second.msg]
    assert not ledger.looking()
    ledger.done(ACTOR, [first.key, second.key])
    assert conn.inflight == {}


def test_a_lone_call_leaves_at_once_a_loop_of_calls_coalesces() -> None:
    ledger = CallLedger()
    conn = _alive(ledger)
    ledger.call(conn, _call(), 1.0)
    assert ledger.take() == [(L.SEND, ADDR1)]
    ledger.take_box(ADDR1)
    ledger.call(conn, _call(), 1.0 + L.COALESCE_GAP_S / 10)  # right after: wait for company
    assert ledger.take() == [(L.ARM,)]
    for i in range(L.BATCH_MAX - 1):
        ledger.call(conn, _call(), 1.0 + (i + 2) * L.COALESCE_GAP_S / 10)
    assert ledger.take() == [(L.SEND, ADDR1)]  # armed already; full: it leaves
    assert len(ledger.take_box(ADDR1)) == L.BATCH_MAX
    t = 1.0 + (L.BATCH_MAX + 1) * L.COALESCE_GAP_S / 10
    ledger.call(conn, _call(), t)
    assert ledger.take() == []  # the flusher has not run since it was armed
    ledger.flushed()
    ledger.call(conn, _call(), t + L.COALESCE_GAP_S / 10)
    assert ledger.take() == [(L.ARM,)]


def test_restart_resends_calls_in_flight_with_retries_and_fails_the_rest() -> None:
    ledger = CallLedger()
    conn = _alive(ledger)
    keep, lose, forever = _call(retries=1), _call(retries=0), _call(retries=-1)
    for c in (keep, lose, forever):
        ledger.call(conn, c, 0.0)
    ledger.take_box(ADDR1)
    ledger.take()
    assert ledger.must_drain(ACTOR, A.RESTARTING, 0)
    cause = S.error_loc(ActorDiedError("the process of X died"))
    ledger.state(ACTOR, A.RESTARTING, 0, None, cause)  # the incarnation that died
    out = ledger.take()
    assert (L.FORGET, ADDR1) in out
    failed = _failed(out)
    assert list(failed) == [lose.key] and "the process of X died" in str(failed[lose.key])
    later = _call()
    ledger.call(conn, later, 5.0)  # while restarting: waits, behind the resent ones
    ledger.take()
    ledger.state(ACTOR, A.ALIVE, 0, ADDR1, None)  # news of the dead incarnation: ignored
    assert ledger.take() == []
    ledger.state(ACTOR, A.ALIVE, 1, ADDR2, None)
    assert ledger.take() == [(L.SEND, ADDR2)]
    assert ledger.take_box(ADDR2) == [keep.msg, forever.msg, later.msg]
    assert (keep.retries, forever.retries) == (0, -1)
    ledger.state(ACTOR, A.RESTARTING, 1, None, cause)  # keep has no retries left now
    assert set(_failed(ledger.take())) == {keep.key, later.key}
    assert list(conn.inflight) == [forever.key]


def test_a_new_incarnation_without_restart_news_loses_the_calls_in_flight() -> None:
    ledger = CallLedger()
    conn = _alive(ledger)
    call = _call()
    ledger.call(conn, call, 0.0)
    ledger.take()
    assert ledger.must_drain(ACTOR, A.ALIVE, 1) and not ledger.must_drain(ACTOR, A.ALIVE, 0)
    ledger.state(ACTOR, A.ALIVE, 1, ADDR2, None)
    out = ledger.take()
    assert (L.FORGET, ADDR1) in out
    err = _failed(out)[call.key]
    assert isinstance(err, ActorDiedError) and "max_task_retries=0" in str(err)
    assert conn.addr == ADDR2 and ledger.take_box(ADDR1) == []


def test_death_fails_what_is_in_flight_and_every_later_call() -> None:
    ledger = CallLedger()
    conn = _alive(ledger)
    sent = _call(retries=-1)
    ledger.call(conn, sent, 0.0)
    ledger.take()
    conn.ctor_hold = ["refs of the constructor"]
    cause = S.error_loc(ActorDiedError("no restarts left"))
    ledger.state(ACTOR, A.DEAD, 0, None, cause)
    out = ledger.take()
    assert out[0] == (L.FORGET, ADDR1)
    assert "no restarts left" in str(_failed(out)[sent.key])
    assert conn.dead and conn.ctor_hold is None and conn.inflight == {}
    late = _call()
    ledger.call(conn, late, 1.0)
    assert "no restarts left" in str(_failed(ledger.take())[late.key])
    ledger.state(ACTOR, A.ALIVE, 1, ADDR2, None)  # the dead stay dead
    assert ledger.take() == [] and conn.addr is None


def test_a_kill_fails_calls_with_rays_sentence() -> None:
    ledger = CallLedger()
    conn = _alive(ledger)
    call = _call(retries=-1)
    ledger.call(conn, call, 0.0)
    ledger.take()
    ledger.killed(ACTOR, L.killed_cause("Counter", ACTOR))
    err = _failed(ledger.take())[call.key]
    assert isinstance(err, ActorDiedError)
    assert str(err).startswith("The actor is dead because it was killed by `ray.kill`")
    assert "Counter" in str(err)
    ledger.killed(ACTOR, L.killed_cause("Counter", ACTOR))  # twice: nothing more
    ledger.state(ACTOR, A.DEAD, 0, None, None)
    assert ledger.take() == []


def test_cancel_fails_calls_still_here_and_names_sent_ones_to_the_actor() -> None:
    ledger = CallLedger()
    conn, _ = ledger.connect(ACTOR)
    waiting = _call()
    ledger.call(conn, waiting, 0.0)
    ledger.cancel(waiting.key)
    out = ledger.take()
    assert isinstance(_failed(out)[waiting.key], TaskCancelledError) and conn.unsent == []
    ledger.state(ACTOR, A.ALIVE, 0, ADDR1, None)
    assert ledger.take() == []  # nothing to send: the cancelled call never leaves
    sent, boxed = _call(retries=-1), _call()
    ledger.call(conn, sent, 1.0)
    ledger.take_box(ADDR1)
    ledger.call(conn, boxed, 1.0 + L.COALESCE_GAP_S / 10)  # still in the outbox
    ledger.take()
    ledger.cancel(boxed.key)
    assert list(_failed(ledger.take())) == [boxed.key] and ledger.take_box(ADDR1) == []
    ledger.cancel(sent.key)
    assert ledger.take() == [(L.CANCEL, A.control_addr(ADDR1), sent.key, False)]
    ledger.cancel(sent.key, interrupt=True)  # the notebook's interrupt: the actor is told so
    assert ledger.take() == [(L.CANCEL, A.control_addr(ADDR1), sent.key, True)]
    ledger.cancel(b"not a call of ours")
    assert ledger.take() == []
    # the actor restarts before it answers: the cancelled call fails, never resent
    ledger.state(ACTOR, A.RESTARTING, 0, None, None)
    err = _failed(ledger.take())[sent.key]
    assert isinstance(err, TaskCancelledError)
    ledger.state(ACTOR, A.ALIVE, 1, ADDR2, None)
    assert ledger.take() == [] and ledger.take_box(ADDR2) == []


def test_the_last_handle_gone_sends_an_exit_request_to_every_incarnation() -> None:
    ledger = CallLedger()
    ledger.handle_created(ACTOR)
    ledger.handle_created(ACTOR)
    ledger.collectable.add(ACTOR)
    conn = _alive(ledger)
    ledger.handle_dropped(ACTOR, 0.0)
    assert ledger.take() == [] and not conn.released  # one handle left
    ledger.handle_dropped(ACTOR, 1.0)
    assert conn.released and (L.SEND, ADDR1) in ledger.take()
    assert ledger.take_box(ADDR1) == [(A.ACTOR_EXIT_REQ, L.RELEASED)]
    ledger.state(ACTOR, A.RESTARTING, 0, None, None)
    ledger.state(ACTOR, A.ALIVE, 1, ADDR2, None)
    assert (L.SEND, ADDR2) in ledger.take()
    assert ledger.take_box(ADDR2) == [(A.ACTOR_EXIT_REQ, L.RELEASED)]


def test_an_escaped_handle_keeps_the_actor() -> None:
    ledger = CallLedger()
    ledger.handle_created(ACTOR)
    ledger.collectable.add(ACTOR)
    conn = _alive(ledger)
    ledger.handle_escaped(ACTOR)
    ledger.handle_dropped(ACTOR, 0.0)
    assert ledger.take() == [] and not conn.released


def test_max_pending_calls_refuses_beyond_the_limit() -> None:
    ledger = CallLedger()
    conn = _alive(ledger)
    conn.max_pending = 2
    calls = [_call(), _call()]
    for c in calls:
        ledger.admit(conn)
        ledger.call(conn, c, 0.0)
    with pytest.raises(PendingCallsLimitExceeded, match="max_pending_calls"):
        ledger.admit(conn)
    ledger.done(ACTOR, [calls[0].key])
    ledger.admit(conn)  # room again
