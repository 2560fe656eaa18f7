"""``ObjectRef``: a future naming one object in the cluster.

A ref is 16 bytes of id plus the address of its owner (the process that
submitted the task or called ``put``). Refs count themselves: each live
instance holds one local reference in its process's ``RefCounter``, and the
owner tells the head to free an object once no local instance remains and
the ref never left the process inside a pickled value. A ref that escaped
(pickled into an argument, a result, or a ``put`` value) is kept for the
session; that is conservative, never wrong.

Refs are awaitable, as in Ray: ``await ref`` (and ``asyncio.gather(*refs)``)
in any event loop, ``ref.future()`` for a ``concurrent.futures.Future`` and
``ref.as_future()`` for an ``asyncio.Future``. The futures come from a factory
the API layer installs (``ref_futures``), so this module needs nothing above it.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import asyncio
    import concurrent.futures


class RefCounter(Protocol):
    def incref(self, oid: bytes) -> None: ...
    def decref(self, oid: bytes) -> None: ...
    def escaped(self, oid: bytes) -> None: ...


class _NullCounter:
    def incref(self, oid: bytes) -> None:
        pass

    def decref(self, oid: bytes) -> None:
        pass

    def escaped(self, oid: bytes) -> None:
        pass


_counter: RefCounter = _NullCounter()


_future_factory: Callable[[ObjectRef], concurrent.futures.Future[Any]] | None = None


def set_future_factory(
    factory: Callable[[ObjectRef], concurrent.futures.Future[Any]] | None,
) -> None:
    """Install what makes the future of a ref (the API layer does this)."""
    global _future_factory
    _future_factory = factory


def set_ref_counter(counter: RefCounter | None) -> None:
    """Install the process's reference counter (the core client does this)."""
    global _counter
    _counter = counter if counter is not None else _NullCounter()


class ObjectRef:
    """A reference to an object that exists, or will exist, in the cluster.

    Hashable and comparable by id; printable; picklable into any process.
    """

    __slots__ = ("id", "owner", "_counter", "__weakref__")

    def __init__(self, oid: bytes, owner: str = "") -> None:
        self.id = oid
        self.owner = owner
        self._counter = _counter
        _counter.incref(oid)

    def __del__(self) -> None:
        try:
            self._counter.decref(self.id)
        except Exception:  # interpreter shutdown
            pass

    def hex(self) -> str:
        return self.id.hex()

    def future(self) -> concurrent.futures.Future[Any]:
        """A ``concurrent.futures.Future`` that completes with the value (or the error)."""
        if _future_factory is None:
            raise RuntimeError("ObjectRef.future() needs the jray API (import jray first)")
        return _future_factory(self)

    def as_future(self) -> asyncio.Future[Any]:
        """An ``asyncio.Future`` of the value, bound to the running event loop."""
        import asyncio

        return asyncio.wrap_future(self.future())

    def __await__(self) -> Generator[Any, None, Any]:
        return self.as_future().__await__()

    def __repr__(self) -> str:
        return f"ObjectRef({self.id.hex()})"

    def __hash__(self) -> int:
        return hash(self.id)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ObjectRef) and other.id == self.id

    def __reduce__(self) -> tuple[Any, ...]:
        self._counter.escaped(self.id)
        return (_rebuild_ref, (self.id, self.owner))


def _rebuild_ref(oid: bytes, owner: str) -> ObjectRef:
    return ObjectRef(oid, owner)
