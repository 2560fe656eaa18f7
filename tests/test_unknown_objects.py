"""Lookups of objects the head has not heard of yet (``unknown_objects``), as a state
machine: no process. A ref returned by a task reaches its owner before the head has
read the inner object's record; the lookup must wait for it, bounded."""

from __future__ import annotations

import pickle

from test_scheduler import DRIVER, Head, _executes

from jray._private import protocol as P
from jray._private import serialization as S
from jray._private.unknown_objects import UNKNOWN_WAIT_S
from jray.exceptions import ObjectLostError

WORKER_PUT = b"w-maker-"  # the process that made the object (its record is late)


def _ready(out: dict[bytes, list[P.Msg]], to: bytes) -> dict[bytes, P.Loc]:
    return {m[1]: m[2] for m in out.get(to, []) if m[0] == P.OBJECT_READY}


def _clock(h: Head) -> list[float]:
    now = [100.0]
    h.sched.unknown.clock = lambda: now[0]
    return now


def _lost(loc: P.Loc) -> str:
    assert loc[0] == P.LOC_ERROR, loc
    try:
        S.decode(loc)
    except ObjectLostError as exc:
        return str(exc)
    raise AssertionError(f"not an ObjectLostError: {loc}")


def test_a_subscription_to_an_object_not_yet_recorded_waits_for_its_record() -> None:
    h = Head()
    oid = P.IdGen().put_id()
    out = h.send(DRIVER, (P.SUBSCRIBE, [oid]))
    assert oid not in _ready(out, DRIVER)  # no "lost" answer: it may be on its way
    loc = (P.LOC_INLINE, pickle.dumps(42))
    out = h.send(WORKER_PUT, (P.PUT, oid, loc, []))
    assert _ready(out, DRIVER) == {oid: loc}
    assert not h.sched.unknown.subs


def test_a_subscription_to_an_object_that_never_comes_fails_after_the_wait() -> None:
    h = Head()
    now = _clock(h)
    oid = P.IdGen().put_id()
    h.send(DRIVER, (P.SUBSCRIBE, [oid]))
    now[0] += UNKNOWN_WAIT_S / 2
    h.sched.unknown.retry(expire=True)
    assert oid not in _ready(h.sched.take_outbox(), DRIVER)  # not yet
    now[0] += UNKNOWN_WAIT_S
    h.sched.unknown.retry(expire=True)
    assert oid.hex() in _lost(_ready(h.sched.take_outbox(), DRIVER)[oid])


def test_a_freed_object_is_lost_at_once() -> None:
    h = Head()
    oid = P.IdGen().put_id()
    h.send(DRIVER, (P.PUT, oid, (P.LOC_INLINE, pickle.dumps(1)), []))
    h.send(DRIVER, (P.FREE, [oid]))
    assert oid not in h.sched.objects
    out = h.send(DRIVER, (P.SUBSCRIBE, [oid]))
    assert "freed" in _lost(_ready(out, DRIVER)[oid])


def test_a_task_whose_argument_is_not_yet_recorded_runs_once_it_is() -> None:
    h = Head()
    w = h.worker()
    oid = P.IdGen().put_id()
    tid, out = h.submit(deps=(oid,))
    assert not _executes(out) and h.state(tid) == "waiting"
    out = h.send(WORKER_PUT, (P.PUT, oid, (P.LOC_INLINE, pickle.dumps(3)), []))
    assert _executes(out) == {w: [tid]}
    assert h.sched.objects[oid].pins == 1  # pinned while the task runs, as any argument


def test_a_task_whose_argument_never_comes_fails_naming_it() -> None:
    h = Head()
    h.worker()
    now = _clock(h)
    oid = P.IdGen().put_id()
    tid, _ = h.submit(deps=(oid,))
    now[0] += UNKNOWN_WAIT_S + 1
    h.sched.unknown.retry(expire=True)
    assert h.state(tid) == "failed"
    assert oid.hex() in _lost(h.sched.objects[P.return_id(tid, 0)].loc)  # type: ignore[arg-type]
    h.sched.validate()


def test_a_cancelled_parked_task_stays_cancelled() -> None:
    h = Head()
    w = h.worker()
    oid = P.IdGen().put_id()
    tid, _ = h.submit(deps=(oid,))
    h.send(DRIVER, (P.CANCEL, P.return_id(tid, 0), False, False))
    out = h.send(WORKER_PUT, (P.PUT, oid, (P.LOC_INLINE, pickle.dumps(3)), []))
    assert w not in _executes(out) and h.state(tid) in ("cancelled", "failed")
    assert not h.sched.unknown.tasks


def test_an_argument_made_by_a_known_task_is_not_unknown() -> None:
    h = Head()
    h.worker()
    first, _ = h.submit()
    second, _ = h.submit(deps=(P.return_id(first, 0),))
    assert not h.sched.unknown.tasks and h.sched.tasks[second].waiting == 1


def test_a_borrow_that_overtakes_the_objects_record_is_counted() -> None:
    h = Head()
    oid = P.IdGen().put_id()
    h.send(DRIVER, (P.BORROW, [oid]))  # the driver got the ref straight from a task
    h.send(WORKER_PUT, (P.PUT, oid, (P.LOC_INLINE, pickle.dumps(1)), []), (P.FREE, [oid]))
    assert h.sched.objects[oid].holders == 1  # its maker let go; the borrower has it
    h.send(DRIVER, (P.UNBORROW, [oid]))
    assert oid not in h.sched.objects and not h.sched.unknown.borrows


def test_borrows_of_objects_that_never_come_are_forgotten() -> None:
    h = Head()
    now = _clock(h)
    oid = P.IdGen().put_id()
    h.send(DRIVER, (P.BORROW, [oid]))
    now[0] += UNKNOWN_WAIT_S + 1
    h.sched.unknown.retry(expire=True)
    assert not h.sched.unknown.borrows
