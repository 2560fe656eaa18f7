"""Generator tasks and actor methods: ``ObjectRefGenerator`` and the streaming behind it.

A task (or actor call) whose function yields streams its items to the caller
one by one, as Ray's ``num_returns="streaming"`` (its default for generator
functions)::

    worker ──GEN_ITEM(key, index, oid, loc, ack_addr)──▶ owner   (each yielded value)
    worker ──OBJECT_READY(completion, n)──────────────▶ owner   (the call's one return)
    owner  ──GEN_ACK(key, consumed)───────────────────▶ worker  (only with backpressure)

``key`` is the call's one return id (the *completion* ref); item ``i``'s object
id is derived from it (``item_id``), so both sides name items without a round
trip. An item is stored like a ``put`` value: inline values live in the
owner's cache (registered with the head only if the ref leaves the process),
shared-memory ones are registered with the head by the worker. The
completion's value is the number of items; an exception inside the generator
becomes the value of the item after the last one (its ``get`` raises it), and
the stream ends there. With ``_generator_backpressure_num_objects=N`` the
producer pauses while ``N`` items are unconsumed: the consumer acknowledges
each ``next``.

``num_returns="dynamic"`` runs the generator to its end in the worker and
returns one ref whose value is a ``DynamicObjectRefGenerator``: the items
travel inside it and become refs (``put`` by the process that iterates) when
first iterated. The producing side is ``generator_stream``.
"""

from __future__ import annotations

import hashlib
import time
import types
from collections.abc import AsyncIterator, Iterator
from typing import Any

from jray._private import protocol as P
from jray._private import serialization as S
from jray._private.core import CoreClient
from jray._private.object_ref import ObjectRef
from jray.exceptions import GetTimeoutError

#: async ``anext``: the sleeps between checks back off between these
ASYNC_POLL_MIN_S = 0.0005
ASYNC_POLL_MAX_S = 0.01
#: streams whose consumer went away, remembered so that late items are dropped
CLOSED_MAX = 4096


def item_id(key: bytes, index: int) -> bytes:
    """Object id of item ``index`` of the stream ``key`` (marked as a put: no lineage)."""
    return hashlib.blake2b(key + index.to_bytes(8, "little"), digest_size=14).digest() + \
        b"\xff\xff"


def is_generator(value: Any) -> bool:
    return type(value) in _GENERATOR_TYPES


def is_async(value: Any) -> bool:
    return type(value) is types.AsyncGeneratorType


_GENERATOR_TYPES = (types.GeneratorType, types.AsyncGeneratorType)


class Raises:
    """A stored value whose reading raises the error at ``loc`` (an item after a failure)."""

    __slots__ = ("loc",)

    def __init__(self, loc: P.Loc) -> None:
        self.loc = loc

    def __reduce__(self) -> tuple[Any, ...]:
        return (S.decode, (self.loc,))


class ErrorItem:
    """The error a "dynamic" generator raised, carried as its last item."""

    __slots__ = ("loc",)

    def __init__(self, loc: P.Loc) -> None:
        self.loc = loc

    def __reduce__(self) -> tuple[Any, ...]:
        return (ErrorItem, (self.loc,))


class DynamicObjectRefGenerator:
    """The value of a ``num_returns="dynamic"`` call: iterates over refs of its items.

    The items travel inside this value (one object) and become refs, owned by the
    process that iterates, the first time it does; the same refs on later passes.
    """

    def __init__(self, values: list[Any]) -> None:
        self._values = values
        self._refs: list[ObjectRef] | None = None

    def _materialize(self) -> list[ObjectRef]:
        if self._refs is None:
            from jray._private import api

            self._refs = [api.put(Raises(v.loc) if type(v) is ErrorItem else v)
                          for v in self._values]
        return self._refs

    def __iter__(self) -> Iterator[ObjectRef]:
        return iter(self._materialize())

    def __len__(self) -> int:
        return len(self._values)

    def __reduce__(self) -> tuple[Any, ...]:
        return (DynamicObjectRefGenerator, (self._values,))

    def __repr__(self) -> str:
        return f"DynamicObjectRefGenerator({len(self._values)} items)"


# --- consumer side (the process that made the call) -----------------------------------
class _Stream:
    __slots__ = ("producer", "arrived", "highest")

    def __init__(self) -> None:
        self.producer = ""
        self.arrived: set[int] = set()
        self.highest = -1  # items come in order; a retried call sends the first ones again


_streams: dict[bytes, _Stream] = {}
_closed: dict[bytes, None] = {}


def _release(core: CoreClient, oid: bytes, registered: bool) -> None:
    """Drop an item nobody will consume (no ref to it exists)."""
    core.cache.pop(oid, None)
    core.owned.discard(oid)
    core.local_only.discard(oid)
    if registered:
        core.pending_free.append(oid)


def install(core: CoreClient) -> None:
    """Make ``core`` accept stream items (before the first streaming call is sent)."""
    if P.GEN_ITEM in core.handlers:
        return

    def on_item(msg: P.Msg) -> None:
        _, key, index, oid, loc, producer, registered = msg
        if key in _closed:
            _release(core, oid, registered)
            return
        stream = _streams.get(key)
        if stream is None:
            stream = _streams[key] = _Stream()
        if index <= stream.highest:  # sent again by a retry of the call: we have it
            if oid not in core.cache and registered:
                core.pending_free.append(oid)
            return
        stream.highest = index
        stream.producer = producer
        stream.arrived.add(index)
        core.cache[oid] = loc
        core.owned.add(oid)
        core.awaiting.discard(oid)
        if not registered:
            core.local_only.add(oid)  # registered with the head if its ref leaves

    core.handlers[P.GEN_ITEM] = on_item


class ObjectRefGenerator:
    """The refs a generator task or method yields, ready one by one (Ray's class).

    ``next(gen)`` (or ``for ref in gen``) blocks until the next item exists and
    returns its ``ObjectRef``; ``await gen.__anext__()`` / ``async for`` do the
    same without blocking the event loop. ``StopIteration`` after the last item.
    """

    def __init__(self, completion: ObjectRef, core: CoreClient, backpressure: int = -1) -> None:
        self._ref = completion
        self._core = core
        self._key = completion.id
        self._index = 0
        self._count: int | None = None
        self._failed = False  # the call failed outside the generator: yield its ref once
        self._last_error = False  # the last item handed out was an error (it said why)
        self._finished = False
        self._backpressure = backpressure
        _streams.setdefault(self._key, _Stream())

    # Ray's names
    def completed(self) -> ObjectRef:
        """The ref of the call itself: ready when the generator is exhausted."""
        return self._ref

    def is_finished(self) -> bool:
        return self._finished

    def next_ready(self) -> bool:
        """True if ``next`` would not block."""
        core = self._core
        return self._finished or item_id(self._key, self._index) in core.cache or \
            self._ref.id in core.cache

    def __iter__(self) -> Iterator[ObjectRef]:
        return self

    def __next__(self) -> ObjectRef:
        return self._next_sync()

    def _next_sync(self, timeout_s: float | None = None) -> ObjectRef:
        """The next item's ref; ``StopIteration`` at the end; ``GetTimeoutError`` after
        ``timeout_s`` seconds without one."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            ref = self._try_next()
            if ref is not None:
                return ref
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise GetTimeoutError(f"no item of the generator {self._key.hex()} came in "
                                      f"{timeout_s} s")
            core = self._core
            oid = item_id(self._key, self._index)
            # the item, or the call's end; once the end is known (its news can overtake
            # the items, which come on another socket), the item alone
            wanted = [oid] if self._count is not None else [oid, self._ref.id]
            with core.lock:
                core.awaiting.add(oid)  # its producer sends it here: no subscription
                core.wait(wanted, 1, left)

    def _try_next(self) -> ObjectRef | None:
        if self._finished:
            raise StopIteration
        core = self._core
        oid = item_id(self._key, self._index)
        loc = core.cache.get(oid)
        if loc is not None:
            self._last_error = loc[0] == P.LOC_ERROR
            ref = ObjectRef(oid, core.addr)
            stream = _streams.get(self._key)
            if stream is not None:
                stream.arrived.discard(self._index)
            self._index += 1
            if self._backpressure > 0 and stream is not None and stream.producer:
                with core.lock:
                    core.send_owner(stream.producer, (P.GEN_ACK, self._key, self._index))
                    core.flush()
            return ref
        if self._ref.id not in core.cache:
            return None
        if self._count is None:
            try:
                self._count = int(core.decode(self._ref.id, core.cache[self._ref.id]))
            except Exception:
                self._failed = True
                self._count = self._index
        if self._index < self._count:
            return None  # the item is still in flight (it travels on another socket)
        self._finish()
        if self._failed and not self._last_error:
            return self._ref  # its get raises why the call failed
        raise StopIteration

    def __aiter__(self) -> AsyncIterator[ObjectRef]:
        return self

    async def __anext__(self) -> ObjectRef:
        import asyncio

        pause = ASYNC_POLL_MIN_S
        core = self._core
        while True:
            try:
                ref = self._try_next()
            except StopIteration:
                raise StopAsyncIteration from None
            if ref is not None:
                return ref
            if core.lock.acquire(blocking=False):  # read what arrived, never wait here
                try:
                    core.poll(0)
                finally:
                    core.lock.release()
            await asyncio.sleep(pause)
            pause = min(pause * 2, ASYNC_POLL_MAX_S)

    def _finish(self) -> None:
        self._finished = True
        _streams.pop(self._key, None)

    def __del__(self) -> None:
        try:
            if self._finished:
                return
            stream = _streams.pop(self._key, None)
            _closed[self._key] = None
            if len(_closed) > CLOSED_MAX:
                del _closed[next(iter(_closed))]
            core = self._core
            for index in list(stream.arrived if stream is not None else ()):
                oid = item_id(self._key, index)
                # a ref's +1/-1 through the counter: settled under the lock, it frees the item
                core.incref(oid)
                core.decref(oid)
        except Exception:  # interpreter shutdown
            pass

    def __reduce__(self) -> tuple[Any, ...]:
        raise TypeError("an ObjectRefGenerator cannot be passed to another task or actor or "
                        "stored; pass the refs it yields instead (or use "
                        "num_returns='dynamic')")

    def __repr__(self) -> str:
        return f"ObjectRefGenerator({self._key.hex()})"


def wait_mixed(core: CoreClient, items: list[Any], num_returns: int,
               timeout: float | None) -> set[int]:
    """``jray.wait`` over refs and generators: the indices of the ready items, at least
    ``num_returns`` of them unless ``timeout`` passed. A generator is ready when its
    next item is (``next`` would not block) or its call has ended."""
    deadline = None if timeout is None else time.monotonic() + timeout

    def ready() -> set[int]:
        return {i for i, x in enumerate(items)
                if (x.next_ready() if type(x) is ObjectRefGenerator else x.id in core.cache)}

    done = ready()
    while len(done) < num_returns:
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            break
        wanted: list[bytes] = []
        with core.lock:
            for i, x in enumerate(items):
                if i in done:
                    continue
                if type(x) is ObjectRefGenerator:
                    oid = item_id(x._key, x._index)
                    core.awaiting.add(oid)  # its producer sends it here: no subscription
                    wanted += [oid, x._ref.id]
                else:
                    wanted.append(x.id)
        core.wait(wanted, 1, left)  # (returns at the first arrival, or at the deadline)
        done = ready()
    return done
