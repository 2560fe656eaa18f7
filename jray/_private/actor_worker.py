"""Actor process: hosts one actor instance, runs its calls, keeps its checkpoints.

::

    node daemon ──spawn──▶ actor process ──ACTOR_HELLO──▶ head
                     head ──ACTOR_INIT(spec, last checkpoint)──▶ constructor,
                                                          __jray_restore__(state)
    actor process ──ACTOR_ALIVE(call address)──▶ head ──▶ handle holders
    callers ──ACTOR_CALL (PULL socket of its own, batched)──▶ main thread
        main thread ──▶ runs the call (sync) / thread pool / event loop (actor_executor)
    results ──ACTOR_DONE──▶ each caller's PULL (PUSH, one frame per caller per turn)
            └─ACTOR_RESULTS──▶ head (one frame per turn, before the callers hear)

The process has two sets of sockets: the runtime's and a ``CoreClient`` for
the jray API inside methods (nested tasks, ``get``, calls to other actors).
The runtime's main thread owns the call PULL and a DEALER to the head
(start-up, shutdown); outgoing results, reports and checkpoints leave through
a second, send-only DEALER and PUSH sockets to callers, sent by whichever
thread finished calls (``flush``: one sender at a time, nobody waits).

Cancellation: callers send ``ACTOR_CANCEL`` to a second PULL socket
(``control_addr``), read by a control thread, because the main thread of a
sync actor is busy running the call and does not read its call socket. The
control thread records the key: a call that arrives later is dropped, a
running one sees ``is_canceled()`` and ends as cancelled (it is not
interrupted, as in Ray; see ``actor_executor``). Async actors cancel the
call's asyncio task. An ``ACTOR_CANCEL`` with its ``interrupt`` flag (the
notebook's interrupt, ``api.interrupt``) also stops the running call: a call on
the main thread gets ``CANCEL_SIGNAL`` (``pthread_kill``: a blocking ``sleep``
is woken), whose handler raises ``TaskCancelledError`` only if the running
call is one to interrupt; a call on a pool thread gets an asynchronous
exception.

It is started with ``python -m jray._private.actor_worker`` and dies with its
node daemon (PR_SET_PDEATHSIG).
On a request to exit (its handles went away, ``exit_actor()``) it finishes
the calls it has, sends ``ACTOR_EXITING`` and lingers until its last messages
are out; the head then does not restart it.

Checkpoints: after every ``checkpoint_interval`` calls, or after a call once
``checkpoint_interval_s`` seconds have passed since the last checkpoint, the
runtime calls ``__jray_checkpoint__()`` and stores the state (inline, or a
shared-memory segment) with the head (``ACTOR_CHECKPOINT``), before the
results of that call leave. A restarted incarnation gets the newest one with
``ACTOR_INIT`` and passes it to ``__jray_restore__(state)`` before taking calls.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import os
import pickle
import signal
import sys
import threading
import time
import traceback
from typing import Any

import cloudpickle
import zmq

from jray._private import actor_client, task_context, transport
from jray._private import actor_protocol as A
from jray._private import protocol as P
from jray._private import serialization as S
from jray._private.actor_client import readable
from jray._private.actor_executor import CallRunner, Result
from jray._private.actor_modes import SYSTEM_GROUP, AsyncMode, GroupedMode, SyncMode, ThreadMode
from jray._private.core import CoreClient
from jray._private.object_ref import ObjectRef
from jray._private.worker import TaskOutput
from jray.exceptions import ActorDiedError

Mode = SyncMode | ThreadMode | AsyncMode | GroupedMode

#: a long batch of calls still sends results at least this often
FLUSH_EVERY_S = 0.002
#: reports of finished calls to the head wait up to this long (or REPORT_MAX of them):
#: the head tracks those objects as pending meanwhile, and nobody else needs them yet
REPORT_DELAY_S = 0.002
REPORT_MAX = 256
#: how often the main loop looks at calls parked for their arguments (sync actors)
PARKED_POLL_MS = 2
LINGER_MS = 2000
INTERNAL_ERROR = 70  # exit code of an actor process whose runtime failed
#: sent by the control thread to the main thread to interrupt a cancelled sync call
CANCEL_SIGNAL = signal.SIGUSR1


class ActorRuntime:
    """The main thread's state: sockets, outgoing results, checkpoints."""

    def __init__(self, ns: argparse.Namespace) -> None:
        self.ns = ns
        self.actor_id = bytes.fromhex(ns.actor_id)
        self.inc = ns.incarnation
        self.node_id = bytes.fromhex(ns.node_id)
        ident = b"A" + self.actor_id + self.inc.to_bytes(4, "little")
        self.core = CoreClient(ns.head, ns.session_dir, self.node_id, ns.shm_prefix,
                               b"w" + os.urandom(7), is_worker=True)
        from jray._private import api

        api._attach_worker(self.core)
        self.ctx = transport.new_context()
        self.head = transport.dealer(self.ctx, ns.head, ident)
        self.reports = transport.dealer(self.ctx, ns.head, ident + b"r")
        self.send_lock = threading.Lock()
        # before any wait for objects here, the head gets this actor's pending reports:
        # the object waited for may be one of them
        self.core.before_wait.append(lambda: self.flush(force=True))
        self.call_name = ident.hex() + ".call.sock"
        self.call_addr = ""
        self.calls: zmq.Socket[bytes] | None = None
        self.control: threading.Thread | None = None
        self.ctl_lock = threading.Lock()  # the control socket is read by two threads
        self.stopping = False
        self.pushers: dict[str, zmq.Socket[bytes]] = {}
        self.out_lock = threading.Lock()
        self.to_head: list[P.Msg] = []
        self.report: list[tuple[bytes, P.Loc, bytes, None]] = []
        self.report_since = 0.0
        self.results: dict[str, list[tuple[bytes, P.Loc]]] = {}
        self.exit_reason = ""
        self.class_name = "Actor"
        self.instance: Any = None
        self.runner: CallRunner | None = None
        self.mode: Mode | None = None
        # checkpoints
        self.ckpt_calls = 0
        self.ckpt_s = 0.0
        self.since_ckpt = 0
        self.last_ckpt = time.monotonic()
        self.ckpt_seq = 0
        self.ckpt_lock = threading.Lock()
        self.stdout: TaskOutput | None = None
        self.stderr: TaskOutput | None = None

    # --- start-up -----------------------------------------------------------------
    def start(self) -> bool:
        """Fetch the spec, construct (and restore) the instance; False: exit."""
        transport.send_batch(self.head, [(A.ACTOR_HELLO, self.actor_id, self.inc)])
        parent = os.getppid()
        init: P.Msg | None = None
        while init is None:
            if not self.head.poll(1000):
                if os.getppid() != parent:
                    return False
                continue
            for msg in P.unpack(self.head.recv()):
                if msg[0] == A.ACTOR_INIT:
                    init = msg
        spec, checkpoint = init[1], init[2]
        used: dict[bytes, int] = init[3] if len(init) > 3 else {}
        if spec is None:
            return False
        meta = spec["meta"]
        self.class_name = meta["class_name"]
        task_context.set_actor(spec["demand"] if spec["hold"] else {})
        self.stdout = TaskOutput(self.core, "stdout", sys.stdout)
        self.stderr = TaskOutput(self.core, "stderr", sys.stderr)
        for out in (self.stdout, self.stderr):
            out.begin(self.actor_id, self.class_name, spec["output_addr"])
        sys.stdout, sys.stderr = self.stdout, self.stderr
        self.ckpt_calls = spec["checkpoint_interval"]
        self.ckpt_s = spec["checkpoint_interval_s"]
        # an async actor's constructor sees the event loop its (default group's) calls
        # will run on as the current loop, as in Ray
        loop = asyncio.new_event_loop() if meta["is_async"] else None
        if loop is not None:
            asyncio.set_event_loop(loop)
        try:
            cls = cloudpickle.loads(spec["class_blob"])
            args, kwargs = self._ctor_args(spec["args"])
            self.instance = cls(*args, **kwargs)
            if checkpoint is not None:
                self.instance.__jray_restore__(S.decode(checkpoint))
        except BaseException as exc:  # the constructor is user code
            self._init_failed(exc, restoring=checkpoint is not None and self.instance is not None)
            return False
        self.runner = CallRunner(self.core, self.instance, self.class_name, meta["methods"],
                                 self._after_call)
        self.runner.is_async = bool(meta["is_async"])
        self.runner.used = used
        self.runner.on_retry = self._retried
        runner = self.runner
        n = spec["max_concurrency"]
        groups = meta.get("groups")
        if groups:
            self.mode = self._grouped(groups, n, meta["is_async"], loop)
        elif meta["is_async"]:
            self.mode = AsyncMode(self.runner, self._done, self._send_all, n, loop)
        elif n > 1:
            self.mode = ThreadMode(self.runner, self._done_and_send, n)
        else:
            self.mode = SyncMode(runner, self._done,
                                 lambda: ThreadMode(runner, self._done_and_send, 1))
        self.calls, ctl, self.call_addr = transport.bound_pull_pair(
            self.ctx, self.ns.session_dir, self.call_name, A.control_addr)
        signal.signal(CANCEL_SIGNAL, lambda *_: runner.on_signal())
        self.control = threading.Thread(target=self._control_loop, args=(ctl,),
                                        name="jray-actor-control", daemon=True)
        self.control.start()
        self._send_output()
        transport.send_batch(self.head, [(A.ACTOR_ALIVE, self.actor_id, self.inc,
                                          self.call_addr, os.getpid())])
        return True

    def _ctor_args(self, field: tuple[str, Any]) -> tuple[list[Any], dict[str, Any]]:
        from jray._private import api

        kind, blob = field
        if kind == "ref":
            ref: ObjectRef = pickle.loads(blob)
            args, kwargs = api.get(ref)
        else:
            args, kwargs = pickle.loads(blob)
        args = [api.get(a) if type(a) is ObjectRef else a for a in args]
        kwargs = {k: api.get(v) if type(v) is ObjectRef else v for k, v in kwargs.items()}
        return args, kwargs

    def _init_failed(self, exc: BaseException, restoring: bool) -> None:
        tb = S.format_remote_traceback(exc)
        what = "__jray_restore__" if restoring else "__init__"
        err = ActorDiedError(
            f"actor {self.class_name} ({self.actor_id.hex()[:12]}) died: its {what} raised "
            f"{type(exc).__name__}: {exc}\n\nremote traceback:\n{tb.rstrip()}",
            traceback_str=tb,
        )
        self._send_output()
        transport.send_batch(self.head, [(A.ACTOR_INIT_FAILED, self.actor_id, self.inc,
                                          S.error_loc(err))])

    # --- calls --------------------------------------------------------------------
    def _done(self, msg: P.Msg, results: list[Result]) -> None:
        caller, ident = msg[A.C_CALLER], msg[A.C_IDENT]
        direct: list[tuple[bytes, P.Loc, bytes, list[bytes]]] = []
        with self.out_lock:
            box = self.results.get(caller)
            if box is None:
                box = self.results[caller] = []
            report = self.report
            if not report:
                self.report_since = time.monotonic()
            for oid, loc, contained in results:
                box.append((oid, loc))
                if contained:
                    direct.append((oid, loc, ident, contained))
                else:
                    report.append((oid, loc, ident, None))
        core = self.core
        if direct or core.rt.events:
            with core.lock:
                # refs inside results, and refs this call borrowed: the head hears
                # through the core's channel, in order, before the caller does
                if direct:
                    core.to_head.append((A.ACTOR_RESULTS, direct))
                if core.rt.events:
                    core._settle_refs()
                core.flush()
            if direct:  # the caller will ask the head about the refs in these results
                # (tasks this actor submitted, say): the head answers this barrier only
                # after everything sent before it, so they are known there first
                actor_client.current().request(
                    lambda req: (A.ACTOR_REQUEST, req, "barrier", None))

    def _retried(self, key: bytes) -> None:
        """A call runs again after an exception: the head counts it (for restarts)."""
        with self.out_lock:
            self.to_head.append((A.ACTOR_RETRIED, self.actor_id, self.inc, key))
        self.flush(wait=True, force=True)

    def _done_and_send(self, msg: P.Msg, results: list[Result]) -> None:
        self._done(msg, results)
        self._send_all()

    def _send_all(self) -> None:
        self.flush()
        self._send_output()

    def _after_call(self) -> None:
        if not (self.ckpt_calls or self.ckpt_s):
            return
        with self.ckpt_lock:
            self.since_ckpt += 1
            due = (self.ckpt_calls and self.since_ckpt >= self.ckpt_calls) or (
                self.ckpt_s and time.monotonic() - self.last_ckpt >= self.ckpt_s)
            if due:
                self._checkpoint()

    def _checkpoint(self) -> None:
        self.since_ckpt = 0
        self.last_ckpt = time.monotonic()
        try:
            state = self.instance.__jray_checkpoint__()
            self.ckpt_seq += 1
            name = f"{self.ns.shm_prefix}ck{self.actor_id.hex()[:16]}-{self.inc}-{self.ckpt_seq}"
            loc = S.encode(state, name, self.node_id)
        except Exception:
            traceback.print_exc()  # reaches the driver; the actor keeps going
            return
        with self.out_lock:
            self.to_head.append((A.ACTOR_CHECKPOINT, self.actor_id, self.inc, loc))

    def _dispatch(self, batch: list[P.Msg]) -> None:
        mode = self.mode
        assert mode is not None
        last = time.perf_counter()
        for msg in batch:
            if self.exit_reason:
                return
            if msg[0] == A.ACTOR_CALL:
                mode.dispatch(msg)
                if not mode.concurrent:
                    now = time.perf_counter()
                    if now - last > FLUSH_EVERY_S:
                        last = now
                        self.flush()
            elif msg[0] == A.ACTOR_EXIT_REQ:
                self.exit_reason = msg[1]
            if self.runner is not None and self.runner.exit_requested:
                self.exit_reason = "it called exit_actor()"

    # --- cancellation (control thread) ------------------------------------------------
    def _control_loop(self, sock: zmq.Socket[bytes]) -> None:
        runner = self.runner
        assert runner is not None
        # a call that waited (for a nested get, say) reads cancels that arrived meanwhile
        # before it concludes: the control thread may not have run yet on a busy machine
        runner.drain_cancels = lambda: self._read_control(sock, timeout=0.05)
        try:
            while not self.stopping:
                if sock.poll(100):
                    self._read_control(sock, timeout=-1)
        finally:
            runner.drain_cancels = None
            with self.ctl_lock:
                sock.close(0)

    def _read_control(self, sock: zmq.Socket[bytes], timeout: float) -> None:
        """Apply the ``ACTOR_CANCEL`` messages waiting on ``sock`` (either thread)."""
        main = threading.main_thread().ident
        runner, mode = self.runner, self.mode
        assert runner is not None and main is not None
        if not self.ctl_lock.acquire(timeout=timeout):
            return
        try:
            while not sock.closed and readable(sock):
                for msg in P.unpack(sock.recv()):
                    if msg[0] != A.ACTOR_CANCEL:
                        continue
                    interrupt = len(msg) > 2 and bool(msg[2])
                    for key in msg[1]:
                        if runner.request_cancel(key, interrupt) and \
                                threading.get_ident() != main:
                            signal.pthread_kill(main, CANCEL_SIGNAL)
                        if isinstance(mode, (AsyncMode, GroupedMode)):
                            mode.cancel(key)
        finally:
            self.ctl_lock.release()

    # --- sending ------------------------------------------------------------------
    def _report_in(self) -> float:
        """Seconds until the batched reports must go (inf: none waiting)."""
        if not self.report:
            return float("inf")
        if len(self.report) >= REPORT_MAX:
            return 0.0
        return self.report_since + REPORT_DELAY_S - time.monotonic()

    def _due(self, force: bool) -> bool:
        return bool(self.to_head or self.results
                    or (self.report and (force or self._report_in() <= 0)))

    def flush(self, wait: bool = False, force: bool = False) -> None:
        """Send what finished calls produced (any thread; a busy sender sends ours too)."""
        while self._due(force):
            if not self.send_lock.acquire(blocking=wait):
                return  # the thread sending now looks again before it stops
            try:
                self._send_pending(force)
            finally:
                self.send_lock.release()

    def _send_pending(self, force: bool) -> None:
        with self.out_lock:
            ctl, self.to_head = self.to_head, []
            results, self.results = self.results, {}
            report: list[tuple[bytes, P.Loc, bytes, None]] = []
            if self.report and (force or self._report_in() <= 0):
                report, self.report = self.report, []
        if report:
            ctl.append((A.ACTOR_RESULTS, report))
        if ctl:
            transport.send_batch(self.reports, ctl)
        for addr, items in results.items():
            sock = self.pushers.get(addr)
            if sock is None:
                sock = self.pushers[addr] = transport.push(self.ctx, addr)
            transport.send_batch(sock, [(A.ACTOR_DONE, self.actor_id, items)])

    def _send_output(self) -> None:
        core = self.core
        if self.stdout is None or self.stderr is None:
            return
        if (self.stdout.buf or self.stderr.buf) and core.lock.acquire(blocking=False):
            try:
                self.stdout.send()
                self.stderr.send()
            finally:
                core.lock.release()

    # --- main loop ----------------------------------------------------------------
    def serve(self) -> None:
        calls, mode = self.calls, self.mode
        assert calls is not None and mode is not None
        poller = zmq.Poller()
        poller.register(calls, zmq.POLLIN)
        poller.register(self.head, zmq.POLLIN)
        parent = os.getppid()
        # concurrent modes look at exit_actor() calls made on other threads each turn
        tick = 100 if mode.concurrent else 1000
        if self.ckpt_s:
            tick = max(10, min(tick, int(self.ckpt_s * 1000)))
        runner = self.runner
        assert runner is not None
        while not self.exit_reason:
            if runner.exit_requested:
                self.exit_reason = "it called exit_actor()"
                break
            due = self._report_in()
            wait = tick if due > tick / 1000 else max(0, int(due * 1000) + 1)
            parking = isinstance(mode, SyncMode) and mode.parked
            if parking:  # calls wait aside for their arguments: look again soon
                wait = min(wait, PARKED_POLL_MS)
            events = dict(poller.poll(wait))
            if parking:
                assert isinstance(mode, SyncMode)
                mode.run_parked()
            if not events:
                if os.getppid() != parent:
                    self.exit_reason = "its node daemon died"
                    break
                self._idle_checkpoint(mode)
            shutdown = ""
            if self.head in events:
                while readable(self.head):
                    for msg in P.unpack(self.head.recv()):
                        if msg[0] == A.ACTOR_SHUTDOWN:
                            shutdown = msg[1]
            if calls in events or shutdown:  # the calls that came before a shutdown run
                while not self.exit_reason and readable(calls):
                    self._dispatch(P.unpack(calls.recv()))
                    self.flush()
            if shutdown and not self.exit_reason:
                self.exit_reason = shutdown
            self.flush()
            self._send_output()
        self._exit(mode)

    def _idle_checkpoint(self, mode: Mode) -> None:
        if self.ckpt_s and self.since_ckpt and mode.running() == 0:
            with self.ckpt_lock:
                if time.monotonic() - self.last_ckpt >= self.ckpt_s:
                    self._checkpoint()

    def _grouped(self, groups: dict[str, int], n: int, is_async: bool,
                 loop: asyncio.AbstractEventLoop | None) -> GroupedMode:
        runner = self.runner
        assert runner is not None

        def make(size: int, loop: asyncio.AbstractEventLoop | None = None
                 ) -> ThreadMode | AsyncMode:
            if is_async:
                return AsyncMode(runner, self._done, self._send_all, size, loop)
            return ThreadMode(runner, self._done_and_send, size)

        modes = {name: make(size) for name, size in groups.items()}
        modes.setdefault(SYSTEM_GROUP, make(1))
        return GroupedMode(runner, modes, make(n, loop))

    def _exit(self, mode: Mode) -> None:
        deadline = time.monotonic() + 30
        while mode.running() and time.monotonic() < deadline:
            if isinstance(mode, SyncMode):
                mode.run_parked()
            time.sleep(0.005)
        self._shutdown_hooks()
        self.flush(wait=True, force=True)
        self._send_output()
        transport.send_batch(self.head, [(A.ACTOR_EXITING, self.actor_id, self.inc,
                                          self.exit_reason)])
        self.close()

    def _shutdown_hooks(self) -> None:
        """A graceful exit (handles gone, ``exit_actor``, ``__ray_terminate__``): the
        instance's ``__ray_shutdown__()``, then the ``atexit`` handlers, as in Ray (a
        ``kill`` or a crash runs neither)."""
        runner = self.runner
        hook = getattr(runner.instance, "__ray_shutdown__", None) if runner else None
        try:
            if callable(hook):
                hook()
        except Exception:  # user code: report it, exit anyway
            traceback.print_exc()
        from jray._private import api

        atexit.unregister(api.shutdown)  # jray's own: this process's runtime closes below
        atexit._run_exitfuncs()  # the user's; prints any handler's error itself
        self._send_output()

    def close(self) -> None:
        self.stopping = True
        if self.control is not None:
            self.control.join(5)
        for sock in [self.head, self.reports, *self.pushers.values()]:
            sock.setsockopt(zmq.LINGER, LINGER_MS)
            sock.close()
        if self.calls is not None:
            self.calls.close(0)
        transport.term(self.ctx)
        for addr in (self.call_addr, A.control_addr(self.call_addr)):
            if addr.startswith("ipc://"):  # the node daemon may be removing it too
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(addr[len("ipc://"):])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="jray-actor")
    ap.add_argument("--head", required=True)
    ap.add_argument("--session-dir", required=True)
    ap.add_argument("--node-id", required=True)
    ap.add_argument("--shm-prefix", required=True)
    ap.add_argument("--actor-id", required=True)
    ap.add_argument("--incarnation", type=int, required=True)
    ns = ap.parse_args(argv)
    transport.die_with_parent(signal.SIGKILL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    rt = ActorRuntime(ns)
    code = 0
    try:
        if rt.start():
            rt.serve()
        else:
            rt.close()
    except BaseException:  # a bug in the runtime: say so, and die visibly
        code = INTERNAL_ERROR
        traceback.print_exc()
        rt._send_output()
        rt.core.flush()
    finally:
        sys.stdout.flush()
        rt.core.flush()
        os._exit(code)


if __name__ == "__main__":
    main()
