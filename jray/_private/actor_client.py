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

What to do on each of these events (incarnations, retries, cancels, handle
lifetimes, the outbox) is decided by ``call_ledger.CallLedger``, a state
machine without I/O; this module is its I/O: sockets, the flusher thread, the
core's cache and head queue, applying the ledger's instructions.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, cast

import zmq

from jray._private import actor_protocol as A
from jray._private import call_ledger as L
from jray._private import protocol as P
from jray._private import serialization as S
from jray._private import transport
from jray._private.call_ledger import Call, CallLedger, Conn
from jray._private.core import CoreClient
from jray._private.object_ref import ObjectRef
from jray.exceptions import GetTimeoutError

BATCH_MAX = L.BATCH_MAX
EXPECT_MAX = 4096
FLUSH_DELAY_S = 0.0003
TICK_S = 0.2
#: first interval at which the flusher looks for the head's answer to a lookup (doubling)
LOOKUP_POLL_S = 0.001
REQUEST_TIMEOUT_S = 60.0
RELEASED = L.RELEASED
_now = time.perf_counter
#: a call made this long after the client last read its sockets reads them first
STALE_S = 0.005


def readable(sock: zmq.Socket[bytes]) -> bool:
    """Whether a frame waits on ``sock`` (no system call; ZeroMQ's own state)."""
    return bool(cast(int, sock.getsockopt(zmq.EVENTS)) & zmq.POLLIN)


class ActorClient:
    """Actor calls and actor control of one process (see module docstring)."""

    def __init__(self, core: CoreClient) -> None:
        self.core = core
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.lock = threading.RLock()
        self.ledger = CallLedger()
        self.conns = self.ledger.conns
        self.pushers: dict[str, zmq.Socket[bytes]] = {}
        self.replies: dict[int, tuple[bool, Any]] = {}
        self.req = 0
        self._expect: P.Msg | None = None
        # handles this process dropped (appended from any thread, the GC's included)
        self.dropped: deque[bytes] = deque()
        self.kick = threading.Event()
        self.closed = False
        core.handlers[A.ACTOR_DONE] = self._on_done
        core.handlers[A.ACTOR_STATE] = self._on_state
        core.handlers[A.ACTOR_REPLY] = self._on_reply
        core.before_wait.append(self.flush)
        self.thread = threading.Thread(target=self._flush_loop, name="jray-actor-flush",
                                       daemon=True)
        self.thread.start()

    # --- the ledger's instructions ----------------------------------------------------
    def _apply(self) -> None:
        """Carry out what the ledger decided (this client's lock held; core lock for
        FAIL, which every event that can fail calls holds)."""
        ledger = self.ledger
        while ledger.out:  # (mostly empty: a call in a loop of calls needs nothing)
            for ins in ledger.take():
                kind = ins[0]
                if kind == L.SEND:
                    self._send_box(ins[1])
                elif kind == L.ARM:
                    self.kick.set()
                elif kind == L.FAIL:
                    core = self.core
                    for oid, loc in ins[1]:
                        core._on_object(oid, loc)
                    core.to_head.append((A.ACTOR_CALLS_FAILED, ins[1]))
                    core.flush()
                elif kind == L.FORGET:
                    for a in (ins[1], A.control_addr(ins[1])):
                        sock = self.pushers.pop(a, None)
                        if sock is not None:
                            sock.close(0)
                elif kind == L.CANCEL:
                    # a cancel must arrive before what the caller sends next: its socket's
                    # first send waits for the connection (bounded)
                    try:
                        msg = ((A.ACTOR_CANCEL, [ins[2]], True) if ins[3]
                               else (A.ACTOR_CANCEL, [ins[2]]))
                        transport.send_batch(self._pusher(ins[1], connected_within_ms=1000),
                                             [msg])
                    except zmq.Again:  # the actor is gone: its death fails the call
                        pass

    def _pusher(self, addr: str, connected_within_ms: int = 0) -> zmq.Socket[bytes]:
        sock = self.pushers.get(addr)
        if sock is None:
            sock = self.pushers[addr] = transport.push(
                self.ctx, addr, connected_within_ms=connected_within_ms)
        return sock

    def _send_box(self, addr: str) -> None:
        box = self.ledger.take_box(addr)
        if box:
            transport.send_batch(self._pusher(addr), box)

    # --- connections --------------------------------------------------------------
    def conn(self, actor_id: bytes, subscribed: bool = False) -> Conn:
        """The connection to ``actor_id``; asks the head where it lives the first time."""
        conn = self.conns.get(actor_id)
        if conn is not None:
            return conn
        core = self.core
        with core.lock:
            with self.lock:
                conn, new = self.ledger.connect(actor_id)
            if new and not subscribed:
                core.to_head.append((A.ACTOR_LOOKUP, actor_id))
                core.flush()
        return conn

    # --- calls --------------------------------------------------------------------
    def call(self, actor_id: bytes, method: str, args: tuple[Any, ...],
             kwargs: dict[str, Any], num_returns: int, retries: int,
             max_pending: int = -1) -> list[ObjectRef]:
        core = self.core
        conn = self.conns.get(actor_id) or self.conn(actor_id)
        with core.lock:
            if _now() - core.last_poll > STALE_S:  # the head's news first: an actor that
                core.poll(0)  # died while this process slept gets the call when restarted
            if max_pending >= 0:  # the handle's max_pending_calls: refuse beyond it
                conn.max_pending = max_pending
                if len(conn.inflight) >= max_pending:
                    core.poll(0)  # results that already arrived make room
                with self.lock:
                    self.ledger.admit(conn)
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
            call = Call((A.ACTOR_CALL, method, blob, deps, returns, core.addr, core.ident),
                        returns[0], hold, retries)
            with self.lock:
                self.ledger.call(conn, call, _now())
                self._apply()
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

    def flush(self) -> None:
        if self.ledger.outbox:
            with self.lock:
                for addr in list(self.ledger.outbox):
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
                self.ledger.flushed()
                if self.dropped:
                    self._settle_handles()
                for addr in list(self.ledger.outbox):
                    self._send_box(addr)
                looking = self.ledger.looking()
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
        with self.lock:
            self.ledger.done(actor_id, [oid for oid, _ in results])

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
        with self.lock:
            drain = self.ledger.must_drain(actor_id, state, inc)
        if drain:
            self._drain()
        with self.lock:
            self.ledger.state(actor_id, state, inc, addr, cause)
            self._apply()

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
                    self.ledger.collectable.add(actor_id)
        return actor_id, meta

    def kill(self, actor_id: bytes, no_restart: bool, class_name: str) -> None:
        """Ask the head to kill the actor; with ``no_restart`` it is dead here at once."""
        core = self.core
        with core.lock:
            core.to_head.append((A.ACTOR_KILL, actor_id, no_restart))
            core.flush()
            if no_restart and actor_id in self.conns:
                self._drain()
                with self.lock:
                    self.ledger.killed(actor_id, L.killed_cause(class_name, actor_id))
                    self._apply()

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
                self.ledger.cancel(key, interrupt)
                self._apply()

    # --- handle lifetimes -----------------------------------------------------------
    def handle_created(self, actor_id: bytes) -> None:
        with self.lock:
            self.ledger.handle_created(actor_id)

    def handle_escaped(self, actor_id: bytes) -> None:
        self.ledger.handle_escaped(actor_id)

    def _settle_handles(self) -> None:
        ledger = self.ledger
        while self.dropped:
            ledger.handle_dropped(self.dropped.popleft(), _now())
        self._apply()

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
