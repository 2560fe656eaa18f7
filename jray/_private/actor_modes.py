"""How an actor schedules its calls (the modes of ``actor_executor.CallRunner``).

- ``SyncMode``: calls run one at a time on the actor's main thread, in the
  order they arrive (the default; ``max_concurrency=1``); a ``_ray_system``
  call runs on a thread of its own;
- ``ThreadMode``: a pool of ``max_concurrency`` threads; calls start in
  arrival order;
- ``AsyncMode``: an asyncio loop in its own thread runs ``async def`` methods
  concurrently (up to ``max_concurrency``, default 1000); a call whose argument
  is not ready awaits it there, so the calls behind it run meanwhile;
- ``GroupedMode``: ``concurrency_groups``, one of the above per group.
"""

from __future__ import annotations

import inspect
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import setproctitle

from jray._private import actor_protocol as A
from jray._private import generator_stream as GS
from jray._private import protocol as P
from jray._private.actor_calls import retryable, split_call
from jray._private.actor_executor import (
    CURRENT_CALL,
    CallRunner,
    Result,
    _Rerun,
    _titled,
)
from jray._private.object_ref import ObjectRef
from jray._private.task_context import CURRENT_METHOD

Done = Callable[[P.Msg, list[Result]], None]


class SyncMode:
    """One call at a time, on the calling (main) thread; a call sent to Ray's
    ``_ray_system`` group runs on a thread of its own (``system``, made when the
    first one comes), so a blocked method does not hold it up.

    A call whose arguments are not ready waits aside (``parked``, with the calls
    its caller sent after it), so calls from other callers run meanwhile, as in
    Ray (whose callers send a call only once its arguments are ready); the main
    loop runs it (``run_parked``) once they are."""

    concurrent = False

    def __init__(self, runner: CallRunner, done: Done,
                 system: Callable[[], ThreadMode] | None = None) -> None:
        self.runner = runner
        self.done = done
        self.system = system
        self.system_mode: ThreadMode | None = None
        #: caller -> its calls waiting, oldest first, each with the refs it waits for
        self.parked: dict[str, deque[tuple[P.Msg, list[ObjectRef]]]] = {}

    def dispatch(self, msg: P.Msg) -> None:
        method = msg[A.C_METHOD]
        if self.system is not None and "\x00" in method and \
                split_call(method)[1].get("c") == SYSTEM_GROUP:
            if self.system_mode is None:
                self.system_mode = self.system()
            self.system_mode.dispatch(msg)
            return
        caller = msg[A.C_CALLER]
        queue = self.parked.get(caller)
        cache = self.runner.core.cache
        waiting = [ObjectRef(oid) for oid, loc in msg[A.C_DEPS] or ()
                   if loc is None and oid not in cache]
        if queue is None and not waiting:
            self.done(msg, self.runner.run(msg))
            return
        for ref in waiting:
            ref.future()  # the waiter thread fetches it meanwhile
        if queue is None:
            queue = self.parked[caller] = deque()
        queue.append((msg, waiting))

    def run_parked(self) -> None:
        """Run the parked calls whose arguments arrived (each caller's in order)."""
        cache = self.runner.core.cache
        requested = self.runner.requested
        for caller, queue in list(self.parked.items()):
            while queue:
                msg, waiting = queue[0]
                if any(r.id not in cache for r in waiting) and \
                        msg[A.C_RETURNS][0] not in requested:
                    break
                queue.popleft()
                self.done(msg, self.runner.run(msg))
            if not queue:
                del self.parked[caller]

    def running(self) -> int:
        parked = sum(len(q) for q in self.parked.values())
        return parked + (self.system_mode.running() if self.system_mode is not None else 0)

    def stop(self) -> None:
        if self.system_mode is not None:
            self.system_mode.stop()


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
            self.done(msg, self.runner.run(msg, main=False))
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
                 max_concurrency: int, loop: Any = None) -> None:
        import asyncio

        self.asyncio = asyncio
        self.runner = runner
        self.done = done
        self.send = send
        self.send_scheduled = False
        self.loop = loop if loop is not None else asyncio.new_event_loop()
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
        # arguments not ready yet are awaited here, not fetched on the loop: the calls
        # behind this one run meanwhile (out of order, as in Ray's async actors)
        pending = [ObjectRef(oid) for oid, loc in msg[A.C_DEPS] or ()
                   if loc is None and oid not in runner.core.cache]
        if pending:
            await self.asyncio.wait([self.asyncio.wrap_future(r.future()) for r in pending])
        try:
            fn, args, kwargs = runner.prepare(msg)
            CURRENT_METHOD.set(fn)
        except BaseException as exc:
            return runner.conclude(msg, key, None, exc, self.asyncio.CancelledError)
        left, spec = runner.retries(msg, fn)
        left = runner.budget(key, left)
        if left < -1:
            return runner.exhausted(msg)
        title = _titled(msg[A.C_METHOD])
        try:
            return await self._attempts(msg, key, fn, args, kwargs, left, spec)
        finally:
            if title is not None:
                setproctitle.setproctitle(title)

    async def _attempts(self, msg: P.Msg, key: bytes, fn: Any, args: list[Any],
                        kwargs: dict[str, Any], left: int, spec: Any) -> list[Result]:
        runner = self.runner
        while True:
            try:
                result = fn(*args, **kwargs)
                # an ObjectRef is awaitable too, but a method that returns one returns it
                if inspect.isawaitable(result) and type(result) is not ObjectRef:
                    result = await result
                elif type(result) in GS.STREAMED:
                    result = await runner.stream_async(
                        msg, result, spec if spec and left != 0 else None)
            except BaseException as exc:  # user code
                if isinstance(exc, _Rerun):
                    exc = exc.cause
                if spec and left != 0 and key not in runner.requested and \
                        retryable(spec, exc):
                    left -= left > 0
                    runner.on_retry(key)
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
