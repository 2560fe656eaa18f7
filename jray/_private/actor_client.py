"""Caller side of actors: each process's ``ActorClient`` sends calls straight to actors.

::

    handle.m.remote(x) ──▶ ActorClient.call ──▶ outbox[actor address] ──PUSH (batched)──▶ actor
          │                   └── ACTOR_EXPECT(result ids) ─▶ core.deferred_head ─▶ head
          ▼
      ObjectRef ◀── core cache ◀── ACTOR_DONE(results) ◀── actor (to this process's PULL)
    head ──ACTOR_STATE──▶ core.handlers ──▶ address known / calls lost (retry or fail)

Calls from one process to one actor travel on one PUSH socket, in order.
A call leaves at once (latency), unless it follows the previous call within
``COALESCE_GAP_S`` (a loop of calls): then calls collect in the outbox and
leave together, at ``BATCH_MAX`` calls, when this process blocks in
``get``/``wait`` (``core.before_wait``), or within ``FLUSH_DELAY_S`` (the
flusher thread). The client uses its own ZeroMQ context and sockets, guarded
by its own lock, so the flusher never touches the core's sockets. Lock
order: core lock, then this client's lock.

The head learns of a call's result ids (``ACTOR_EXPECT``) before anything
else this process sends can mention them: the message waits in
``core.deferred_head`` and goes first in the next batch to the head, without
a send of its own (a call-and-get loop does not wake the head at all).

Until the head says where an actor lives, calls wait in ``unsent``; the
flusher thread reads the head's answer itself (polling the core's sockets when
their lock is free, backing off), so calls made on any thread leave promptly,
even while the main thread runs user code. When an actor's process dies,
calls already sent to it are lost: with ``max_task_retries`` left they are
sent again, in order, to the restarted actor; otherwise they fail with the
``ActorDiedError`` the head sent.

``cancel``: a call still here (``unsent`` or in the outbox) fails at once with
``TaskCancelledError``; a call already sent is named in an ``ACTOR_CANCEL`` to
the actor's control socket (the actor drops or interrupts it, and its result
says so); a call whose result is here, or not made by this process, is left
alone. ``force=True`` is refused: that is ``jray.kill``.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, cast

import zmq

from jray._private import actor_protocol as A
from jray._private import protocol as P
from jray._private import serialization as S
from jray._private import transport
from jray._private.actor_calls import resent
from jray._private.core import CoreClient
from jray._private.object_ref import ObjectRef
from jray.exceptions import (
    ActorDiedError,
    GetTimeoutError,
    TaskCancelledError,
)

BATCH_MAX = 64
EXPECT_MAX = 4096
COALESCE_GAP_S = 50e-6
FLUSH_DELAY_S = 0.0003
TICK_S = 0.2
#: first interval at which the flusher looks for the head's answer to a lookup (doubling)
LOOKUP_POLL_S = 0.001
REQUEST_TIMEOUT_S = 60.0
RELEASED = "all handles to it went out of scope"


def readable(sock: zmq.Socket[bytes]) -> bool:
    """Whether a frame waits on ``sock`` (no system call; ZeroMQ's own state)."""
    return bool(cast(int, sock.getsockopt(zmq.EVENTS)) & zmq.POLLIN)


class _Call:
    __slots__ = ("msg", "key", "hold", "retries", "cancelled")

    def __init__(self, msg: P.Msg, key: bytes, hold: list[ObjectRef] | None, retries: int) -> None:
        self.msg = msg
        self.key = key  # first return id; b"" for an exit request
        self.hold = hold  # refs the call needs alive until it is done
        self.retries = retries  # -1: forever
        self.cancelled = False  # jray.cancel() was asked: never send it again


class _Conn:
    """What this process knows about one actor."""

    __slots__ = ("actor_id", "addr", "inc", "dead_upto", "dead", "cause", "unsent",
                 "inflight", "ctor_hold", "released")

    def __init__(self, actor_id: bytes) -> None:
        self.actor_id = actor_id
        self.addr: str | None = None
        self.inc = -1
        self.dead_upto = -1
        self.dead = False
        self.cause: P.Loc | None = None
        self.unsent: list[_Call] = []
        self.inflight: dict[bytes, _Call] = {}
        self.ctor_hold: list[ObjectRef] = []
        self.released = False  # its handles are gone: every incarnation gets an exit request


class ActorClient:
    """Actor calls and actor control of one process (see module docstring)."""

    def __init__(self, core: CoreClient) -> None:
        self.core = core
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.lock = threading.RLock()
        self.conns: dict[bytes, _Conn] = {}
        self.pushers: dict[str, zmq.Socket[bytes]] = {}
        self.outbox: dict[str, list[P.Msg]] = {}
        self.replies: dict[int, tuple[bool, Any]] = {}
        self.req = 0
        self._expect: P.Msg | None = None
        # handle lifetimes: actors this process created that die with their handles
        self.originals: dict[bytes, int] = {}
        self.collectable: set[bytes] = set()
        self.dropped: deque[bytes] = deque()
        self.armed = False
        self.last_call = 0.0
        self.kick = threading.Event()
        self.closed = False
        core.handlers[A.ACTOR_DONE] = self._on_done
        core.handlers[A.ACTOR_STATE] = self._on_state
        core.handlers[A.ACTOR_REPLY] = self._on_reply
        core.before_wait.append(self.flush)
        self.thread = threading.Thread(target=self._flush_loop, name="jray-actor-flush",
                                       daemon=True)
        self.thread.start()

    # --- connections --------------------------------------------------------------
    def conn(self, actor_id: bytes, subscribed: bool = False) -> _Conn:
        """The connection to ``actor_id``; asks the head where it lives the first time."""
        conn = self.conns.get(actor_id)
        if conn is not None:
            return conn
        core = self.core
        with core.lock:
            with self.lock:
                conn = self.conns.get(actor_id)
                if conn is not None:
                    return conn
                conn = self.conns[actor_id] = _Conn(actor_id)
            if not subscribed:
                core.to_head.append((A.ACTOR_LOOKUP, actor_id))
                core.flush()
        return conn

    # --- calls --------------------------------------------------------------------
    def call(self, actor_id: bytes, method: str, args: tuple[Any, ...],
             kwargs: dict[str, Any], num_returns: int, retries: int) -> list[ObjectRef]:
        core = self.core
        conn = self.conns.get(actor_id) or self.conn(actor_id)
        with core.lock:
            if core.rt.events:
                core._settle_refs()
            blob: bytes | None = None
            deps: list[tuple[bytes, P.Loc | None]] | None = None
            hold: list[ObjectRef] | None = None
            urgent = False
            if args or kwargs:
                blob, deps, hold, urgent = self._encode_args(method, args, kwargs)
            tid = core.ids.task_id()
            returns = [A.result_id(tid, i) for i in range(num_returns)]
            core.owned.update(returns)
            core.awaiting.update(returns)
            deferred = core.deferred_head
            exp = self._expect
            if exp is not None and deferred and deferred[-1] is exp:
                exp[1].extend(returns)
            else:
                exp = self._expect = (A.ACTOR_EXPECT, list(returns))
                deferred.append(exp)
            refs = [ObjectRef(oid, core.addr) for oid in returns]
            if urgent or len(exp[1]) >= EXPECT_MAX:
                # the actor will ask the head about refs in the arguments: the head
                # must know them (and the pending results they may be) first
                core.to_head[:0] = deferred
                core.deferred_head = []
                core.flush()
            call = _Call((A.ACTOR_CALL, method, blob, deps, returns, core.addr, core.ident),
                         returns[0], hold, retries)
            with self.lock:
                if conn.dead:
                    self._fail(conn, [call], conn.cause)
                else:
                    self._enqueue(conn, call)
        return refs

    def _encode_args(
        self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[bytes | None, list[tuple[bytes, P.Loc | None]] | None, list[ObjectRef], bool]:
        core = self.core
        cache = core.cache
        deps: list[tuple[bytes, P.Loc | None]] = []
        hold: list[ObjectRef] = []
        urgent = False
        plain: list[Any] = list(args)
        for i, a in enumerate(plain):
            if type(a) is ObjectRef:
                plain[i] = S.ArgRef(len(deps))
                loc = cache.get(a.id)
                urgent = urgent or loc is None
                deps.append((a.id, loc))
                hold.append(a)
        if kwargs:
            kwargs = dict(kwargs)
            for k, v in kwargs.items():
                if type(v) is ObjectRef:
                    kwargs[k] = S.ArgRef(len(deps))
                    loc = cache.get(v.id)
                    urgent = urgent or loc is None
                    deps.append((v.id, loc))
                    hold.append(v)
        blob, stored, nested = core.pickle_args(f"actor method {method}", plain, kwargs)
        if nested:
            urgent = True
            hold.extend(ObjectRef(oid) for oid in nested)
        if stored is not None:
            hold.append(stored)
            deps.insert(0, (stored.id, cache[stored.id]))
        return blob, deps or None, hold, urgent

    def _enqueue(self, conn: _Conn, call: _Call) -> None:
        if call.key:
            conn.inflight[call.key] = call
        addr = conn.addr
        if addr is None:
            conn.unsent.append(call)
            if not self.armed:  # the flusher looks for the head's answer meanwhile
                self.armed = True
                self.kick.set()
            return
        box = self.outbox.get(addr)
        if box is None:
            box = self.outbox[addr] = []
        box.append(call.msg)
        now = time.perf_counter()
        tight = now - self.last_call < COALESCE_GAP_S
        self.last_call = now
        if not tight or len(box) >= BATCH_MAX:
            self._send_box(addr)
        elif not self.armed:
            self.armed = True
            self.kick.set()

    def _send_box(self, addr: str) -> None:
        box = self.outbox.pop(addr, None)
        if not box:
            return
        sock = self.pushers.get(addr)
        if sock is None:
            sock = self.pushers[addr] = transport.push(self.ctx, addr)
        transport.send_batch(sock, box)

    def flush(self) -> None:
        if self.outbox:
            with self.lock:
                for addr in list(self.outbox):
                    self._send_box(addr)

    def _flush_loop(self) -> None:
        wait = TICK_S
        while True:
            kicked = self.kick.wait(wait)
            if self.closed or self.core.closed:
                self.close()
                return
            if kicked:
                time.sleep(FLUSH_DELAY_S)
            with self.lock:
                self.kick.clear()
                self.armed = False
                if self.dropped:
                    self._settle_handles()
                for addr in list(self.outbox):
                    self._send_box(addr)
                looking = any(c.unsent and c.addr is None and not c.dead
                              for c in self.conns.values())
            if not looking:
                wait = TICK_S
                continue
            # calls wait for an actor's address while no thread may be reading the
            # core's sockets (the main thread runs user code): read the answer here
            wait = LOOKUP_POLL_S if kicked else min(TICK_S, wait * 2)
            core = self.core
            if core.lock.acquire(blocking=False):
                try:
                    if not core.closed:
                        core.poll(0)
                finally:
                    core.lock.release()

    # --- messages from the head and from actors (run inside core.poll) -------------
    def _on_done(self, msg: P.Msg) -> None:
        _, actor_id, results = msg
        on_object = self.core._on_object
        for oid, loc in results:
            on_object(oid, loc)
        conn = self.conns.get(actor_id)
        if conn is not None:
            with self.lock:
                pop = conn.inflight.pop
                for oid, _ in results:
                    pop(oid, None)

    def _on_reply(self, msg: P.Msg) -> None:
        self.replies[msg[1]] = (msg[2], msg[3])

    def _drain(self) -> None:
        """Process results that already arrived, before calls are declared lost."""
        core = self.core
        sock = core.pull
        while readable(sock):
            core._process(P.unpack(sock.recv()))

    def _on_state(self, msg: P.Msg) -> None:
        _, actor_id, state, inc, addr, cause = msg
        conn = self.conns.get(actor_id)
        if conn is None:  # a reply to get_actor / get_if_exists: it comes with the state
            with self.lock:
                conn = self.conns.setdefault(actor_id, _Conn(actor_id))
        if state != A.ALIVE or (conn.addr is not None and inc > conn.inc):
            self._drain()
        with self.lock:
            if state == A.ALIVE:
                if inc <= conn.dead_upto or inc < conn.inc or conn.dead:
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
                    self._send_box(addr)
            elif state == A.RESTARTING:
                if inc < conn.inc or conn.dead:
                    return
                conn.dead_upto = max(conn.dead_upto, inc)
                conn.cause = cause
                if conn.addr is not None:
                    self._lost(conn, cause)
            elif state == A.DEAD:
                if conn.dead:
                    return
                conn.dead = True
                conn.cause = cause
                self._forget_addr(conn)
                calls = list(conn.inflight.values())
                conn.unsent = []
                self._fail(conn, calls, cause)
                conn.ctor_hold = []

    def _forget_addr(self, conn: _Conn) -> None:
        addr = conn.addr
        conn.addr = None
        if addr is not None:
            self.outbox.pop(addr, None)
            for a in (addr, A.control_addr(addr)):
                sock = self.pushers.pop(a, None)
                if sock is not None:
                    sock.close(0)

    def _lost(self, conn: _Conn, cause: P.Loc | None) -> None:
        """Calls sent to an incarnation that died: send again (retries left) or fail."""
        self._forget_addr(conn)
        waiting = {id(c) for c in conn.unsent}
        again: list[_Call] = []
        failed: list[_Call] = []
        cancelled: list[_Call] = []
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
            self._fail(conn, cancelled, _cancelled_loc())
        conn.unsent = again + conn.unsent

    def _fail(self, conn: _Conn, calls: list[_Call], cause: P.Loc | None) -> None:
        if cause is None:
            cause = S.error_loc(ActorDiedError(f"actor {conn.actor_id.hex()[:12]} is dead"))
        core = self.core
        failed: list[tuple[bytes, P.Loc]] = []
        for call in calls:
            if not call.key:
                continue
            conn.inflight.pop(call.key, None)
            for oid in call.msg[A.C_RETURNS]:
                core._on_object(oid, cause)
                failed.append((oid, cause))
        if failed:
            core.to_head.append((A.ACTOR_CALLS_FAILED, failed))
            core.flush()

    # --- control ------------------------------------------------------------------
    def request(self, build: Callable[[int], P.Msg], timeout: float = REQUEST_TIMEOUT_S
                ) -> tuple[bool, Any]:
        """Send ``build(request_id)`` to the head and wait for its ACTOR_REPLY."""
        core = self.core
        with core.lock:
            self.req += 1
            req = self.req
            core.to_head.append(build(req))
            core.flush()
            deadline = time.monotonic() + timeout
            while req not in self.replies:
                if time.monotonic() > deadline:
                    raise GetTimeoutError(
                        f"the head did not answer an actor request in {timeout} s")
                if not core.poll(100) and core.check_alive is not None:
                    core.check_alive()
            return self.replies.pop(req)

    def create(self, spec: A.ActorSpec, ctor_hold: list[ObjectRef], collectable: bool
               ) -> tuple[bytes, A.ActorMeta]:
        """Ask the head to create an actor; named ones wait for the head's answer."""
        if spec["name"] is not None:
            ok, payload = self.request(lambda req: (A.ACTOR_CREATE, spec, req))
            if not ok:
                raise ValueError(payload)
            actor_id, meta = payload
        else:
            core = self.core
            with core.lock:
                core.to_head.append((A.ACTOR_CREATE, spec, 0))
                core.flush()
            actor_id, meta = spec["actor_id"], spec["meta"]
        conn = self.conn(actor_id, subscribed=True)
        if actor_id == spec["actor_id"]:
            conn.ctor_hold = ctor_hold
            if collectable:
                with self.lock:
                    self.collectable.add(actor_id)
        return actor_id, meta

    def kill(self, actor_id: bytes, no_restart: bool, class_name: str) -> None:
        """Ask the head to kill the actor; with ``no_restart`` it is dead here at once."""
        core = self.core
        with core.lock:
            core.to_head.append((A.ACTOR_KILL, actor_id, no_restart))
            core.flush()
            conn = self.conns.get(actor_id)
            if no_restart and conn is not None:
                cause = S.error_loc(ActorDiedError(
                    f"actor {class_name} ({actor_id.hex()[:12]}) was killed by jray.kill()"))
                self._drain()
                with self.lock:
                    if not conn.dead:
                        conn.dead = True
                        conn.cause = cause
                        self._forget_addr(conn)
                        conn.unsent = []
                        self._fail(conn, list(conn.inflight.values()), cause)

    def cancel(self, oid: bytes, force: bool, interrupt: bool = False) -> None:
        """Cancel the call of this process that returns ``oid`` (see module docstring);
        ``interrupt``: a running call is interrupted, not only told (``api.interrupt``)."""
        if force:
            raise ValueError(
                "jray.cancel(): force=True is not supported for actor calls: use "
                "jray.kill(actor) to stop the actor's process")
        key = A.call_key(oid)
        core = self.core
        with core.lock:
            if oid in core.cache:
                return  # finished
            with self.lock:
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
                                self._fail(conn, [call], _cancelled_loc())
                                return
                if conn.addr is None:
                    return  # sent to an incarnation that died: _lost fails it
                ctl = A.control_addr(conn.addr)
                sock = self.pushers.get(ctl)
                if sock is None:
                    # a cancel must arrive before what the caller sends next
                    sock = self.pushers[ctl] = transport.push(
                        self.ctx, ctl, connected_within_ms=1000)
                try:
                    msg = (A.ACTOR_CANCEL, [key], True) if interrupt else (A.ACTOR_CANCEL, [key])
                    transport.send_batch(sock, [msg])
                except zmq.Again:  # the actor is gone: its death fails the call
                    pass

    # --- handle lifetimes -----------------------------------------------------------
    def handle_created(self, actor_id: bytes) -> None:
        with self.lock:
            self.originals[actor_id] = self.originals.get(actor_id, 0) + 1

    def handle_escaped(self, actor_id: bytes) -> None:
        self.collectable.discard(actor_id)

    def _settle_handles(self) -> None:
        while self.dropped:
            actor_id = self.dropped.popleft()
            n = self.originals.get(actor_id, 0) - 1
            if n > 0:
                self.originals[actor_id] = n
                continue
            self.originals.pop(actor_id, None)
            if actor_id not in self.collectable:
                continue
            self.collectable.discard(actor_id)
            conn = self.conns.get(actor_id)
            if conn is not None and not conn.dead:
                conn.released = True
                self._enqueue(conn, _Call((A.ACTOR_EXIT_REQ, RELEASED), b"", None, 0))
                if conn.addr is not None:
                    self._send_box(conn.addr)

    def close(self) -> None:
        with self.lock:
            if self.ctx.closed:
                return
            self.closed = True
            self.kick.set()
            for sock in self.pushers.values():
                sock.close(0)
            self.pushers.clear()
            self.ctx.term()


def _cancelled_loc() -> P.Loc:
    return S.error_loc(TaskCancelledError("actor call cancelled by jray.cancel()"))


_instance: ActorClient | None = None
_instance_lock = threading.Lock()


def current() -> ActorClient:
    """This process's ActorClient, made for the current session (``init`` if needed)."""
    global _instance
    from jray._private import api

    core = api.client()
    inst = _instance
    if inst is not None and inst.core is core:
        return inst
    with _instance_lock:
        inst = _instance
        if inst is None or inst.core is not core:
            if inst is not None:
                inst.close()
            inst = _instance = ActorClient(core)
    return inst
