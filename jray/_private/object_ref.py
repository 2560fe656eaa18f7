"""``ObjectRef``: a future naming one object in the cluster.

A ref is 16 bytes of id plus the address of its owner (the process that
submitted the task or called ``put``). Refs count themselves: each live
instance holds one local reference in its process's ``RefCounter``, and the
owner tells the head to free an object once no local instance remains and
the ref never left the process inside a pickled value. A ref that escaped
(pickled into an argument, a result, or a ``put`` value) is kept for the
session; that is conservative, never wrong.
"""

from __future__ import annotations

from typing import Any, Protocol


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
