"""The per-process client core: submit, put, get, wait, cancel, state queries.

Every process that uses the API has exactly one ``CoreClient``: the driver
(a notebook kernel or a script) and each worker (for nested tasks). Data flow
of one task::

    owner ──SUBMIT──▶ head ──EXECUTE──▶ worker
      ▲                 ▲                 │
      │                 └────TASK_DONE────┤   (batched)
      └──────────OBJECT_READY (direct)────┘

Results go from the worker straight to the owner's PULL socket and, in the
same breath, to the head (which keeps the object table and feeds dependent
tasks). Values the owner holds are decoded locally with no round trip.
The client is not re-entrant across threads: one lock guards its sockets.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import zmq

from jray import exceptions as E
from jray._private import flusher, shm, task_output, transport, waiting
from jray._private import protocol as P
from jray._private import serialization as S
from jray._private.debug import HIDE
from jray._private.flusher import LAZY_S
from jray._private.lease_client import LeaseClient
from jray._private.object_ref import ObjectRef, set_ref_counter
from jray._private.refcount import RefTable
from jray.exceptions import GetTimeoutError, JrayError, ObjectLostError, SerializationError

NOBLOCK = int(zmq.NOBLOCK)
FREE_BATCH = 256
COALESCE_GAP_S = 50e-6
COALESCE_MAX = 128
#: The longest a writer waits for the head to grant room in the store (it may spill).
RESERVE_TIMEOUT_S = 120.0
#: how many nested tasks' output routes a worker keeps
ROUTES_KEPT = 4096
#: Tag of the tasks submitted from now on (the notebook layer sets a cell's
#: ``(cell_id, execution_count)`` while the cell runs); the views show it.
task_tag: Any = None


class CoreClient:
    """Sockets and local object cache of one process (see module docstring)."""

    def __init__(
        self,
        head_addr: str,
        session_dir: str,
        node_id: bytes,
        shm_prefix: str,
        ident: bytes,
        is_worker: bool = False,
        check_alive: Callable[[], None] | None = None,
    ) -> None:
        shm.use_session(session_dir)  # the key that authenticates segment headers
        self.ctx = transport.new_context()
        self.ident = ident
        self.head = transport.dealer(self.ctx, head_addr, ident)
        self.pull, self.addr = transport.bound_pull(self.ctx, session_dir, ident.hex() + ".sock")
        self.node_id = node_id
        self.shm_prefix = shm_prefix
        self.is_worker = is_worker
        self.check_alive = check_alive
        self.ids = P.IdGen()
        self.lock = threading.RLock()
        self.poller = zmq.Poller()
        self.poller.register(self.head, zmq.POLLIN)
        self.poller.register(self.pull, zmq.POLLIN)
        # objects
        self.cache: dict[bytes, P.Loc] = {}
        self.rt = RefTable()
        self.owned = self.rt.owned
        self.local_only: set[bytes] = set()
        self.awaiting: set[bytes] = set()
        #: objects fetched by location rather than by a held ref (a worker's arguments)
        self.wanted: set[bytes] = set()
        self.pending_free: list[bytes] = []
        # outgoing
        self.to_head: list[P.Msg] = []
        self.to_owner: dict[str, list[P.Msg]] = {}
        self.pushers: dict[str, zmq.Socket[bytes]] = {}
        #: code sent to the head, by function id (a lease's worker gets it from here)
        self.functions_sent: dict[bytes, bytes] = {}
        #: a worker blocked in ``get`` (its queue lives in ``worker.TaskQueue``, which
        #: sets ``on_block``: it gives back the ids of the tasks it had queued)
        self.blocked = False
        self.on_block: Callable[[], list[bytes]] | None = None
        #: messages for the head that may wait up to LAZY_S (leased tasks' records),
        #: sent before anything sent to the head after them
        self.lazy_head: list[P.Msg] = []
        self.lazy_since = 0.0
        self.state_replies: dict[int, Any] = {}
        self._req = 0
        self.closed = False
        #: when this client last read its sockets (news of the cluster may wait there)
        self.last_poll = 0.0
        #: handlers of extension ops (actors), called as ``handler(msg)``
        self.handlers: dict[int, Callable[[P.Msg], None]] = {}
        #: called before this process blocks waiting for objects (actors send queued calls)
        self.before_wait: list[Callable[[], None]] = []
        #: called before a task is submitted (a worker sends the output its task printed
        #: so far, so that it reaches the driver before that of the tasks it starts)
        self.before_submit: Callable[[], None] | None = None
        #: messages the head must see before anything sent after them, but that do not
        #: warrant a send of their own (actor calls' pending results): they go first in
        #: the next batch to the head
        self.deferred_head: list[P.Msg] = []
        # Task output (print) goes to the driver's output socket, read by its own
        # thread so that it shows while the driver does something else.
        self.output_addr = ""
        #: a worker: where the output of the task it runs now goes. The tasks that task
        #: starts send theirs to this worker, which passes it on (``forward_output``)
        #: on the socket its own output takes: one ordered stream however deep it nests
        self.task_output = ""
        #: nested tasks' ids -> where their output goes on (the newest ROUTES_KEPT)
        self.output_routes: dict[bytes, str] = {}
        #: the task this worker runs now (its nested tasks name it as their parent)
        self.running_task: bytes | None = None
        self._output_thread: threading.Thread | None = None
        self._output_stop = threading.Event()
        self._flusher: threading.Thread | None = None
        self._kick = threading.Event()
        self._last_submit = 0.0
        self.leasing: LeaseClient | None = None
        if not is_worker:
            self.leasing = LeaseClient(self)
            out_sock, self.output_addr = transport.bound_pull(self.ctx, session_dir,
                                                              ident.hex() + ".out.sock")
            self._output_bound = self.output_addr  # (log_to_driver=False clears the other)
            self._output_thread = threading.Thread(
                target=task_output.output_loop, args=(out_sock, self._output_stop),
                name="jray-output", daemon=True,
            )
            self._output_thread.start()
            self._flusher = threading.Thread(target=flusher.flush_loop, args=(self,),
                                             name="jray-flush", daemon=True)
            self._flusher.start()
        set_ref_counter(self)

    # --- reference counting (called from ObjectRef) -------------------------------
    # Counts change anywhere (even in __del__ during GC); ``_settle_refs`` applies
    # them under the lock and tells the head (see ``refcount``).
    def incref(self, oid: bytes) -> None:
        self.rt.events.append((oid, 1))

    def decref(self, oid: bytes) -> None:
        self.rt.events.append((oid, -1))

    def escaped(self, oid: bytes) -> None:
        self.rt.serialized(oid)
        if oid in self.local_only:
            self._register(oid)

    def _register(self, oid: bytes, contained: list[bytes] | None = None) -> None:
        self.local_only.discard(oid)
        self.to_head.append((P.PUT, oid, self.cache[oid], contained or []))

    def _settle_refs(self) -> None:
        borrowed, unborrowed, released = self.rt.settle()
        if borrowed:
            self.to_head.append((P.BORROW, borrowed))
        if unborrowed:
            for oid in unborrowed:
                self.cache.pop(oid, None)
            self.to_head.append((P.UNBORROW, unborrowed))
        for oid in released:
            loc = self.cache.pop(oid, None)
            self.awaiting.discard(oid)
            if oid in self.local_only:
                self.local_only.discard(oid)
            elif loc is not None and (loc[0] == P.LOC_SHM or loc[0] == P.LOC_VIEW):
                self.to_head.append((P.FREE, [oid]))  # big: free it now, not in a batch
            else:
                self.pending_free.append(oid)
        if len(self.pending_free) >= FREE_BATCH:
            self.to_head.append((P.FREE, self.pending_free))
            self.pending_free = []

    def release_pending(self) -> None:
        """Send the batched FREEs now (at idle points)."""
        if self.pending_free:
            self.to_head.append((P.FREE, self.pending_free))
            self.pending_free = []

    # --- sending ------------------------------------------------------------------
    def _flush_soon(self) -> None:
        """Send now, unless submissions come in a tight loop: then batch them.

        A submit that follows the previous one within ``COALESCE_GAP_S`` waits in
        ``to_head``; the flusher thread sends the batch within ``COALESCE_DELAY_S``
        (or the main thread does, at ``COALESCE_MAX`` messages or its next call).
        """
        now = time.perf_counter()
        tight = now - self._last_submit < COALESCE_GAP_S
        self._last_submit = now
        if not tight or self._flusher is None or len(self.to_head) >= COALESCE_MAX:
            self.flush()
        elif not self._kick.is_set():
            self._kick.set()

    def flush(self, lazy: bool = False) -> None:
        """Send what is queued; the lazy messages for the head only with others, or
        when ``lazy`` (the flusher, LAZY_S after the first of them)."""
        if self.to_head or (lazy and self.lazy_head
                            and time.perf_counter() - self.lazy_since >= LAZY_S):
            if self.deferred_head or self.lazy_head:  # they ride along, first
                self.to_head[:0] = self.deferred_head + self.lazy_head
                self.deferred_head = []
                self.lazy_head = []
            batch, self.to_head = self.to_head, []
            transport.send_batch(self.head, batch)
        if self.to_owner:
            self.flush_owners()

    def lazy(self, msg: P.Msg) -> None:
        """Queue ``msg`` for the head; it may wait up to LAZY_S for company."""
        if self.to_head:  # something goes soon anyway: keep the order, go with it
            self.to_head.append(msg)
            return
        if not self.lazy_head:
            self.lazy_since = time.perf_counter()
        self.lazy_head.append(msg)

    def flush_owners(self) -> None:
        if self.to_owner:
            boxes, self.to_owner = self.to_owner, {}
            for addr, batch in boxes.items():
                sock = self.pushers.get(addr)
                if sock is None:
                    sock = self.pushers[addr] = transport.push(self.ctx, addr)
                transport.send_batch(sock, batch)

    def send_owner(self, addr: str, msg: P.Msg) -> None:
        if addr == self.addr:  # this process owns it (or reads the output: TASK_OUTPUT)
            self._process([msg])
            return
        box = self.to_owner.get(addr)
        if box is None:
            self.to_owner[addr] = [msg]
        else:
            box.append(msg)

    def forward_output(self, msg: P.Msg) -> None:
        """A nested task's TASK_OUTPUT: on to where the output of the task that started
        it goes (after what that task printed before, ahead of what it prints next)."""
        addr = self.output_routes.get(msg[1]) or self.task_output
        if addr and addr != self.addr:
            if addr not in self.pushers:
                self.pushers[addr] = task_output.connect_output(self.ctx, addr)
            self.send_owner(addr, msg)
            self.flush_owners()

    def lease_workers(self) -> None:
        """Let this worker's nested tasks go on leases too (a driver always does)."""
        if self.leasing is None:
            self.leasing = LeaseClient(self)

    # --- receiving ----------------------------------------------------------------
    def _on_object(self, oid: bytes, loc: P.Loc) -> None:
        self.awaiting.discard(oid)
        if self.leasing is not None and self.leasing.ledger.by_result:
            self.leasing.result(oid)
        if oid not in self.cache and (self.rt.holds(oid) or oid in self.wanted):
            self.cache[oid] = loc

    def _process(self, batch: list[P.Msg]) -> None:
        for msg in batch:
            op = msg[0]
            if op == P.OBJECT_READY:
                self._on_object(msg[1], msg[2])
            elif op == P.STATE_REPLY or op == P.RESERVED:
                self.state_replies[msg[1]] = msg[2]
            elif op == P.WARN:
                warnings.warn(msg[1], stacklevel=3)
            else:
                handler = self.handlers.get(op)
                if handler is not None:
                    handler(msg)

    def poll(self, timeout_ms: int) -> bool:
        """Wait up to ``timeout_ms`` for messages and process all that arrived."""
        self.last_poll = time.perf_counter()
        got = False
        for sock, _ in self.poller.poll(timeout_ms):
            while True:  # drain until EAGAIN (cheaper than getsockopt(EVENTS) per frame)
                try:
                    frame = sock.recv(NOBLOCK)
                except zmq.Again:
                    break
                self._process(P.unpack(frame))
                got = True
        return got

    # --- API operations -----------------------------------------------------------
    def new_ref(self, oid: bytes) -> ObjectRef:
        return ObjectRef(oid, self.addr)

    def submit(
        self,
        func_id: bytes,
        func_blob: bytes,
        name: str,
        args: Sequence[Any],
        kwargs: dict[str, Any],
        num_returns: int,
        resources: dict[str, float],
        max_retries: int,
        retry_exceptions: bool,
    ) -> list[ObjectRef]:
        if self.before_submit is not None:
            self.before_submit()
        with self.lock:
            if self.rt.events:
                self._settle_refs()
            deps: list[bytes] = []
            hold: list[ObjectRef] = []
            plain_args: list[Any] = list(args)
            for i, a in enumerate(plain_args):
                if type(a) is ObjectRef:
                    plain_args[i] = S.ArgRef(len(deps))
                    deps.append(a.id)
            if kwargs:
                kwargs = dict(kwargs)
                for k, v in kwargs.items():
                    if type(v) is ObjectRef:
                        kwargs[k] = S.ArgRef(len(deps))
                        deps.append(v.id)
            args_blob, stored, nested = self.pickle_args(name, plain_args, kwargs)
            if stored is not None:
                hold.append(stored)
                deps.insert(0, stored.id)
            for oid in deps:
                if oid in self.local_only:
                    self._register(oid)
            tid = self.ids.task_id()
            if self.task_output:
                routes = self.output_routes
                routes[tid] = self.task_output
                if len(routes) > ROUTES_KEPT:
                    del routes[next(iter(routes))]
            returns = [P.return_id(tid, i) for i in range(num_returns)]
            blob = None
            if func_id not in self.functions_sent:
                self.functions_sent[func_id] = func_blob
                blob = func_blob
            spec = (tid, func_id, blob, name, args_blob, deps, returns, resources,
                    max_retries, retry_exceptions, self.addr, self.output_addr, nested,
                    task_tag, self.running_task)
            self.owned.update(returns)
            self.awaiting.update(returns)
            refs = [ObjectRef(oid, self.addr) for oid in returns]
            if self.leasing is not None and returns and self.leasing.send(spec):
                if self.to_head:
                    self._flush_soon()
                self.flush_owners()
            else:
                self.to_head.append((P.SUBMIT, spec))
                self._flush_soon()
            del hold
            return refs

    def pickle_args(self, what: str, plain: list[Any], kwargs: dict[str, Any]
                    ) -> tuple[bytes | None, ObjectRef | None, list[bytes]]:
        """Pickle a call's arguments (top-level refs already ``ArgRef``s).

        Returns the inline blob, or None and the ref of the stored arguments when
        they are large, and the ids of refs found inside them. Call with the lock held.
        """
        __tracebackhide__ = HIDE  # noqa: F841  (read by IPython and pytest)
        nested: list[bytes] = []
        self.rt.capture = nested
        try:
            data, bufs = S.dumps_args(plain, kwargs)
        except Exception as exc:
            culprit = S.describe_unpicklable((plain, kwargs))
            raise SerializationError(
                f"could not pickle the arguments of {what}(): an argument of type "
                f"{culprit} cannot be serialized ({type(exc).__name__}: {exc})"
            ) from exc
        finally:
            self.rt.capture = None
        if bufs or len(data) >= S.INLINE_MAX:  # large arguments travel through the store
            return None, self.put((plain, kwargs), _data=(data, bufs)), nested
        return data, None, nested

    def put(self, value: Any, _data: tuple[bytes, list[memoryview]] | None = None) -> ObjectRef:
        __tracebackhide__ = HIDE  # noqa: F841  (read by IPython and pytest)
        with self.lock:
            if self.rt.events:
                self._settle_refs()
                if self.to_head:
                    self.flush()
            oid = self.ids.put_id()
            contained: list[bytes] = []
            self.rt.capture = contained
            granted: list[int] = []

            def reserve(size: int) -> None:
                self.reserve(oid, size)
                granted.append(size)

            try:
                name = self.shm_prefix + oid.hex()
                if _data is not None:
                    loc = S.write_parts(_data[0], _data[1], name, self.node_id, reserve)
                else:
                    loc = S.encode(value, name, self.node_id, reserve)
            except Exception as exc:
                if granted:  # room was granted but nothing was stored: give it back
                    self.to_head.append((P.UNRESERVE, oid, self.node_id))
                    self.flush()
                if isinstance(exc, JrayError):
                    raise
                raise SerializationError(
                    f"put(): a value of type {S.describe_unpicklable(value)} cannot be "
                    f"serialized ({type(exc).__name__}: {exc})"
                ) from exc
            finally:
                self.rt.capture = None
            self.cache[oid] = loc
            self.owned.add(oid)
            if contained or loc[0] == P.LOC_SHM:
                self._register(oid, contained)  # the head must know it now
            else:
                self.local_only.add(oid)  # registered only if it leaves this process
            return ObjectRef(oid, self.addr)

    def get(self, oids: list[bytes], timeout: float | None) -> list[P.Loc]:
        __tracebackhide__ = HIDE  # noqa: F841  (read by IPython and pytest)
        with self.lock:
            if self.rt.events:
                self._settle_refs()
            cache = self.cache
            missing = [oid for oid in oids if oid not in cache]
            if missing:
                self._await(missing, len(missing), timeout)
            return [cache[oid] for oid in oids]

    def get_or_fail(self, oids: list[bytes], timeout: float | None) -> list[P.Loc | None]:
        """``get``, but returning as soon as one of ``oids`` is an error (as Ray's
        ``get`` of a list raises at once): the locations so far, None where not ready."""
        __tracebackhide__ = HIDE  # noqa: F841  (read by IPython and pytest)
        with self.lock:
            if self.rt.events:
                self._settle_refs()
            cache = self.cache
            missing = [oid for oid in oids if oid not in cache]
            if missing and not any(cache[oid][0] == P.LOC_ERROR for oid in oids
                                   if oid in cache):
                self._await(missing, len(missing), timeout, stop_on_error=True)
            return [cache.get(oid) for oid in oids]

    def decode(self, oid: bytes, loc: P.Loc, timeout: float | None = None) -> Any:
        """The value at ``loc``; if its bytes moved or vanished, ask the head again.

        The head answers with the object's new location (it was spilled), or
        rebuilds it from its lineage, or fails it with ``ObjectLostError``.
        """
        __tracebackhide__ = HIDE  # noqa: F841  (read by IPython and pytest)
        moves = 0.0  # a new location counts 1, the same one again 1/64 (bounded, not 0)
        while moves < 8:
            try:
                value = S.decode(loc)
                if loc[0] == P.LOC_SPILLED:
                    with self.lock:
                        self.to_head.append((P.RESTORED, loc[4], 1))
                return value
            except shm.Untrusted as exc:
                raise ObjectLostError(
                    f"object {oid.hex()} cannot be read back: {exc}; it is treated as lost"
                ) from None
            except S.SegmentMissing:
                with self.lock:
                    self.cache.pop(oid, None)
                    self.wanted.add(oid)
                    try:
                        self.to_head.append((P.LOST, oid, loc, self.node_id))
                        # the head answers LOST itself (no SUBSCRIBE: its answer, the
                        # location just missed, would race a pull from another machine)
                        self.awaiting.add(oid)
                        self._await([oid], 1, timeout)
                        # (the same location again: a late answer to an earlier
                        # SUBSCRIBE while a pull runs; read it again, it may be back)
                        moves += 1.0 if self.cache[oid] != loc else 1 / 64
                        loc = self.cache[oid]
                    finally:
                        self.wanted.discard(oid)
                        if not self.rt.holds(oid):
                            self.cache.pop(oid, None)
        raise ObjectLostError(f"object {oid.hex()} kept moving or vanishing; giving up")

    def _ask(self, make: Callable[[int], P.Msg], timeout: float) -> tuple[bool, Any]:
        """Send ``make(request id)`` to the head: (True, reply), or (False, None) on timeout."""
        self._req += 1
        req = self._req
        self.to_head.append(make(req))
        self.flush()
        deadline = time.monotonic() + timeout
        while req not in self.state_replies:
            if time.monotonic() > deadline:
                return False, None
            if not self.poll(100) and self.check_alive is not None:
                self.check_alive()
        return True, self.state_replies.pop(req)

    def reserve(self, oid: bytes, size: int) -> None:
        """Wait until the node's store has room for ``size`` bytes (it may spill)."""
        with self.lock:
            ok, err = self._ask(lambda req: (P.RESERVE, req, oid, size, self.node_id),
                                RESERVE_TIMEOUT_S)
            if not ok:
                self.to_head.append((P.UNRESERVE, oid, self.node_id))
                self.flush()
                raise E.ClusterError(
                    f"put: the head did not grant room for {size:,} bytes in "
                    f"{RESERVE_TIMEOUT_S} s (RESERVE_TIMEOUT_S); it is stuck or gone"
                )
        if err is not None:
            S.decode(err)  # raises the ObjectStoreFullError it carries

    def wait(self, oids: list[bytes], num_returns: int, timeout: float | None) -> set[bytes]:
        __tracebackhide__ = HIDE  # noqa: F841  (read by IPython and pytest)
        with self.lock:
            self._settle_refs()
            missing = [oid for oid in oids if oid not in self.cache]
            ready = len(oids) - len(missing)
            if ready < num_returns:
                try:
                    self._await(missing, num_returns - ready, timeout)
                except GetTimeoutError:
                    pass
            return {oid for oid in oids if oid in self.cache}

    def _await(self, missing: list[bytes], need: int, timeout: float | None,
               stop_on_error: bool = False) -> None:
        __tracebackhide__ = HIDE  # noqa: F841  (read by IPython and pytest)
        waiting.await_objects(self, missing, need, timeout, stop_on_error)

    def cancel(self, oid: bytes, force: bool, recursive: bool = True) -> None:
        with self.lock:
            self.to_head.append((P.CANCEL, oid, force, recursive))
            self.flush()

    def query(self, kind: str, arg: Any = None, timeout: float = 30.0) -> Any:
        with self.lock:
            if self.leasing is not None and kind in ("available_resources", "nodes"):
                self.leasing.return_idle()  # (on this socket: the head sees it first)
            ok, reply = self._ask(lambda req: (P.STATE, req, kind, arg), timeout)
        if not ok:
            raise GetTimeoutError(f"the head did not answer a {kind!r} query in {timeout} s")
        status, payload = reply
        if status != "ok":
            raise JrayError(f"state query {kind!r} failed in the head: {payload}")
        return payload

    def close(self, linger_ms: int = 0) -> None:
        """Close the sockets; ``linger_ms`` lets messages to the head still in flight
        (a SHUTDOWN sent before the head has even bound its socket) go out first."""
        if self.closed:
            return
        self.closed = True
        set_ref_counter(None)
        if self._output_thread is not None:
            self._output_stop.set()
            self._output_thread.join(5)
        if self._flusher is not None:
            self._kick.set()
            self._flusher.join(5)
        if self.lazy_head:
            with self.lock:
                self.lazy_since = 0.0
                self.flush(lazy=True)
        for sock in self.pushers.values():
            sock.close(0)
        self.head.close(linger_ms)
        self.pull.close(0)
        transport.term(self.ctx)
        for addr in (self.addr, getattr(self, "_output_bound", "")):
            if addr.startswith("ipc://"):
                # the node daemon may be removing the session's files at the same moment
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(addr[len("ipc://") :])
