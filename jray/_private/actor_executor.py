"""Running actor calls: decoding arguments, calling the method, encoding results.

``CallRunner`` turns one ``ACTOR_CALL`` message into result locations; the
three ways of scheduling calls share it:

- ``SyncMode``: calls run one at a time on the actor's main thread, in the
  order they arrive (the default; ``max_concurrency=1``);
- ``ThreadMode``: a pool of ``max_concurrency`` threads; calls start in
  arrival order;
- ``AsyncMode``: an asyncio loop in its own thread runs ``async def`` methods
  concurrently (up to ``max_concurrency``, default 1000); plain methods run on
  the loop thread, one at a time.

Finished calls go to ``done(msg, results)``: in sync mode it queues them for
the main thread, which sends after each batch of calls; in the concurrent
modes the thread that finished the call sends them itself (no hand-off to
the main thread, whose only job is then to receive calls).

Cancellation (``request_cancel``, from the control thread, see
``actor_cancel``): the call's key goes into ``requested``; a call whose key
is there when it would start is dropped (its result: ``TaskCancelledError``).
A running call is interrupted: sync mode — ``current`` names the call on the
main thread while the method runs, and the control thread signals the main
thread, whose handler raises only if ``current`` is a requested key (so a
signal landing in runtime code, or after the call, does nothing); thread mode
— ``PyThreadState_SetAsyncExc`` on the call's thread (best effort: it fires
at the next bytecode, not inside a blocking C call); async mode — the call's
asyncio task is cancelled. Plain methods of an async actor are not interrupted.
"""

from __future__ import annotations

import contextvars
import ctypes
import functools
import inspect
import os
import pickle
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from jray._private import actor_protocol as A
from jray._private import generator_stream as GS
from jray._private import protocol as P
from jray._private import serialization as S
from jray._private.actor_calls import retry_spec, retryable, split_call
from jray._private.core import CoreClient
from jray._private.object_ref import ObjectRef
from jray._private.task_context import CURRENT_METHOD
from jray.exceptions import ObjectLostError, SerializationError, TaskCancelledError

#: the key of the actor call running in this thread or asyncio task (the runtime context)
CURRENT_CALL: contextvars.ContextVar[bytes | None] = contextvars.ContextVar(
    "jray_current_call", default=None)
#: (oid, loc, refs contained in the value)
Result = tuple[bytes, P.Loc, list[bytes]]
FETCH_TRIES = 5
#: cancel requests remembered for calls that have not arrived (the oldest are forgotten)
REQUESTED_MAX = 4096


def _exit_process(code: Any) -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    os._exit(code if isinstance(code, int) else (0 if code is None else 1))


class ExitActor(BaseException):
    """Raised by ``jray.actor.exit_actor()`` inside a method: exit after this call."""


def _ray_ready(instance: Any) -> bool:
    return True


def _ray_call(instance: Any, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return fn(instance, *args, **kwargs)


def _ray_terminate(instance: Any) -> None:
    raise ExitActor()


#: Ray's built-in methods, callable on every actor (unless its class defines its own):
#: ``__ray_ready__()`` -> True once the actor runs, ``__ray_call__(fn, *a, **kw)`` ->
#: ``fn(actor, *a, **kw)``, ``__ray_terminate__()``: exit after the calls before it
BUILTIN_METHODS: dict[str, Callable[..., Any]] = {
    "__ray_ready__": _ray_ready, "__ray_call__": _ray_call, "__ray_terminate__": _ray_terminate,
}


class _DepFailed(Exception):
    def __init__(self, loc: P.Loc) -> None:
        self.loc = loc


class CallRunner:
    """Runs calls on one actor instance (thread-safe; no socket of its own)."""

    def __init__(self, core: CoreClient, instance: Any, class_name: str,
                 methods: dict[str, int], after_call: Callable[[], None]) -> None:
        self.core = core
        self.instance = instance
        self.class_name = class_name
        self.methods: dict[str, Any] = {}
        for name in methods:
            fn = getattr(instance, name, None)
            if fn is None and name in BUILTIN_METHODS:
                fn = functools.partial(BUILTIN_METHODS[name], instance)
            if fn is not None:
                self.methods[name] = fn
        self.after_call = after_call
        self.exit_requested = False
        # cancellation (see module docstring)
        self.lock = threading.Lock()
        self.requested: dict[bytes, None] = {}
        self.current: bytes | None = None  # the call running on the main thread
        self.threads: dict[bytes, int] = {}  # call key -> thread running it (thread mode)
        self.hit: set[bytes] = set()  # calls whose thread got an asynchronous exception

    # --- cancellation ---------------------------------------------------------------
    def request_cancel(self, key: bytes) -> bool:
        """Remember that ``key`` is cancelled; True if it runs now on the main thread."""
        with self.lock:
            self.requested[key] = None
            if len(self.requested) > REQUESTED_MAX:
                try:  # the main thread pops without the lock
                    del self.requested[next(iter(self.requested))]
                except (RuntimeError, KeyError, StopIteration):
                    pass
            ident = self.threads.get(key)
            if ident is not None and key not in self.hit:
                self.hit.add(key)
                ctypes.pythonapi.PyThreadState_SetAsyncExc(
                    ctypes.c_ulong(ident), ctypes.py_object(TaskCancelledError))
        return self.current == key

    def on_signal(self) -> None:
        """The main thread's signal handler: interrupt the current call if cancelled."""
        key = self.current
        if key is not None and key in self.requested:
            self.current = None
            raise TaskCancelledError("actor call cancelled by jray.cancel()")

    def cancelled(self, msg: P.Msg) -> list[Result]:
        self.requested.pop(msg[A.C_RETURNS][0], None)
        loc = S.error_loc(TaskCancelledError(
            f"actor call {self.label(msg)}() was cancelled by jray.cancel()"))
        return [(oid, loc, []) for oid in msg[A.C_RETURNS]]

    def label(self, msg: P.Msg) -> str:
        """``Class.method`` of a call (for messages)."""
        return f"{self.class_name}.{split_call(msg[A.C_METHOD])[0]}"

    def producer(self, msg: P.Msg) -> GS.Producer:
        """What streams the items of a generator method's call to its caller."""
        return GS.Producer(self.core, msg[A.C_RETURNS][0], msg[A.C_CALLER],
                                   self.label(msg))

    def _stream(self, msg: P.Msg, result: Any) -> Any:
        """A generator's items: streamed, stored (dynamic) or as the call's returns."""
        if type(result) not in GS.STREAMED:
            return result
        mode = split_call(msg[A.C_METHOD])[1].get("g")
        if mode == "streaming":
            return GS.run_stream(self.producer(msg), result)
        if mode == "dynamic":
            return GS.run_dynamic(result, self.label(msg))
        return GS.collect_returns(result, len(msg[A.C_RETURNS]), self.label(msg))

    async def stream_async(self, msg: P.Msg, result: Any) -> Any:
        """``_stream`` on an async actor's event loop."""
        mode = split_call(msg[A.C_METHOD])[1].get("g")
        if mode == "streaming":
            return await GS.run_stream_async(self.producer(msg), result)
        if mode == "dynamic":
            return await GS.run_dynamic_async(result, self.label(msg))
        return await GS.collect_returns_async(result, len(msg[A.C_RETURNS]),
                                                      self.label(msg))

    def _invoke(self, msg: P.Msg, key: bytes, fn: Any, args: list[Any], kwargs: dict[str, Any],
                main: bool) -> Any:
        token = CURRENT_CALL.set(key)
        CURRENT_METHOD.set(fn)  # (read only while CURRENT_CALL is set)
        if main:
            self.current = key
            try:
                if key in self.requested:
                    raise TaskCancelledError
                return self._stream(msg, fn(*args, **kwargs))
            finally:
                self.current = None
                CURRENT_CALL.reset(token)
        ident = threading.get_ident()
        with self.lock:
            self.threads[key] = ident
        try:
            if key in self.requested:
                raise TaskCancelledError
            return self._stream(msg, fn(*args, **kwargs))
        finally:
            CURRENT_CALL.reset(token)
            self._thread_done(key, ident)

    def _thread_done(self, key: bytes, ident: int) -> None:
        with self.lock:
            self.threads.pop(key, None)
            if key in self.hit:  # the exception may not have fired yet: withdraw it
                self.hit.discard(key)
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), None)

    def method(self, name: str) -> Any:
        name = split_call(name)[0]
        fn = self.methods.get(name)
        if fn is None:
            raise AttributeError(f"actor class {self.class_name} has no method {name!r}")
        return fn

    def prepare(self, msg: P.Msg) -> tuple[Any, list[Any], dict[str, Any]]:
        """The bound method and its decoded arguments; raises ``_DepFailed``."""
        _, method, blob, deps, _returns, _caller, _ident = msg
        fn = self.method(method)
        try:
            if not deps:
                if blob is None:
                    return fn, [], {}
                args, kwargs = pickle.loads(blob)
                return fn, args, kwargs
            values = [self._dep(oid, loc) for oid, loc in deps]
            if blob is None:
                args, kwargs = values[0]
                values = values[1:]
            else:
                args, kwargs = pickle.loads(blob)
        except _DepFailed:
            raise
        except Exception as exc:
            raise SerializationError(
                f"could not unpickle the arguments of {self.class_name}.{method}() in the "
                f"actor: {type(exc).__name__}: {exc}"
            ) from exc
        if values:
            args, kwargs = S.fill_args(args, kwargs, values)
        return fn, args, kwargs

    def _dep(self, oid: bytes, loc: P.Loc | None) -> Any:
        if loc is None:
            loc = self._fetch(oid)
        if loc[0] == P.LOC_ERROR:
            raise _DepFailed(loc)
        return self.core.decode(oid, loc)

    def _fetch(self, oid: bytes) -> P.Loc:
        """Ask the head for an argument the caller did not have yet."""
        core = self.core
        ref = ObjectRef(oid)
        try:
            for attempt in range(FETCH_TRIES):
                loc = core.get([oid], None)[0]
                if loc[0] != P.LOC_ERROR or attempt == FETCH_TRIES - 1:
                    return loc
                try:
                    S.decode(loc)
                except ObjectLostError as exc:  # the head may not have heard of it yet
                    if "unknown to the head" not in str(exc):
                        return loc
                except BaseException:
                    return loc
                with core.lock:
                    core.cache.pop(oid, None)
                time.sleep(0.01 * 2**attempt)
            return loc
        finally:
            del ref

    def finish(self, msg: P.Msg, result: Any) -> list[Result]:
        """Encode ``result`` into the call's return objects."""
        returns = msg[A.C_RETURNS]
        name = self.label(msg)
        try:
            values = S.split_returns(name, result, len(returns))
        except SerializationError as exc:
            err = S.error_loc(exc)
            return [(oid, err, []) for oid in returns]
        core = self.core
        out: list[Result] = []
        with core.lock:  # rt.capture is per process
            for oid, value in zip(returns, values):
                contained: list[bytes] = []
                core.rt.capture = contained
                try:
                    loc = S.encode(value, core.shm_prefix + oid.hex(), core.node_id,
                                   functools.partial(core.reserve, oid))
                except Exception as exc:
                    contained = []
                    loc = S.error_loc(SerializationError(
                        f"the return value of {name}() cannot be serialized: an object of "
                        f"type {S.describe_unpicklable(value)} ({type(exc).__name__}: {exc})"))
                finally:
                    core.rt.capture = None
                out.append((oid, loc, contained))
        return out

    def failed(self, msg: P.Msg, exc: BaseException) -> list[Result]:
        if isinstance(exc, _DepFailed):
            loc = exc.loc
        elif isinstance(exc, SerializationError):
            loc = S.error_loc(exc)
        else:
            loc = S.task_error_loc(self.label(msg), exc)
        return [(oid, loc, []) for oid in msg[A.C_RETURNS]]

    def run(self, msg: P.Msg, main: bool = True) -> list[Result]:
        """Run one call to completion (sync mode: ``main``, and thread mode)."""
        key = msg[A.C_RETURNS][0]
        if key in self.requested:
            return self.cancelled(msg)
        try:
            fn, args, kwargs = self.prepare(msg)
        except BaseException as exc:
            return self.conclude(msg, key, None, exc, TaskCancelledError)
        left, spec = self.retries(msg, fn)
        while True:
            try:
                result = self._invoke(msg, key, fn, args, kwargs, main)
            except BaseException as exc:  # user code: anything, SystemExit included
                if spec and left != 0 and key not in self.requested and retryable(spec, exc):
                    left -= 1  # retry_exceptions: run it again (-1: forever)
                    continue
                return self.conclude(msg, key, None, exc, TaskCancelledError)
            return self.conclude(msg, key, result, None, TaskCancelledError)

    def retries(self, msg: P.Msg, fn: Any) -> tuple[int, Any]:
        """(retries left, what to retry) of a call: the method's ``retry_exceptions``
        unless the call overrides it, within its ``max_task_retries``."""
        method = msg[A.C_METHOD]
        if "\x00" not in method:
            return 0, None
        opts = split_call(method)[1]
        return int(opts.get("r", "0")), retry_spec(fn, opts)

    def conclude(self, msg: P.Msg, key: bytes, result: Any, exc: BaseException | None,
                 cancel: type[BaseException]) -> list[Result]:
        """A call's results from how it ended; ``cancel``: the exception a cancel raises."""
        if isinstance(exc, SystemExit):  # sys.exit() in a method ends the process (as in
            _exit_process(exc.code)      # Ray): restarts and call retries then apply
        if isinstance(exc, ExitActor):
            self.exit_requested = True
            exc = None
        elif isinstance(exc, cancel) and key in self.requested:
            return self.cancelled(msg)
        results = self.finish(msg, result) if exc is None else self.failed(msg, exc)
        self.after_call()
        return results


Done = Callable[[P.Msg, list[Result]], None]


class SyncMode:
    """One call at a time, on the calling (main) thread."""

    concurrent = False

    def __init__(self, runner: CallRunner, done: Done) -> None:
        self.runner = runner
        self.done = done

    def dispatch(self, msg: P.Msg) -> None:
        try:
            results = self.runner.run(msg)
        except TaskCancelledError:  # the signal landed just after the method returned
            results = self.runner.cancelled(msg)
        self.done(msg, results)

    def running(self) -> int:
        return 0

    def stop(self) -> None:
        pass


class ThreadMode:
    """Up to ``max_concurrency`` calls at once on a thread pool."""

    concurrent = True

    def __init__(self, runner: CallRunner, done: Done, max_concurrency: int) -> None:
        self.runner = runner
        self.done = done
        self.pool = ThreadPoolExecutor(max_workers=max_concurrency,
                                       thread_name_prefix="jray-actor")
        self.lock = threading.Lock()
        self.count = 0

    def dispatch(self, msg: P.Msg) -> None:
        with self.lock:
            self.count += 1
        self.pool.submit(self._run, msg)

    def _run(self, msg: P.Msg) -> None:
        try:
            try:
                results = self.runner.run(msg, main=False)
            except TaskCancelledError:  # fired just after the method returned
                results = self.runner.cancelled(msg)
            self.done(msg, results)
        finally:
            with self.lock:
                self.count -= 1

    def running(self) -> int:
        return self.count

    def stop(self) -> None:
        self.pool.shutdown(wait=True)


class AsyncMode:
    """An asyncio event loop in its own thread; ``async def`` methods run concurrently."""

    concurrent = True

    def __init__(self, runner: CallRunner, done: Done, send: Callable[[], None],
                 max_concurrency: int) -> None:
        import asyncio

        self.asyncio = asyncio
        self.runner = runner
        self.done = done
        self.send = send
        self.send_scheduled = False
        self.loop = asyncio.new_event_loop()
        self.sem = asyncio.Semaphore(max_concurrency)
        self.tasks: set[Any] = set()
        self.by_key: dict[bytes, Any] = {}  # call key -> its asyncio task (loop thread only)
        self.lock = threading.Lock()
        self.count = 0
        self.pending: list[P.Msg] = []
        self.thread = threading.Thread(target=self._serve, name="jray-actor-loop", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def dispatch(self, msg: P.Msg) -> None:
        with self.lock:
            self.count += 1
            self.pending.append(msg)
            first = len(self.pending) == 1
        if first:  # one wake-up of the loop per batch of calls
            self.loop.call_soon_threadsafe(self._start)

    def _start(self) -> None:
        with self.lock:
            batch, self.pending = self.pending, []
        for msg in batch:
            task = self.loop.create_task(self._run(msg))
            self.tasks.add(task)
            self.by_key[msg[A.C_RETURNS][0]] = task
            task.add_done_callback(self.tasks.discard)

    def cancel(self, key: bytes) -> None:
        """Cancel the call's task (any thread); ``runner.request_cancel`` came first."""
        self.loop.call_soon_threadsafe(self._cancel, key)

    def _cancel(self, key: bytes) -> None:
        task = self.by_key.get(key)
        if task is not None:
            task.cancel()

    async def _run(self, msg: P.Msg) -> None:
        runner = self.runner
        key = msg[A.C_RETURNS][0]
        try:
            try:
                async with self.sem:
                    results = await self._call(msg, key)
            except self.asyncio.CancelledError:  # while waiting for its turn
                results = runner.cancelled(msg)
            finally:
                self.by_key.pop(key, None)
            self.done(msg, results)
            if not self.send_scheduled:  # one send for all calls done in this turn
                self.send_scheduled = True
                self.loop.call_soon(self._send)
        finally:
            with self.lock:
                self.count -= 1

    async def _call(self, msg: P.Msg, key: bytes) -> list[Result]:
        runner = self.runner
        if key in runner.requested:
            return runner.cancelled(msg)
        CURRENT_CALL.set(key)  # this asyncio task's own context
        try:
            fn, args, kwargs = runner.prepare(msg)
            CURRENT_METHOD.set(fn)
        except BaseException as exc:
            return runner.conclude(msg, key, None, exc, self.asyncio.CancelledError)
        left, spec = runner.retries(msg, fn)
        while True:
            try:
                result = fn(*args, **kwargs)
                # an ObjectRef is awaitable too, but a method that returns one returns it
                if inspect.isawaitable(result) and type(result) is not ObjectRef:
                    result = await result
                elif type(result) in GS.STREAMED:
                    result = await runner.stream_async(msg, result)
            except BaseException as exc:  # user code
                if spec and left != 0 and key not in runner.requested and \
                        retryable(spec, exc):
                    left -= 1
                    continue
                return runner.conclude(msg, key, None, exc, self.asyncio.CancelledError)
            return runner.conclude(msg, key, result, None, self.asyncio.CancelledError)

    def _send(self) -> None:
        self.send_scheduled = False
        self.send()

    def running(self) -> int:
        return self.count

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


#: the concurrency group every actor with groups has beside its own (Ray's name)
SYSTEM_GROUP = "_ray_system"


class GroupedMode:
    """``concurrency_groups``: each group runs its calls on its own threads (a
    ``ThreadMode``) or, in an async actor, its own event loop (an ``AsyncMode``); the
    default group (methods of no group) gets ``max_concurrency``. A call's group is
    its ``.options(concurrency_group=)``, else its method's ``@jray.method`` one."""

    concurrent = True

    def __init__(self, runner: CallRunner, modes: dict[str, ThreadMode | AsyncMode],
                 default: ThreadMode | AsyncMode) -> None:
        self.runner = runner
        self.modes = modes
        self.default = default

    def group_of(self, msg: P.Msg) -> ThreadMode | AsyncMode:
        name, opts = split_call(msg[A.C_METHOD])
        group = opts.get("c")
        if group is None:
            fn = self.runner.methods.get(name)
            group = getattr(fn, "__jray_concurrency_group__", None)
        return self.default if group is None else self.modes.get(group, self.default)

    def dispatch(self, msg: P.Msg) -> None:
        self.group_of(msg).dispatch(msg)

    def cancel(self, key: bytes) -> None:
        for mode in (self.default, *self.modes.values()):
            if isinstance(mode, AsyncMode):
                mode.cancel(key)

    def running(self) -> int:
        return self.default.running() + sum(m.running() for m in self.modes.values())

    def stop(self) -> None:
        for mode in (self.default, *self.modes.values()):
            mode.stop()
