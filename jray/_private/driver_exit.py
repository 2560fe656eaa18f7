"""A driver leaves a cluster it joined (``DRIVER_EXIT``), in the head (no I/O).

A driver connected with ``init(address=...)`` does not stop the cluster when it
leaves (``shutdown()``, the end of its script, its kernel's exit); it says
``DRIVER_EXIT`` and the head ends what it owned, as Ray ends a finished job:

- its actors that are not detached are killed (no restart; their names are free);
- its tasks that have not finished are cancelled (running ones are killed), with
  the tasks they submitted;
- its leases are revoked, so their workers go back to the pool;
- its objects are freed (collected once no task or borrower needs them).

Detached actors, and the objects they or other drivers hold, stay. The rest of
the cluster keeps running. A driver that dies without a word (SIGKILL, its
machine gone) is noticed by silence: its head watch vouches for it every 0.5 s
(``DRIVER_ALIVE``), and a driver not vouched for in ``SILENCE_S`` is ended the
same way.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from jray._private import actor_protocol as A
from jray._private import protocol as P

if TYPE_CHECKING:
    from jray._private.actor_table import ActorTable
    from jray._private.scheduler import Scheduler

_DONE = ("finished", "failed", "cancelled")
#: a joined driver whose head watch has not vouched for it this long has exited
SILENCE_S = 10.0


class DriverExits:
    def __init__(self, sched: Scheduler, actors: ActorTable) -> None:
        self.sched = sched
        self.actors = actors
        #: driver identity -> when its head watch last vouched for it
        self.seen: dict[bytes, float] = {}
        #: drivers already ended (a late ping must not bring one back)
        self.ended: set[bytes] = set()
        sched.register(P.DRIVER_EXIT, self.on_exit)
        sched.register(P.DRIVER_ALIVE, self.on_alive)

    def on_alive(self, sender: bytes, msg: P.Msg) -> None:
        ident = msg[1]
        if isinstance(ident, bytes) and ident[:1] == b"d" and ident not in self.ended:
            self.seen[ident] = time.monotonic()

    def check(self, now: float) -> None:
        """End the drivers not vouched for in ``SILENCE_S`` (called every 0.5 s)."""
        for ident, t in list(self.seen.items()):
            if now - t > SILENCE_S:
                self.end(ident, f"silent for {now - t:.1f} s")
                self.sched.schedule()

    def on_exit(self, sender: bytes, msg: P.Msg) -> None:
        self.end(sender, "said goodbye")

    def end(self, sender: bytes, why: str) -> None:
        self.seen.pop(sender, None)
        if sender in self.ended:
            return
        self.ended.add(sender)
        sched = self.sched
        killed = 0
        for rec in list(self.actors.actors.values()):
            if rec.owner == sender and not rec.spec["detached"] and rec.state != A.DEAD:
                self.actors._on_kill(sender, (A.ACTOR_KILL, rec.actor_id, True))
                killed += 1
        tids = [tid for tid, task in sched.tasks.items()
                if task.owner == sender and task.state not in _DONE]
        for tid in tids:
            sched._cancel(tid, True, True)
        for lease in list(sched.leases.leases.values()):
            worker = sched.workers.get(lease.worker)
            if lease.owner == sender and worker is not None:
                sched.leases.revoke(worker, tell_worker=True)
        freed = 0
        for obj in list(sched.objects.values()):
            if obj.owner == sender and not obj.freed:
                obj.freed = True
                freed += 1
                sched._maybe_collect(obj)
        sched.events.add("driver_left", sender, {"why": why, "actors_killed": killed,
                                                 "tasks_cancelled": len(tids),
                                                 "objects_freed": freed})
