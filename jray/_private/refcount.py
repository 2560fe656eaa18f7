"""Local reference counts of one process, and what they mean for the head.

Every ``ObjectRef`` instance counts itself here (``incref`` at creation,
``decref`` in ``__del__``). Counts change in any thread and even inside the
garbage collector, so changes are queued and applied by ``settle`` under the
client's lock. Applying them yields three lists for the head:

- ``borrowed``: refs this process now holds but does not own (it got them
  inside an argument or a value); the head counts it as a holder.
- ``unborrowed``: borrowed refs this process no longer holds.
- ``released``: refs it owns and no longer holds; the owner's hold ends.

Refs pickled into a value while ``capture`` is active are collected, so the
value that contains them (a ``put``, a task's argument or result) can keep
them alive at the head for as long as it exists itself.
"""

from __future__ import annotations

from collections import deque


class RefTable:
    __slots__ = ("counts", "owned", "events", "capture")

    def __init__(self) -> None:
        self.counts: dict[bytes, int] = {}
        self.owned: set[bytes] = set()
        self.events: deque[tuple[bytes, int]] = deque()
        self.capture: list[bytes] | None = None

    def incref(self, oid: bytes) -> None:
        self.events.append((oid, 1))

    def decref(self, oid: bytes) -> None:
        self.events.append((oid, -1))

    def serialized(self, oid: bytes) -> None:
        capture = self.capture
        if capture is not None:
            capture.append(oid)

    def holds(self, oid: bytes) -> bool:
        return oid in self.counts or oid in self.owned

    def settle(self) -> tuple[list[bytes], list[bytes], list[bytes]]:
        """Apply queued changes; return (borrowed, unborrowed, released)."""
        borrowed: list[bytes] = []
        unborrowed: list[bytes] = []
        released: list[bytes] = []
        counts = self.counts
        owned = self.owned
        events = self.events
        while events:
            oid, delta = events.popleft()
            n = counts.get(oid, 0) + delta
            if n > 0:
                counts[oid] = n
                if n == delta and oid not in owned:
                    borrowed.append(oid)
                continue
            counts.pop(oid, None)
            if oid in owned:
                owned.discard(oid)
                released.append(oid)
            elif n == 0:
                unborrowed.append(oid)
        return borrowed, unborrowed, released
