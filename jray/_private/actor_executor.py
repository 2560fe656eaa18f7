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
"""

from __future__ import annotations

import functools
import inspect
import pickle
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from jray._private import actor_protocol as A
from jray._private import protocol as P
from jray._private import serialization as S
from jray._private.core import CoreClient
from jray._private.object_ref import ObjectRef
from jray.exceptions import ObjectLostError, SerializationError

#: (oid, loc, refs contained in the value)
Result = tuple[bytes, P.Loc, list[bytes]]
FETCH_TRIES = 5


class ExitActor(BaseException):
    """Raised by ``jray.actor.exit_actor()`` inside a method: exit after this call."""


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
            if fn is not None:
                self.methods[name] = fn
        self.after_call = after_call
        self.exit_requested = False

    def method(self, name: str) -> Any:
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
            args = [values[a.i] if type(a) is S.ArgRef else a for a in args]
            for k, v in kwargs.items():
                if type(v) is S.ArgRef:
                    kwargs[k] = values[v.i]
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
        name = f"{self.class_name}.{msg[A.C_METHOD]}"
        if len(returns) == 1:
            values = [result]
        else:
            try:
                values = list(result)
            except TypeError:
                values = []
            if len(values) != len(returns):
                err = S.error_loc(SerializationError(
                    f"{name}() declared num_returns={len(returns)} but returned "
                    f"{type(result).__name__} {'of length ' + str(len(values)) if values else ''}"
                ))
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
            loc = S.task_error_loc(f"{self.class_name}.{msg[A.C_METHOD]}", exc)
        return [(oid, loc, []) for oid in msg[A.C_RETURNS]]

    def run(self, msg: P.Msg) -> list[Result]:
        """Run one call to completion (sync and thread modes)."""
        try:
            fn, args, kwargs = self.prepare(msg)
            result = fn(*args, **kwargs)
        except ExitActor:
            self.exit_requested = True
            result = None
        except BaseException as exc:  # user code: anything, SystemExit included
            results = self.failed(msg, exc)
            self.after_call()
            return results
        results = self.finish(msg, result)
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
        self.done(msg, self.runner.run(msg))

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
            self.done(msg, self.runner.run(msg))
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
            task.add_done_callback(self.tasks.discard)

    async def _run(self, msg: P.Msg) -> None:
        runner = self.runner
        try:
            async with self.sem:
                try:
                    fn, args, kwargs = runner.prepare(msg)
                    result = fn(*args, **kwargs)
                    if inspect.isawaitable(result):
                        result = await result
                except ExitActor:
                    runner.exit_requested = True
                    result = None
                except BaseException as exc:  # user code
                    results = runner.failed(msg, exc)
                else:
                    results = runner.finish(msg, result)
                runner.after_call()
                self.done(msg, results)
                if not self.send_scheduled:  # one send for all calls done in this turn
                    self.send_scheduled = True
                    self.loop.call_soon(self._send)
        finally:
            with self.lock:
                self.count -= 1

    def _send(self) -> None:
        self.send_scheduled = False
        self.send()

    def running(self) -> int:
        return self.count

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
