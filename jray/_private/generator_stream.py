"""The producing side of generator calls: streams, ``num_returns=N`` and "dynamic".

Runs in the process that executes a generator task or actor method (see
``generators`` for the protocol): ``Producer`` sends each yielded value to the
caller (``GEN_ITEM``) and, with backpressure, waits for its ``GEN_ACK``;
``collect_returns`` turns the first N values into a call's N returns (the ones
after a failure raise it); ``run_dynamic`` gathers all values for
``num_returns="dynamic"``. ``wrap_task`` makes the function a worker runs for a
streaming or dynamic task.
"""

from __future__ import annotations

import functools
import threading
import types
from typing import Any

from jray._private import protocol as P
from jray._private import serialization as S
from jray._private.core import CoreClient
from jray._private.generators import (
    DynamicObjectRefGenerator,
    ErrorItem,
    Raises,
    is_async,
    is_generator,
    item_id,
)
from jray.exceptions import JrayError, SerializationError, TaskCancelledError

#: how long a producer waits for one acknowledgement before it checks again
ACK_POLL_MS = 50
#: while an async producer waits for room, this long between checks
ASYNC_ROOM_POLL_S = 0.01

# --- producer side (worker or actor process) ------------------------------------------
_acks: dict[bytes, int] = {}
_acks_lock = threading.Lock()


def _on_ack(msg: P.Msg) -> None:
    _, key, consumed = msg
    with _acks_lock:
        if consumed > _acks.get(key, 0):
            _acks[key] = consumed


class Producer:
    """Sends the items of one stream from the process that runs the generator."""

    def __init__(self, core: CoreClient, key: bytes, owner: str, name: str,
                 backpressure: int = -1) -> None:
        self.core = core
        self.key = key
        self.owner = owner
        self.name = name
        self.backpressure = backpressure
        self.count = 0
        if backpressure > 0:
            core.handlers[P.GEN_ACK] = _on_ack

    def send(self, value: Any) -> None:
        core = self.core
        oid = item_id(self.key, self.count)
        with core.lock:
            contained: list[bytes] = []
            core.rt.capture = contained
            try:
                loc = S.encode(value, core.shm_prefix + oid.hex(), core.node_id,
                               functools.partial(core.reserve, oid))
            except JrayError:
                raise
            except Exception as exc:
                raise SerializationError(
                    f"item {self.count} yielded by {self.name}() cannot be serialized: an "
                    f"object of type {S.describe_unpicklable(value)} "
                    f"({type(exc).__name__}: {exc})"
                ) from exc
            finally:
                core.rt.capture = None
            self._emit(oid, loc, contained)

    def fail(self, exc: BaseException) -> None:
        """The generator raised: its error becomes the last item."""
        if isinstance(exc, (TaskCancelledError, SerializationError)):
            loc = S.error_loc(exc)
        elif isinstance(exc, KeyboardInterrupt) or type(exc).__name__ == "CancelledError":
            loc = S.error_loc(TaskCancelledError(f"{self.name}() was cancelled"))
        else:
            loc = S.task_error_loc(self.name, exc)
        with self.core.lock:
            self._emit(item_id(self.key, self.count), loc, [])

    def _emit(self, oid: bytes, loc: P.Loc, contained: list[bytes]) -> None:
        core = self.core
        shared = loc[0] != P.LOC_INLINE and loc[0] != P.LOC_ERROR
        if shared or contained:  # the head must know it (its bytes, the refs it holds)
            core.to_head.append((P.PUT, oid, loc, contained))
            core.flush()
        core.send_owner(self.owner, (P.GEN_ITEM, self.key, self.count, oid, loc,
                                     core.addr, shared or bool(contained)))
        core.flush()
        self.count += 1

    def wait_room(self) -> None:
        """With backpressure: block while ``backpressure`` items are unconsumed."""
        if self.backpressure <= 0:
            return
        core = self.core
        while self.count - _acks.get(self.key, 0) >= self.backpressure:
            with core.lock:
                core.poll(ACK_POLL_MS)

    def done(self) -> int:
        with _acks_lock:
            _acks.pop(self.key, None)
        return self.count


def _retried(exc: BaseException, retry: Any) -> bool:
    """Whether ``exc`` is one the task's ``retry_exceptions`` covers."""
    if _interrupted(exc):
        return False
    return retry is True or (isinstance(retry, tuple) and isinstance(exc, retry))


def run_stream(producer: Producer, gen: Any, retry: Any = False) -> int:
    """Drive a (sync) generator, sending each item; returns the item count.

    An exception that ``retry`` covers fails the call (the worker runs it again; the
    consumer ignores the items it already has); any other becomes the last item.
    """
    if is_async(gen):
        import asyncio

        return asyncio.run(run_stream_async(producer, gen, retry))
    try:
        for value in gen:
            producer.send(value)
            producer.wait_room()
    except BaseException as exc:  # user code: its error is the stream's last item
        if _retried(exc, retry):
            producer.done()
            raise
        producer.fail(exc)
    return producer.done()


async def run_stream_async(producer: Producer, gen: Any, retry: Any = False) -> int:
    """Drive an async generator (or a sync one) from an event loop (``retry``: as in
    ``run_stream``)."""
    try:
        if is_async(gen):
            async for value in gen:
                producer.send(value)
                await _room_async(producer)
        else:
            for value in gen:
                producer.send(value)
                await _room_async(producer)
    except BaseException as exc:  # user code, or the call's cancellation
        if _retried(exc, retry):
            producer.done()
            raise
        producer.fail(exc)
    return producer.done()


async def _room_async(producer: Producer) -> None:
    if producer.backpressure <= 0:
        return
    import asyncio

    core = producer.core
    while producer.count - _acks.get(producer.key, 0) >= producer.backpressure:
        if core.lock.acquire(blocking=False):
            try:
                core.poll(0)
            finally:
                core.lock.release()
        await asyncio.sleep(ASYNC_ROOM_POLL_S)


def _interrupted(exc: BaseException) -> bool:
    return isinstance(exc, (TaskCancelledError, KeyboardInterrupt)) or \
        type(exc).__name__ == "CancelledError"


def _fill(values: list[Any], count: int, name: str, exc: BaseException | None) -> Any:
    if exc is not None:  # the items from the failure on raise it (as in Ray)
        values.extend([Raises(S.task_error_loc(name, exc))] * (count - len(values)))
    if len(values) < count:
        raise ValueError(f"{name}() declared num_returns={count} but its generator yielded "
                         f"{len(values)} value(s)")
    return values[0] if count == 1 else tuple(values)


def collect_returns(gen: Any, count: int, name: str) -> Any:
    """A generator's first ``count`` items as a call's ``count`` return values."""
    if is_async(gen):
        import asyncio

        return asyncio.run(collect_returns_async(gen, count, name))
    values: list[Any] = []
    err: BaseException | None = None
    try:
        for v in gen:
            values.append(v)
            if len(values) == count:
                break
    except BaseException as exc:  # user code
        if _interrupted(exc):
            raise
        err = exc
    return _fill(values, count, name, err)


async def collect_returns_async(gen: Any, count: int, name: str) -> Any:
    if not is_async(gen):  # a plain generator met on an event loop
        return collect_returns(gen, count, name)
    values: list[Any] = []
    err: BaseException | None = None
    try:
        async for v in gen:
            values.append(v)
            if len(values) == count:
                break
    except BaseException as exc:  # user code
        if _interrupted(exc):
            raise
        err = exc
    return _fill(values, count, name, err)


def dynamic_value(values: list[Any], name: str, exc: BaseException | None
                  ) -> DynamicObjectRefGenerator:
    """The value of a ``num_returns="dynamic"`` call: its items (an error last, if the
    generator raised), made refs where they are read."""
    if exc is not None:
        values.append(ErrorItem(S.task_error_loc(name, exc)))
    return DynamicObjectRefGenerator(values)


def run_dynamic(gen: Any, name: str, retry: Any = False) -> DynamicObjectRefGenerator:
    """Run a generator to its end; an error that ``retry`` covers fails the call instead."""
    if is_async(gen):
        import asyncio

        async def drain() -> list[Any]:
            return [v async for v in gen]
        gen = iter(asyncio.run(drain()))
    values: list[Any] = []
    try:
        for v in gen:
            values.append(v)
    except BaseException as exc:  # user code
        if _interrupted(exc) or _retried(exc, retry):
            raise
        return dynamic_value(values, name, exc)
    return dynamic_value(values, name, None)


async def run_dynamic_async(gen: Any, name: str) -> DynamicObjectRefGenerator:
    values: list[Any] = []
    try:
        if is_async(gen):
            async for v in gen:
                values.append(v)
        else:
            values.extend(gen)
    except BaseException as exc:  # user code
        if _interrupted(exc):
            raise
        return dynamic_value(values, name, exc)
    return dynamic_value(values, name, None)


#: suffixes of an actor call's method name: how the caller wants a generator's items
class StreamRequest:
    """What a task wrapped for streaming returns to the worker: the generator, and how."""

    __slots__ = ("gen", "backpressure", "retry")

    def __init__(self, gen: Any, backpressure: int, retry: Any) -> None:
        self.gen = gen
        self.backpressure = backpressure
        self.retry = retry


#: what a task function returns that the worker streams (``task_result``)
STREAMED = frozenset({types.GeneratorType, types.AsyncGeneratorType, StreamRequest})


def task_result(core: CoreClient, result: Any, key: bytes, owner: str, name: str,
                returns: int) -> Any:
    """The worker's hook: stream ``result`` if it is a generator of a one-return task."""
    if type(result) is StreamRequest:
        return run_stream(Producer(core, key, owner, name, result.backpressure), result.gen,
                          result.retry)
    return collect_returns(result, returns, name)  # num_returns=N: its first N items


class _StreamingCall:
    """A task function wrapped so that the worker streams what it yields."""

    def __init__(self, fn: Any, backpressure: int, retry: Any) -> None:
        self.fn = fn
        self.backpressure = backpressure
        self.retry = retry
        functools.update_wrapper(self, fn)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        result = self.fn(*args, **kwargs)
        if not is_generator(result):
            raise TypeError(
                f"{getattr(self.fn, '__name__', self.fn)}() was declared "
                f"num_returns='streaming' but returned a {type(result).__name__}, not a "
                f"generator")
        return StreamRequest(result, self.backpressure, self.retry)


class _DynamicCall:
    """A task function wrapped for ``num_returns="dynamic"``."""

    def __init__(self, fn: Any, retry: Any) -> None:
        self.fn = fn
        self.retry = retry
        functools.update_wrapper(self, fn)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        name = getattr(self.fn, "__name__", repr(self.fn))
        result = self.fn(*args, **kwargs)
        if not is_generator(result):
            raise TypeError(f"{name}() was declared num_returns='dynamic' but returned a "
                            f"{type(result).__name__}, not a generator")
        return run_dynamic(result, name, self.retry)


def wrap_task(fn: Any, mode: str, backpressure: int, retry: Any = False) -> Any:
    """The function a worker runs for a task with ``num_returns`` ``mode``."""
    if mode == "dynamic":
        return _DynamicCall(fn, retry)
    return _StreamingCall(fn, backpressure, retry)


