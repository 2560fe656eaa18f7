"""The caller's bookkeeping of actor calls, as a state machine without I/O.

The sibling of ``ledger.LeaseLedger`` (leased tasks): both take events as
method calls, with the time as an argument where it matters, and hand out
instructions through ``take()``; the client (``actor_client``) does the I/O.
What ``CallLedger`` knows, per actor: where its current incarnation listens,
which incarnations are known dead, the calls not sent yet (address unknown),
the calls in flight (sent, no result yet), and the per-address outbox of calls
waiting to leave together. And per process: the handles this process created
(an unnamed actor gets an exit request when the last of them is gone and none
escaped).

Events:

- ``connect(actor_id)``: a connection; True when new (the client asks the head
  where the actor lives);
- ``admit(conn)``: a call is about to be made: refused with
  ``PendingCallsLimitExceeded`` if ``max_pending_calls`` calls are in flight;
- ``call(conn, call, now)``: a call was made (a call on a dead actor fails);
- ``done(actor_id, oids)``: results arrived;
- ``state(actor_id, state, inc, addr, cause)``: the head's news of an
  incarnation (``ALIVE`` at an address, ``RESTARTING``, ``DEAD``);
- ``killed(actor_id, cause)``: this process killed it for good;
- ``cancel(key)``: ``jray.cancel`` of a call of this process;
- ``handle_created`` / ``handle_escaped`` / ``handle_dropped(actor_id, now)``.

Instructions (tuples, first field the kind):

- ``(SEND, addr)``: send the outbox of ``addr`` now (``take_box``);
- ``(ARM,)``: the flusher must run soon (calls coalesce, or wait for an address);
  once until ``flushed()`` says it ran;
- ``(FAIL, [(oid, loc), ...])``: these results are errors: store them here
  and tell the head (``ACTOR_CALLS_FAILED``);
- ``(FORGET, addr)``: the incarnation at ``addr`` is gone: close its sockets;
- ``(CANCEL, addr, key, interrupt)``: send ``ACTOR_CANCEL`` of ``key`` to the actor's control
  socket at ``addr``.

A call sent to an incarnation that dies is sent again, in order and ahead of
the calls that never left, to the next incarnation while it has retries left
(``retries`` -1: forever), else it fails with the head's cause. A cancelled call
is never sent again.
"""

from __future__ import annotations

from typing import Any

from jray._private import actor_protocol as A
from jray._private import protocol as P
from jray._private import serialization as S
from jray._private.actor_calls import resent
from jray._private.ledger import Ledger
from jray.exceptions import ActorDiedError, PendingCallsLimitExceeded, TaskCancelledError

#: calls within this gap of the previous one coalesce (a loop of calls)
COALESCE_GAP_S = 50e-6
#: a coalescing outbox leaves at this many calls
BATCH_MAX = 64
RELEASED = "all handles to it went out of scope"

SEND, ARM, FAIL, FORGET, CANCEL = "send", "arm", "fail", "forget", "cancel"
Instr = tuple[Any, ...]


class Call:
    """One call (or exit request, ``key`` b"") this process made."""

    __slots__ = ("msg", "key", "hold", "retries", "cancelled")

    def __init__(self, msg: P.Msg, key: bytes, hold: object, retries: int) -> None:
        self.msg = msg
        self.key = key  # first return id; b"" for an exit request
        self.hold = hold  # what the call needs alive until it is done (the args' refs)
        self.retries = retries  # -1: forever
        self.cancelled = False  # jray.cancel() was asked: never send it again

    def returns(self) -> list[bytes]:
        return list(self.msg[A.C_RETURNS]) if self.key else []


class Conn:
    """What this process knows about one actor."""

    __slots__ = ("actor_id", "addr", "inc", "dead_upto", "dead", "cause", "unsent",
                 "inflight", "ctor_hold", "released", "max_pending")

    def __init__(self, actor_id: bytes) -> None:
        self.actor_id = actor_id
        self.addr: str | None = None
        self.inc = -1
        self.dead_upto = -1
        self.dead = False
        self.cause: P.Loc | None = None
        self.unsent: list[Call] = []
        self.inflight: dict[bytes, Call] = {}
        self.ctor_hold: object = None
        self.released = False  # its handles are gone: every incarnation gets an exit request
        self.max_pending = -1  # max_pending_calls of the handle (-1: no limit)


def cancelled_loc() -> P.Loc:
    return S.error_loc(TaskCancelledError("actor call cancelled by jray.cancel()"))


def killed_cause(class_name: str, actor_id: bytes) -> P.Loc:
    """The error of calls on an actor this process killed (Ray's sentence first)."""
    return S.error_loc(ActorDiedError(
        f"The actor is dead because it was killed by `ray.kill`: actor {class_name} "
        f"({actor_id.hex()[:12]}) was killed by jray.kill()"))


class CallLedger(Ledger[Instr]):
    """Actor calls of one process (see module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.conns: dict[bytes, Conn] = {}
        self.outbox: dict[str, list[P.Msg]] = {}
        self.last_call = 0.0
        #: an ARM is out and the flusher has not run since (``flushed()``)
        self.armed = False
        self.originals: dict[bytes, int] = {}
        self.collectable: set[bytes] = set()

    # --- events -------------------------------------------------------------------
    def connect(self, actor_id: bytes) -> tuple[Conn, bool]:
        conn = self.conns.get(actor_id)
        if conn is not None:
            return conn, False
        conn = self.conns[actor_id] = Conn(actor_id)
        return conn, True

    def admit(self, conn: Conn) -> None:
        """Refuse a call beyond ``max_pending_calls`` (before the call takes any id)."""
        if 0 <= conn.max_pending <= len(conn.inflight):
            raise PendingCallsLimitExceeded(
                f"actor {conn.actor_id.hex()[:12]} has {len(conn.inflight)} calls pending, "
                f"its max_pending_calls ({conn.max_pending}): wait for some results first")

    def call(self, conn: Conn, call: Call, now: float) -> None:
        if conn.dead:
            self._fail(conn, [call], conn.cause)
            return
        self._enqueue(conn, call, now)

    def done(self, actor_id: bytes, oids: list[bytes]) -> None:
        conn = self.conns.get(actor_id)
        if conn is not None:
            pop = conn.inflight.pop
            for oid in oids:
                pop(oid, None)

    def must_drain(self, actor_id: bytes, state: str, inc: int) -> bool:
        """Whether results that already arrived must be read before ``state`` (a death
        or a new incarnation declares the calls still in flight lost)."""
        conn = self.conns.get(actor_id)
        return state != A.ALIVE or (conn is not None and conn.addr is not None
                                    and inc > conn.inc)

    def state(self, actor_id: bytes, state: str, inc: int, addr: str | None,
              cause: P.Loc | None) -> None:
        conn = self.conns.get(actor_id)
        if conn is None:  # a reply to get_actor / get_if_exists comes with the state
            conn = self.conns[actor_id] = Conn(actor_id)
        if state == A.ALIVE:
            if inc <= conn.dead_upto or inc < conn.inc or conn.dead or addr is None:
                return
            if conn.addr is not None and inc > conn.inc:
                self._lost(conn, None)
            conn.inc, conn.addr, conn.cause = inc, addr, None
            unsent, conn.unsent = conn.unsent, []
            msgs = [c.msg for c in unsent]
            if conn.released and not any(m[0] == A.ACTOR_EXIT_REQ for m in msgs):
                msgs.append((A.ACTOR_EXIT_REQ, RELEASED))
            if msgs:
                self.outbox.setdefault(addr, []).extend(msgs)
                self.out.append((SEND, addr))
        elif state == A.RESTARTING:
            if inc < conn.inc or conn.dead:
                return
            conn.dead_upto = max(conn.dead_upto, inc)
            conn.cause = cause
            if conn.addr is not None:
                self._lost(conn, cause)
        elif state == A.DEAD:
            if self._die(conn, cause):
                conn.ctor_hold = None

    def killed(self, actor_id: bytes, cause: P.Loc) -> None:
        conn = self.conns.get(actor_id)
        if conn is not None:
            self._die(conn, cause)

    def cancel(self, key: bytes, interrupt: bool = False) -> None:
        """Cancel the call ``key``; ``interrupt``: the actor interrupts it if it runs."""
        for conn in self.conns.values():
            call = conn.inflight.get(key)
            if call is not None:
                break
        else:
            return  # finished, or not a call of this process
        call.cancelled = True
        box = self.outbox.get(conn.addr) if conn.addr is not None else None
        for queue in (conn.unsent, box):
            if queue is not None:
                for i, item in enumerate(queue):
                    if item is call or item is call.msg:
                        del queue[i]
                        self._fail(conn, [call], cancelled_loc())
                        return
        if conn.addr is not None:  # else: sent to an incarnation that died; _lost fails it
            self.out.append((CANCEL, A.control_addr(conn.addr), key, interrupt))

    def handle_created(self, actor_id: bytes) -> None:
        self.originals[actor_id] = self.originals.get(actor_id, 0) + 1

    def handle_escaped(self, actor_id: bytes) -> None:
        self.collectable.discard(actor_id)

    def handle_dropped(self, actor_id: bytes, now: float) -> None:
        n = self.originals.get(actor_id, 0) - 1
        if n > 0:
            self.originals[actor_id] = n
            return
        self.originals.pop(actor_id, None)
        if actor_id not in self.collectable:
            return
        self.collectable.discard(actor_id)
        conn = self.conns.get(actor_id)
        if conn is not None and not conn.dead:
            conn.released = True
            self._enqueue(conn, Call((A.ACTOR_EXIT_REQ, RELEASED), b"", None, 0), now)
            if conn.addr is not None:
                self.out.append((SEND, conn.addr))

    def flushed(self) -> None:
        """The flusher ran: the next call that must wait for it arms it again."""
        self.armed = False

    # --- queries ------------------------------------------------------------------
    def take_box(self, addr: str) -> list[P.Msg]:
        return self.outbox.pop(addr, None) or []

    def looking(self) -> bool:
        """Whether calls wait for an actor's address (the flusher reads the head's answer)."""
        return any(c.unsent and c.addr is None and not c.dead for c in self.conns.values())

    # --- internals ----------------------------------------------------------------
    def _enqueue(self, conn: Conn, call: Call, now: float) -> None:
        if call.key:
            conn.inflight[call.key] = call
        addr = conn.addr
        if addr is None:
            conn.unsent.append(call)
            self._arm()  # the flusher looks for the head's answer meanwhile
            return
        box = self.outbox.get(addr)
        if box is None:
            box = self.outbox[addr] = []
        box.append(call.msg)
        tight = now - self.last_call < COALESCE_GAP_S
        self.last_call = now
        if not tight or len(box) >= BATCH_MAX:
            self.out.append((SEND, addr))
        else:
            self._arm()

    def _arm(self) -> None:
        if not self.armed:
            self.armed = True
            self.out.append((ARM,))

    def _die(self, conn: Conn, cause: P.Loc | None) -> bool:
        if conn.dead:
            return False
        conn.dead = True
        conn.cause = cause
        self._forget_addr(conn)
        calls = list(conn.inflight.values())
        conn.unsent = []
        self._fail(conn, calls, cause)
        return True

    def _forget_addr(self, conn: Conn) -> None:
        addr = conn.addr
        conn.addr = None
        if addr is not None:
            self.outbox.pop(addr, None)
            self.out.append((FORGET, addr))

    def _lost(self, conn: Conn, cause: P.Loc | None) -> None:
        """Calls sent to an incarnation that died: send again (retries left) or fail."""
        self._forget_addr(conn)
        waiting = {id(c) for c in conn.unsent}
        again: list[Call] = []
        failed: list[Call] = []
        cancelled: list[Call] = []
        for call in conn.inflight.values():
            if id(call) in waiting:
                continue
            if call.cancelled:
                cancelled.append(call)
            elif call.retries != 0:
                if call.retries > 0:
                    call.retries -= 1
                    call.msg = resent(call.msg, call.retries)
                again.append(call)
            else:
                failed.append(call)
        if failed:
            if cause is None:
                cause = S.error_loc(ActorDiedError(
                    f"actor {conn.actor_id.hex()[:12]} restarted while the call was in flight "
                    f"(max_task_retries=0)"))
            self._fail(conn, failed, cause)
        if cancelled:
            self._fail(conn, cancelled, cancelled_loc())
        conn.unsent = again + conn.unsent

    def _fail(self, conn: Conn, calls: list[Call], cause: P.Loc | None) -> None:
        if cause is None:
            cause = S.error_loc(ActorDiedError(f"actor {conn.actor_id.hex()[:12]} is dead"))
        failed: list[tuple[bytes, P.Loc]] = []
        for call in calls:
            if not call.key:
                continue
            conn.inflight.pop(call.key, None)
            failed.extend((oid, cause) for oid in call.returns())
        if failed:
            self.out.append((FAIL, failed))
