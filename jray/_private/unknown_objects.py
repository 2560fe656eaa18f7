"""Lookups of objects the head has not heard of yet, without I/O.

A ref can reach a process before the head has read its object's record: a
task that makes a ref (``put``, or a nested ``.remote``) and returns it sends
its result straight to its owner, and the record of the inner object travels
to the head on the task's own connection, which the head may read after the
owner's. The head serves its peers in no global order, so "unknown" does not
mean "gone". A lookup of an id the head never saw (neither recorded nor
collected, nor made by a task it knows) waits here, bounded by
``UNKNOWN_WAIT_S``; it is answered as soon as the object exists. What the
head collected it remembers (``FREED_KEPT`` ids), so a lookup of a freed
object still fails at once.

Two kinds of lookups wait: subscriptions (``get`` and ``wait`` on the ref) and
tasks whose arguments name it. The scheduler retries them once per drained
round (a schedule hook: nothing to do when nothing waits) and expires them from
its periodic check.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from jray._private import protocol as P
from jray._private.state_tables import Obj, Task

if TYPE_CHECKING:
    from jray._private.scheduler import Scheduler

#: how long a lookup of an object the head has not heard of waits for its record
UNKNOWN_WAIT_S = 5.0
#: ids of collected objects remembered, so that a late lookup fails at once
FREED_KEPT = 65_536


class UnknownObjects:
    """Parked lookups (see module docstring)."""

    def __init__(self, sched: Scheduler, clock: object = time.monotonic) -> None:
        self.sched = sched
        self.clock = clock
        #: oid -> (since, subscribers waiting for it)
        self.subs: dict[bytes, tuple[float, list[bytes]]] = {}
        #: tasks with an argument the head has not heard of: (since, task)
        self.tasks: list[tuple[float, Task]] = []
        #: borrows (``BORROW`` less ``UNBORROW``) of objects not yet recorded: (since, n)
        self.borrows: dict[bytes, tuple[float, int]] = {}
        #: recently collected ids, oldest first
        self.freed: dict[bytes, None] = {}
        sched.schedule_hooks.append(self.retry)

    def _now(self) -> float:
        return self.clock()  # type: ignore[operator, no-any-return]

    def is_unknown(self, oid: bytes) -> bool:
        """Never heard of: not recorded, not collected, not made by a task the head knows."""
        sched = self.sched
        if oid in sched.objects or oid in self.freed:
            return False
        tid = P.task_of(oid)
        return tid is None or tid not in sched.tasks

    def any_unknown(self, oids: list[bytes]) -> bool:
        objects = self.sched.objects
        for oid in oids:  # noqa: SIM110 (per submit: a loop, no generator)
            if oid not in objects and self.is_unknown(oid):
                return True
        return False

    def collected(self, oid: bytes) -> None:
        freed = self.freed
        freed[oid] = None
        if len(freed) > FREED_KEPT:
            del freed[next(iter(freed))]

    def borrow(self, oid: bytes, n: int) -> None:
        since, held = self.borrows.get(oid, (self._now(), 0))
        if held + n:
            self.borrows[oid] = (since, held + n)
        else:
            self.borrows.pop(oid, None)

    def take_borrows(self, obj: Obj) -> bool:
        """Count the early borrows of ``obj``, now recorded; True if it is held."""
        entry = self.borrows.pop(obj.oid, None)
        if entry is not None:
            obj.holders += entry[1]
        return obj.holders > 0

    def why_lost(self, oid: bytes) -> str:
        if oid in self.freed:
            return (f"object {oid.hex()} was freed: the head collected it when no "
                    f"process held a reference to it any more")
        return (f"object {oid.hex()} is unknown to the head: no record of it arrived "
                f"within {UNKNOWN_WAIT_S:g} s (UNKNOWN_WAIT_S); was its ref made outside "
                f"this cluster, or freed long ago?")

    def park_subscriber(self, sender: bytes, oid: bytes) -> None:
        entry = self.subs.get(oid)
        if entry is None:
            self.subs[oid] = (self._now(), [sender])
        else:
            entry[1].append(sender)

    def park_task(self, task: Task) -> None:
        self.tasks.append((self._now(), task))

    def retry(self, expire: bool = False) -> None:
        """Answer what has appeared since; with ``expire``, fail what waited too long."""
        if not self.subs and not self.tasks and not (expire and self.borrows):
            return
        sched = self.sched
        deadline = self._now() - UNKNOWN_WAIT_S
        if expire:  # borrows of objects that never came
            for oid, (since, _) in list(self.borrows.items()):
                if since <= deadline and self.is_unknown(oid):
                    del self.borrows[oid]
        if self.subs:
            for oid, (since, senders) in list(self.subs.items()):
                late = expire and since <= deadline
                if late or not self.is_unknown(oid):
                    del self.subs[oid]
                    for sender in senders:
                        sched.subscribe(sender, [oid], wait=False)
        if self.tasks:
            waiting, self.tasks = self.tasks, []
            for since, task in waiting:
                if task.state != "waiting":  # cancelled meanwhile
                    continue
                late = expire and since <= deadline
                if late or not self.any_unknown(task.spec[P.T_DEPS]):
                    sched.admit(task, wait=False)
                else:
                    self.tasks.append((since, task))
