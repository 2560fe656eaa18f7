"""Running actor calls: decoding arguments, calling the method, encoding results.

``CallRunner`` turns one ``ACTOR_CALL`` message into result locations; the
ways of scheduling calls (``actor_modes``: sync, threaded, async, grouped)
share it.

Finished calls go to ``done(msg, results)``: in sync mode it queues them for
the main thread, which sends after each batch of calls; in the concurrent
modes the thread that finished the call sends them itself (no hand-off to
the main thread, whose only job is then to receive calls).

Cancellation (``request_cancel``, from the control thread): the call's key
goes into ``requested``; a call whose key is there when it would start is
dropped (its result: ``TaskCancelledError``). As in Ray, a running call of a
sync or threaded actor is not interrupted (an actor has state a half-run
method would leave broken): it may look at ``get_runtime_context().is_canceled()``
and stop early, and its result is ``TaskCancelledError`` however it ends; a
generator method stops at its next item. In an async actor the call's asyncio
task is cancelled (``asyncio.CancelledError`` inside it).

Interruption (``request_cancel(key, interrupt=True)``; jray-only, not Ray's API:
``api.interrupt``, what an interrupted notebook cell sends its engines' calls):
a running call is stopped, and its result is ``TaskCancelledError``. Sync mode
— ``current`` names the call on the main thread while the method runs, and the
control thread signals the main thread (``pthread_kill``: a blocking ``sleep``
is woken), whose handler ``on_signal`` raises only if ``current`` is a call
asked to be interrupted (so a signal landing in runtime code, or after the
call, does nothing); thread mode — ``PyThreadState_SetAsyncExc`` on the call's
thread (best effort: it fires at the next bytecode, not inside a blocking C
call; withdrawn if the call ends first); async mode — as a cancel, the task is
cancelled. Plain methods of an async actor are not interrupted.

Methods are looked up on the class (bound to the instance), as in Ray, so an
instance attribute of the same name does not hide a method.
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
from typing import Any

import setproctitle

from jray._private import actor_protocol as A
from jray._private import generator_stream as GS
from jray._private import protocol as P
from jray._private import serialization as S
from jray._private.actor_calls import retry_spec, retryable, split_call
from jray._private.core import CoreClient
from jray._private.object_ref import ObjectRef
from jray._private.task_context import CURRENT_METHOD
from jray.exceptions import (
    ActorDiedError,
    ActorUnavailableError,
    ObjectLostError,
    SerializationError,
    TaskCancelledError,
)

#: the key of the actor call running in this thread or asyncio task (the runtime context)
CURRENT_CALL: contextvars.ContextVar[bytes | None] = contextvars.ContextVar(
    "jray_current_call", default=None)
#: the runner of the actor this process hosts (``is_canceled``)
ACTIVE: list[CallRunner] = []
#: (oid, loc, refs contained in the value)
Result = tuple[bytes, P.Loc, list[bytes]]
FETCH_TRIES = 5
#: cancel requests remembered for calls that have not arrived (the oldest are forgotten)
REQUESTED_MAX = 4096
#: a call that ran this long reads the waiting cancels before it concludes
DRAIN_AFTER_S = 0.001


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


def _titled(method: str) -> str | None:
    """For a call named with ``.options(name=)``: set the process title to
    ``ray::<name>`` (as Ray does) and return the title to put back after it."""
    if "\x00" not in method:
        return None
    named = split_call(method)[1].get("n")
    if named is None:
        return None
    before = setproctitle.getproctitle()
    setproctitle.setproctitle("ray::" + bytes.fromhex(named).decode())
    return before


class _Rerun(Exception):
    """A streamed generator method raised ``cause``, which its call retries."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(repr(cause))
        self.cause = cause


def _retrying(gen: Any, spec: Any) -> Any:
    try:
        yield from gen
    except Exception as exc:
        if retryable(spec, exc):
            raise _Rerun(exc) from exc
        raise


async def _retrying_async(gen: Any, spec: Any) -> Any:
    try:
        async for item in gen:
            yield item
    except Exception as exc:
        if retryable(spec, exc):
            raise _Rerun(exc) from exc
        raise


def _bound(instance: Any, name: str) -> Any:
    """The method ``name`` of ``instance``, found on its class (Ray's lookup: an instance
    attribute of that name does not hide it); an attribute only the instance has
    (``__getattr__``, set in ``__init__``) otherwise."""
    cls = type(instance)
    try:
        raw = inspect.getattr_static(cls, name)
    except AttributeError:
        return getattr(instance, name, None)
    get = getattr(type(raw), "__get__", None)
    return get(raw, instance, cls) if get is not None else raw


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
            fn = _bound(instance, name)
            if fn is None and name in BUILTIN_METHODS:
                fn = functools.partial(BUILTIN_METHODS[name], instance)
            if fn is not None:
                self.methods[name] = fn
        self.after_call = after_call
        self.exit_requested = False
        self.is_async = False  # set by the worker: is_canceled() is refused there
        # exception retries: those earlier incarnations used (by call key), and who hears
        # of each new one (the head, through the worker)
        self.used: dict[bytes, int] = {}
        self.on_retry: Callable[[bytes], None] = lambda key: None
        # cancellation (see module docstring)
        self.lock = threading.Lock()
        self.requested: dict[bytes, bool] = {}  # cancelled call key -> interrupt it
        #: reads the cancels that wait on the control socket (set by the actor worker)
        self.drain_cancels: Callable[[], None] | None = None
        self.main = threading.main_thread().ident
        self.current: bytes | None = None  # the call running on the main thread
        self.threads: dict[bytes, int] = {}  # running call key -> its thread
        self.hit: set[bytes] = set()  # calls whose thread got an asynchronous exception
        ACTIVE[:] = [self]

    # --- cancellation ---------------------------------------------------------------
    def request_cancel(self, key: bytes, interrupt: bool = False) -> bool:
        """Remember that ``key`` is cancelled (a running call sees it in ``is_canceled``);
        ``interrupt``: also stop it if it runs (see module docstring). True: it runs on
        the main thread, which the caller is to signal."""
        with self.lock:
            self.requested[key] = interrupt or self.requested.get(key, False)
            if len(self.requested) > REQUESTED_MAX:
                try:  # the main thread pops without the lock
                    del self.requested[next(iter(self.requested))]
                except (RuntimeError, KeyError, StopIteration):
                    pass
            ident = self.threads.get(key) if interrupt else None
            if ident is None:
                return False
            if ident == self.main:
                return True
            if key not in self.hit:
                self.hit.add(key)
                ctypes.pythonapi.PyThreadState_SetAsyncExc(
                    ctypes.c_ulong(ident), ctypes.py_object(TaskCancelledError))
            return False

    def on_signal(self) -> None:
        """The main thread's signal handler: interrupt the current call if asked to."""
        key = self.current
        if key is not None and self.requested.get(key):
            self.current = None
            raise TaskCancelledError("actor call interrupted")

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

    def _stream(self, msg: P.Msg, result: Any, retry: Any = None) -> Any:
        """A generator's items: streamed, stored (dynamic) or as the call's returns.

        ``retry``: what the call still retries; a streamed generator that raises one
        of those fails the call (it reruns, and its caller skips the items it has)."""
        if type(result) not in GS.STREAMED:
            return result
        mode = split_call(msg[A.C_METHOD])[1].get("g")
        if mode == "streaming":
            if retry:
                wrap = _retrying_async if inspect.isasyncgen(result) else _retrying
                return GS.run_stream(self.producer(msg), wrap(result, retry), (_Rerun,))
            return GS.run_stream(self.producer(msg), result)
        if mode == "dynamic":
            return GS.run_dynamic(result, self.label(msg))
        return GS.collect_returns(result, len(msg[A.C_RETURNS]), self.label(msg))

    async def stream_async(self, msg: P.Msg, result: Any, retry: Any = None) -> Any:
        """``_stream`` on an async actor's event loop."""
        mode = split_call(msg[A.C_METHOD])[1].get("g")
        if mode == "streaming":
            if retry and inspect.isasyncgen(result):
                return await GS.run_stream_async(
                    self.producer(msg), _retrying_async(result, retry), (_Rerun,))
            return await GS.run_stream_async(self.producer(msg), result)
        if mode == "dynamic":
            return await GS.run_dynamic_async(result, self.label(msg))
        return await GS.collect_returns_async(result, len(msg[A.C_RETURNS]),
                                                      self.label(msg))

    def _invoke(self, msg: P.Msg, key: bytes, fn: Any, args: list[Any], kwargs: dict[str, Any],
                retry: Any) -> Any:
        token = CURRENT_CALL.set(key)
        title = _titled(msg[A.C_METHOD])
        CURRENT_METHOD.set(fn)  # (read only while CURRENT_CALL is set)
        ident = threading.get_ident()
        main = ident == self.main
        try:
            with self.lock:
                self.threads[key] = ident
            if main:
                self.current = key
            if key in self.requested:
                raise TaskCancelledError
            result = fn(*args, **kwargs)
            if type(result) in GS.STREAMED and not inspect.isasyncgen(result):
                result = self._until_cancelled(key, result)
            return self._stream(msg, result, retry)
        finally:
            if main:
                self.current = None
            CURRENT_CALL.reset(token)
            self._call_done(key, ident)
            if title is not None:
                setproctitle.setproctitle(title)

    def _call_done(self, key: bytes, ident: int) -> None:
        with self.lock:
            self.threads.pop(key, None)
            if key in self.hit:  # the exception may not have fired yet: withdraw it
                self.hit.discard(key)
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), None)

    def _until_cancelled(self, key: bytes, gen: Any) -> Any:
        """A sync generator's items until its call is cancelled (then it is closed)."""
        try:
            for item in gen:
                if key in self.requested:
                    raise TaskCancelledError
                yield item
        finally:
            gen.close()

    def is_canceled(self) -> bool:
        """Whether the call running in this thread was cancelled (``is_canceled``)."""
        if self.is_async:
            raise RuntimeError("This method is not supported in an async actor.")
        key = CURRENT_CALL.get()
        return key is not None and key in self.requested

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
        left = self.budget(key, left)
        if left < -1:
            return self.exhausted(msg)
        t0 = time.perf_counter()
        while True:
            try:
                retry = spec if spec and left != 0 else None
                result = self._invoke(msg, key, fn, args, kwargs, retry)
            except BaseException as exc:  # user code: anything, SystemExit included
                if isinstance(exc, _Rerun):
                    exc = exc.cause
                if spec and left != 0 and key not in self.requested and retryable(spec, exc):
                    left -= left > 0  # retry_exceptions: run it again (-1: forever)
                    self.on_retry(key)
                    continue
                return self.conclude(msg, key, None, exc, TaskCancelledError)
            drain = self.drain_cancels
            if drain is not None and time.perf_counter() - t0 > DRAIN_AFTER_S:
                drain()  # a cancel sent while it ran counts, though not yet read
            return self.conclude(msg, key, result, None, TaskCancelledError)

    def budget(self, key: bytes, left: int) -> int:
        """``left`` less the exception retries earlier incarnations used on this call
        (one budget for exceptions and restarts, as in Ray); below -1: used up."""
        used = self.used.get(key, 0)
        if left < 0 or not used:
            return left
        return left - used if left - used >= 0 else -2

    def exhausted(self, msg: P.Msg) -> list[Result]:
        """A resent call whose retries the actor's earlier runs used up."""
        loc = S.error_loc(ActorUnavailableError(
            f"actor call {self.label(msg)}() was in flight when its actor restarted, and "
            f"its max_task_retries were used up by earlier tries"))
        return [(oid, loc, []) for oid in msg[A.C_RETURNS]]

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
        if isinstance(exc, ExitActor):  # the call ends the actor: it fails, as in Ray
            self.exit_requested = True
            self.after_call()
            loc = S.error_loc(ActorDiedError(
                f"The actor is dead because {self.label(msg)} called exit_actor() (it "
                f"exited on purpose; no restart)"))
            return [(oid, loc, []) for oid in msg[A.C_RETURNS]]
        if key in self.requested and (isinstance(exc, cancel) or cancel is TaskCancelledError):
            return self.cancelled(msg)  # a sync call's result, however it ended
        results = self.finish(msg, result) if exc is None else self.failed(msg, exc)
        self.after_call()
        return results
