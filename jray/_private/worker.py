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
from typing import Any

from jray._private import protocol as P
from jray._private import serialization as S
from jray._private import transport
from jray._private.core import CoreClient
from jray._private.generator_stream import STREAMED, task_result
from jray.exceptions import JrayError, SerializationError, TaskCancelledError

DONE_BATCH = 64
OUTPUT_INTERVAL_S = 0.05
#: an idle worker polls in slices, holding the core lock, so that other threads get it
IDLE_POLL_MS = 100


class _Running:
    tid: bytes | None = None


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
        self.core.send_owner(self.addr, (P.TASK_OUTPUT, tid, name, os.getpid(), self.stream, text))
        self.core.flush()

    def flush(self) -> None:
        if self.task is None:
            self.fallback.flush()


def _on_sigint(signum: int, frame: Any) -> None:
    if _Running.tid is not None:
        _Running.tid = None
        raise TaskCancelledError("task cancelled by jray.cancel()")


class Executor:
    """Runs ``ExecSpec``s from the core's queue and reports the results."""

    def __init__(self, core: CoreClient) -> None:
        self.core = core
        self.stdout = TaskOutput(core, "stdout", sys.stdout)
        self.stderr = TaskOutput(core, "stderr", sys.stderr)
        sys.stdout = self.stdout
        sys.stderr = self.stderr
        self.functions: dict[bytes, Any] = {}
        self.base_env_gpus = os.environ.get("CUDA_VISIBLE_DEVICES")

    def _function(self, fid: bytes, blob: bytes | None, name: str) -> Any:
        fn = self.functions.get(fid)
        if fn is None:
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

    def run(self, spec: P.ExecSpec) -> None:
        (tid, fid, blob, name, args_blob, dep_locs, returns, owner, gpu_ids, retries_left,
         retry_exc, output_addr) = spec
        core = self.core
        core.output_addr = output_addr
        self.stdout.begin(tid, name, output_addr)
        self.stderr.begin(tid, name, output_addr)
        t0 = time.time()
        status = P.DONE_OK
        locs: list[P.Loc]
        nested: list[tuple[bytes, list[bytes]]] = []
        try:
            if gpu_ids:
                os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in gpu_ids)
            fn = self._function(fid, blob, name)
            try:
                deps = [core.decode(oid, loc) for oid, loc in dep_locs]
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
            _Running.tid = tid
            try:
                result = fn(*args, **kwargs)
                if type(result) in STREAMED:  # a generator: stream its items
                    result = task_result(core, result, returns[0], owner, name, len(returns))
            finally:
                _Running.tid = None
            locs = self._encode_results(name, result, returns, nested)
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
            if gpu_ids:
                if self.base_env_gpus is None:
                    os.environ.pop("CUDA_VISIBLE_DEVICES", None)
                else:
                    os.environ["CUDA_VISIBLE_DEVICES"] = self.base_env_gpus
        results = list(zip(returns, locs))
        for oid, loc in results:
            core.send_owner(owner, (P.OBJECT_READY, oid, loc))
        if core.rt.events:  # refs this task borrowed: the head hears before TASK_DONE
            core._settle_refs()
        core.to_head.append((P.TASK_DONE, tid, results, status, t0, time.time(), nested))
        if not core.task_queue or len(core.to_head) >= DONE_BATCH:
            core.flush()

    def _encode_results(self, name: str, result: Any, returns: list[bytes],
                        nested: list[tuple[bytes, list[bytes]]]) -> list[P.Loc]:
        core = self.core
        values = S.split_returns(name, result, len(returns))
        locs = []
        for oid, value in zip(returns, values):
            contained: list[bytes] = []
            core.rt.capture = contained
            try:
                locs.append(S.encode(value, core.shm_prefix + oid.hex(), core.node_id,
                                     functools.partial(core.reserve, oid)))
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
    core.to_head.append((P.WORKER_READY, node_id, os.getpid(), core.addr))
    core.flush()
    parent = os.getppid()
    queue = core.task_queue
    while not core.exit_requested:
        if not queue:
            core.release_pending()
            core.flush()
            with core.lock:  # other threads (the actor client's flusher) poll too
                got = core.poll(IDLE_POLL_MS)
            if not got and os.getppid() != parent:
                break
            continue
        with core.lock:
            core.poll(0)
        if not queue:
            continue
        spec = queue.popleft()
        if spec[P.E_ID] in core.cancelled:
            core.cancelled.discard(spec[P.E_ID])
            continue
        executor.run(spec)
        if core.rt.events:
            core._settle_refs()
    core.flush()
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
