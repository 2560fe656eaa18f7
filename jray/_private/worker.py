"""Worker process: runs tasks the head sends, one at a time, in order.

::

    head ──EXECUTE──▶ [task queue] ──run──▶ results ──▶ owner (direct, PUSH)
                                              └──────▶ head (TASK_DONE, batched)

A worker is started by its node daemon with ``python -m jray._private.worker``
and dies with it (PR_SET_PDEATHSIG). Function code arrives once per worker
and is cached by id. SIGINT while a task runs raises ``TaskCancelledError``
inside the task (``jray.cancel``); outside a task it is ignored.
"""

from __future__ import annotations

import argparse
import functools
import io
import os
import pickle
import signal
import sys
import threading
import time
from collections import deque
from typing import Any

from jray._private import protocol as P
from jray._private import serialization as S
from jray._private import task_context, task_output, transport
from jray._private.core import CoreClient
from jray._private.flusher import LAZY_S
from jray._private.generator_stream import STREAMED, task_result
from jray._private.resources import DEVICE_ENV, device_env
from jray.exceptions import JrayError, SerializationError, TaskCancelledError

DONE_BATCH = 64
#: results of leased tasks kept for the lease's later tasks that take them as inputs
MADE_KEPT = 4096
#: a function that ran this fast last time may start before the head hears of the
#: leased tasks before it (their reports wait at most LAZY_S)
FAST_S = 0.002
OUTPUT_INTERVAL_S = 0.05
#: the longest a finished task's result waits for its batch while the worker goes on
OWNER_FLUSH_S = 0.001
#: how often a worker whose task computes reads its socket for its nested tasks' output
PUMP_S = 0.05
#: an idle worker polls in slices, holding the core lock, so that other threads get it
IDLE_POLL_MS = 100
#: while this worker holds leases (its nested tasks'), the idle loop looks this often
#: for the ones to give back
LEASE_TICK_MS = 50
#: a worker that reached ``max_calls`` waits this long for the head to take it out
RETIRE_WAIT_S = 10.0
#: ... and then lingers until no task came its way for this long
RETIRE_QUIET_S = 0.3


class _Running:
    tid: bytes | None = None


class Pump:
    """A worker's helper thread, started on first use, for what must not wait until
    the main thread next calls jray:

    - results batched while more tasks are queued reach their owners within
      ``OWNER_FLUSH_S`` even when the next task runs long (a fast function's slow
      call): ``arm()`` after queueing them; it wakes at most once per ``OWNER_FLUSH_S``;
    - once this worker's tasks have submitted tasks of their own (``forwarding()``),
      their output comes to this worker's socket to be passed on after what its task
      printed before: while a task runs, the socket is read every ``PUMP_S`` if the
      main thread is not in jray (it holds the client's lock then, and reads it itself).
    """

    def __init__(self, core: CoreClient) -> None:
        self.core = core
        self.armed = threading.Event()
        self.thread: threading.Thread | None = None
        self.pumping = False

    def _start(self) -> None:
        self.thread = threading.Thread(target=self._loop, name="jray-pump", daemon=True)
        self.thread.start()

    def arm(self) -> None:
        if self.thread is None:
            self._start()
        if not self.armed.is_set():
            self.armed.set()

    def forwarding(self) -> None:
        if not self.pumping:
            self.pumping = True
            if self.thread is None:
                self._start()
            else:  # it waits for arm() without a timeout: wake it to start reading
                self.armed.set()

    def _loop(self) -> None:
        core = self.core
        while not core.closed:
            if self.armed.wait(PUMP_S if self.pumping else None):
                time.sleep(OWNER_FLUSH_S)
                self.armed.clear()  # what is queued after this re-arms
                with core.lock:
                    core.flush_owners()
            elif core.running_task is not None and core.lock.acquire(blocking=False):
                try:  # the task computes: pass its tasks' output on
                    core.poll(0)
                finally:
                    core.lock.release()


class TaskQueue:
    """A worker's queue of exec specs, from the head and from the owners of leases.

    A task sent on a lease that this worker no longer serves (it blocked in
    ``get`` since, or the head revoked the lease) goes back to the head
    (``RETURN_TASKS``), which runs it elsewhere: a lease's tasks never run
    without the lease's resources.
    """

    def __init__(self, core: CoreClient) -> None:
        self.core = core
        self.specs: deque[P.ExecSpec] = deque()
        self.cancelled: set[bytes] = set()
        self.exit_requested = False
        self.leases_seen: set[bytes] = set()
        self.leases_revoked: set[bytes] = set()
        core.handlers[P.EXECUTE] = self._on_execute
        core.handlers[P.CANCEL_QUEUED] = lambda msg: self.cancelled.add(msg[1])
        core.handlers[P.EXIT] = self._on_exit
        core.handlers[P.REVOKE_LEASE] = self._on_revoke
        core.handlers[P.TASK_OUTPUT] = core.forward_output
        core.on_block = self.block

    def _on_exit(self, msg: P.Msg) -> None:
        self.exit_requested = True

    def _on_execute(self, msg: P.Msg) -> None:
        spec = msg[1]
        if len(spec) > P.E_LEASE:
            lease = spec[P.E_LEASE]
            if lease in self.leases_revoked:
                self.core.to_head.append((P.RETURN_TASKS, [spec[P.E_ID]]))
                return
            self.leases_seen.add(lease)
        if self.core.blocked:
            self.core.to_head.append((P.RETURN_TASKS, [spec[P.E_ID]]))
        else:
            self.specs.append(spec)

    def block(self) -> list[bytes]:
        """The worker blocks in ``get``: it serves no lease any more; give the queue back."""
        self.leases_revoked |= self.leases_seen
        self.leases_seen.clear()
        queued = [spec[P.E_ID] for spec in self.specs]
        self.specs.clear()
        return queued

    def _on_revoke(self, msg: P.Msg) -> None:
        lease = msg[1]
        self.leases_revoked.add(lease)
        self.leases_seen.discard(lease)
        back = [s[P.E_ID] for s in self.specs if len(s) > P.E_LEASE and s[P.E_LEASE] == lease]
        if back:
            keep = [s for s in self.specs if s[P.E_ID] not in back]
            self.specs.clear()
            self.specs.extend(keep)
            self.core.to_head.append((P.RETURN_TASKS, back))
        self.core.to_head.append((P.LEASE_RELEASED, lease))


class TaskOutput(io.TextIOBase):
    """Replaces sys.stdout/sys.stderr in a worker: a task's prints go to its driver.

    Text is buffered per line and sent at most every ``OUTPUT_INTERVAL_S`` while
    the task runs (and at its end), so a chatty task sends few messages. Writes
    from threads other than the main one are buffered and sent by the main one.
    """

    def __init__(self, core: CoreClient, stream: str, fallback: Any) -> None:
        self.core = core
        self.stream = stream
        self.fallback = fallback
        self.buf: list[str] = []
        self.lock = threading.Lock()
        self.main = threading.get_ident()
        self.addr = ""
        self.task: tuple[bytes, str] | None = None
        self.last = 0.0

    def begin(self, tid: bytes, name: str, addr: str) -> None:
        self.task = (tid, name)
        self.addr = addr

    def end(self) -> None:
        self.send()
        self.task = None

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if self.task is None or not self.addr:
            return int(self.fallback.write(text))
        with self.lock:
            self.buf.append(text)
        if threading.get_ident() == self.main and "\n" in text:
            now = time.monotonic()
            if now - self.last > OUTPUT_INTERVAL_S:
                self.send()
        return len(text)

    def send(self) -> None:
        if not self.buf or self.task is None:
            return
        with self.lock:
            text, self.buf = "".join(self.buf), []
        self.last = time.monotonic()
        tid, name = self.task
        core = self.core
        if self.addr not in core.pushers and self.addr != core.addr:  # see connect_output
            core.pushers[self.addr] = task_output.connect_output(core.ctx, self.addr)
        core.send_owner(self.addr, (P.TASK_OUTPUT, tid, name, os.getpid(), self.stream, text))
        core.flush()

    def flush(self) -> None:
        """``print(..., flush=True)``: a task's text goes out now (from the main thread)."""
        if self.task is None:
            self.fallback.flush()
        elif threading.get_ident() == self.main:
            self.send()


def _on_sigint(signum: int, frame: Any) -> None:
    if _Running.tid is not None:
        _Running.tid = None
        raise TaskCancelledError("task cancelled by jray.cancel()")


class Executor:
    """Runs ``ExecSpec``s from the core's queue and reports the results."""

    def _before_submit(self) -> None:
        self.send_output()
        self.pump.forwarding()  # the new task's output comes back through here

    def send_output(self) -> None:
        """Send what the running task printed so far (main thread only)."""
        if threading.get_ident() == self.stdout.main:
            self.stdout.send()
            self.stderr.send()

    def __init__(self, core: CoreClient) -> None:
        self.core = core
        self.stdout = TaskOutput(core, "stdout", sys.stdout)
        self.stderr = TaskOutput(core, "stderr", sys.stderr)
        sys.stdout = self.stdout
        sys.stderr = self.stderr
        # what a task printed goes out before the tasks it submits or waits for print
        core.before_submit = self._before_submit
        core.before_wait.append(self.send_output)
        self.functions: dict[bytes, Any] = {}
        self.blobs: dict[bytes, bytes] = {}
        #: results of leased tasks run here, newest last (inputs of later ones)
        self.made: dict[bytes, P.Loc] = {}
        #: functions whose last run took under FAST_S
        self.fast: set[bytes] = set()
        #: the node's own device variables (CUDA_VISIBLE_DEVICES, ...): restored after
        #: each task that held devices
        self.base_env = {v: os.environ[v] for v in DEVICE_ENV.values() if v in os.environ}
        #: the node's device variables, blank for a task that holds none of those devices
        self.hidden = {v: "" for v in os.environ.pop("JRAY_HIDDEN_DEVICES", "").split(",") if v}
        #: runs per function with ``max_calls``; set: this worker has run its last task
        self.calls: dict[bytes, int] = {}
        self.retiring = False
        self.pump = Pump(core)

    def remember(self, fid: bytes, blob: bytes) -> None:
        """Keep the code of a task that will not run (cancelled) for later ones."""
        self.blobs.setdefault(fid, blob)

    def _function(self, fid: bytes, blob: bytes | None, name: str) -> Any:
        fn = self.functions.get(fid)
        if fn is None:
            if blob is None:
                blob = self.blobs.get(fid)
            if blob is None:
                raise SerializationError(f"the code of function {name} never reached this worker")
            try:
                fn = pickle.loads(blob)
            except Exception as exc:
                raise SerializationError(
                    f"could not load function {name} in the worker: "
                    f"{type(exc).__name__}: {exc} (is its module installed on the worker?)"
                ) from exc
            self.functions[fid] = fn
        return fn

    def run(self, spec: P.ExecSpec, more: bool) -> None:
        (tid, fid, blob, name, args_blob, dep_locs, returns, owner, gpu_ids, retries_left,
         retry_exc, output_addr, demand) = spec[: P.E_LEASE]
        core = self.core
        leased = len(spec) > P.E_LEASE
        if leased and any(loc is None for _, loc in dep_locs):
            # inputs made by this lease's earlier tasks, here: or back to the head
            dep_locs = [(oid, self.made.get(oid) if loc is None else loc)
                        for oid, loc in dep_locs]
            if any(loc is None or loc[0] == P.LOC_ERROR for _, loc in dep_locs):
                core.to_head.append((P.RETURN_TASKS, [tid]))
                return
        # what this task's own tasks print comes here first (``forward_output``)
        core.task_output = output_addr
        core.output_addr = core.addr if output_addr else ""
        self.stdout.begin(tid, name, output_addr)
        self.stderr.begin(tid, name, output_addr)
        t0 = time.time()
        status = P.DONE_OK
        locs: list[P.Loc]
        nested: list[tuple[bytes, list[bytes]]] = []
        try:
            if gpu_ids or self.hidden:  # the devices this task holds (ids index the
                os.environ.update(self.hidden)  # node's own list), none of the others
                os.environ.update(device_env(gpu_ids, self.base_env))
            fn = self._function(fid, blob, name)
            try:
                deps = [core.decode(oid, loc) for oid, loc in dep_locs]
                bases = [(oid, loc) for oid, loc in dep_locs if loc[0] == P.LOC_SHM]
                if args_blob is None:
                    args, kwargs = deps[0]
                    deps = deps[1:]
                else:
                    args, kwargs = pickle.loads(args_blob)
            except Exception as exc:
                raise SerializationError(
                    f"could not unpickle the arguments of {name}() in the worker: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            if deps:
                args, kwargs = S.fill_args(args, kwargs, deps)
            _Running.tid = core.running_task = tid
            task_context.begin_task(name, fn, demand, gpu_ids)
            try:
                result = fn(*args, **kwargs)
                if type(result) in STREAMED:  # a generator: stream its items
                    result = task_result(core, result, returns[0], owner, name, len(returns))
            finally:
                _Running.tid = core.running_task = None
                task_context.end_task()
            locs = self._encode_results(name, result, returns, nested, bases)
        except TaskCancelledError as exc:
            locs = [S.error_loc(exc)] * len(returns)
            status = P.DONE_ERROR
        except SerializationError as exc:
            locs = [S.error_loc(exc)] * len(returns)
            status = P.DONE_ERROR
        except BaseException as exc:  # user code: anything, SystemExit included
            if isinstance(exc, KeyboardInterrupt):
                exc = TaskCancelledError(f"task {name} was interrupted")
                locs = [S.error_loc(exc)] * len(returns)
            elif retries_left > 0 and (
                retry_exc is True
                or (isinstance(retry_exc, tuple) and isinstance(exc, retry_exc))
            ):
                status = P.DONE_RETRY
                locs = []
            else:
                locs = [S.task_error_loc(name, exc)] * len(returns)
            if status != P.DONE_RETRY:
                status = P.DONE_ERROR
        finally:
            self.stdout.end()
            self.stderr.end()
            if gpu_ids or self.hidden:
                for var in DEVICE_ENV.values():
                    if var in self.base_env:
                        os.environ[var] = self.base_env[var]
                    else:
                        os.environ.pop(var, None)
        t1 = time.time()
        limit = getattr(self.functions.get(fid), "jray_max_calls", 0)
        if limit:  # ``max_calls``: the worker exits after its limit-th run of fid
            self.calls[fid] = self.calls.get(fid, 0) + 1
            self.retiring = self.retiring or self.calls[fid] >= limit
        if t1 - t0 < FAST_S:
            self.fast.add(fid)
        else:
            self.fast.discard(fid)
        results = list(zip(returns, locs))
        if leased:  # a later task on the lease may take these as its inputs
            made = self.made
            for oid, loc in results:
                made[oid] = loc
            while len(made) > MADE_KEPT:
                del made[next(iter(made))]
        with core.lock:  # the owner flusher thread sends what waits in core.to_owner
            for oid, loc in results:
                core.send_owner(owner, (P.OBJECT_READY, oid, loc))
            if core.rt.events:  # refs this task borrowed: the head hears before TASK_DONE
                core._settle_refs()
            if leased:  # the owner has its results; the head can wait
                core.lazy((P.LEASED_DONE, tid, results, status, t0, t1, nested))
                core.flush_owners()
                if len(core.lazy_head) >= DONE_BATCH:
                    core.flush(lazy=True)
                return
            core.to_head.append((P.TASK_DONE, tid, results, status, t0, t1, nested))
            if not more or len(core.to_head) >= DONE_BATCH:
                core.flush()
            else:  # batched with the next queued tasks' results; should the next one run
                self.pump.arm()  # long, the owners have these within OWNER_FLUSH_S

    def _encode_results(self, name: str, result: Any, returns: list[bytes],
                        nested: list[tuple[bytes, list[bytes]]],
                        bases: list[tuple[bytes, P.Loc]]) -> list[P.Loc]:
        core = self.core
        values = S.split_returns(name, result, len(returns))
        locs = []
        for oid, value in zip(returns, values):
            contained: list[bytes] = []
            core.rt.capture = contained
            try:
                loc = S.encode(value, core.shm_prefix + oid.hex(), core.node_id,
                               functools.partial(core.reserve, oid), bases)
                if loc[0] == P.LOC_VIEW:  # it holds the arguments it is a view of
                    contained.extend(loc[3])
                locs.append(loc)
                if contained:
                    nested.append((oid, contained))
            except JrayError:
                raise
            except Exception as exc:
                raise SerializationError(
                    f"the return value of {name}() cannot be serialized: an object of type "
                    f"{S.describe_unpicklable(value)} ({type(exc).__name__}: {exc})"
                ) from exc
            finally:
                core.rt.capture = None
        return locs


def retire(core: CoreClient, tasks: TaskQueue) -> None:
    """Leave the pool for good (``max_calls`` reached): the head hears of the last
    results, gets the queued tasks back and takes this worker out of placement (as a
    worker blocked in ``get``) before it exits, so that no task is lost with it; the
    node daemon starts a fresh worker in its place."""
    core.lazy_since = 0.0
    core.flush(lazy=True)
    core.blocked = True  # tasks that still arrive go back to the head (TaskQueue)
    core.to_head.append((P.BLOCKED, tasks.block()))
    with core.lock:
        core._ask(lambda req: (P.STATE, req, "summary", None), RETIRE_WAIT_S)
        # tasks that owners sent on this worker's lease before they heard of its revoke
        # still arrive: send them back until none came for a while (bounded)
        now = time.monotonic()
        quiet, end = now + RETIRE_QUIET_S, now + RETIRE_WAIT_S
        while now < min(quiet, end):
            core.poll(10)
            if core.to_head:
                core.flush()
                quiet = time.monotonic() + RETIRE_QUIET_S
            now = time.monotonic()
        core.flush()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="jray-worker")
    ap.add_argument("--head", required=True)
    ap.add_argument("--session-dir", required=True)
    ap.add_argument("--node-id", required=True)
    ap.add_argument("--worker-id", required=True)
    ap.add_argument("--shm-prefix", required=True)
    ns = ap.parse_args(argv)
    transport.die_with_parent(signal.SIGKILL)
    signal.signal(signal.SIGINT, _on_sigint)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    node_id = bytes.fromhex(ns.node_id)
    core = CoreClient(ns.head, ns.session_dir, node_id, ns.shm_prefix,
                      bytes.fromhex(ns.worker_id), is_worker=True)
    from jray._private import api

    api._attach_worker(core)
    executor = Executor(core)
    tasks = TaskQueue(core)
    core.lease_workers()  # the tasks its tasks submit go straight to leased workers too
    leasing = core.leasing
    core.to_head.append((P.WORKER_READY, node_id, os.getpid(), core.addr))
    core.flush()
    parent = os.getppid()
    queue = tasks.specs
    while not tasks.exit_requested:
        if not queue:
            held = leasing is not None and leasing.ledger.held()
            with core.lock:  # (the owner flusher thread sends too)
                core.release_pending()
                if held:  # leases of nested tasks go back when idle
                    leasing.tick()  # type: ignore[union-attr]
                core.flush(lazy=True)
            wait_ms = LEASE_TICK_MS if held else IDLE_POLL_MS
            if core.lazy_head:  # leased tasks' reports go to the head within LAZY_S
                wait_ms = 1 + int(1000 * max(0.0, LAZY_S - (time.perf_counter() - core.lazy_since)))
            with core.lock:  # other threads (the actor client's flusher) poll too
                got = core.poll(wait_ms)
            if not got and not core.lazy_head and os.getppid() != parent:
                break
            continue
        with core.lock:  # (other threads read the socket too, and may take the queue)
            core.poll(0)
            spec = queue.popleft() if queue else None
        if spec is None:
            continue
        if spec[P.E_ID] in tasks.cancelled:
            tasks.cancelled.discard(spec[P.E_ID])
            if spec[P.E_FUNC_BLOB] is not None:  # its code may not travel again
                executor.remember(spec[P.E_FUNC_ID], spec[P.E_FUNC_BLOB])
            continue
        if core.lazy_head and (spec[P.E_FUNC_ID] not in executor.fast
                               or time.perf_counter() - core.lazy_since >= LAZY_S):
            core.lazy_since = 0.0  # this one may run long: the head hears of the last ones now
            with core.lock:
                core.flush(lazy=True)
        executor.run(spec, bool(queue))
        if core.rt.events:
            core._settle_refs()
        if executor.retiring:
            retire(core, tasks)
            break
    core.lazy_since = 0.0
    core.flush(lazy=True)
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
