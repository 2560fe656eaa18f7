"""Lineage reconstruction: rebuild a lost task output by re-running its task.

The head keeps the arguments of finished retriable tasks (``max_retries > 0``)
while it remembers them. When a reader reports an object's bytes gone
(``LOST``) the head re-runs the task that made it; inputs that were lost or
collected meanwhile are rebuilt the same way, recursively. Objects made by
``put`` and outputs of ``max_retries=0`` tasks cannot be rebuilt: they fail
with an ``ObjectLostError`` that says why. Part of the head's state machine:
no I/O here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from jray._private import protocol as P
from jray._private.serialization import error_loc
from jray._private.state_tables import Obj, Task
from jray.exceptions import ObjectLostError

if TYPE_CHECKING:
    from jray._private.scheduler import Scheduler


def why_not(task: Task | None) -> str | None:
    """Why the outputs of ``task`` cannot be rebuilt, or None if they can."""
    if task is None:
        return "the task that made it is no longer known to the head"
    if task.spec[P.T_MAX_RETRIES] == 0:
        return f"task {task.name} that made it has max_retries=0"
    if task.spec[P.T_ARGS] is None and not task.spec[P.T_DEPS]:
        return f"the arguments of task {task.name} that made it were not kept"
    return None


def revive(sched: Scheduler, oid: bytes) -> Obj | None:
    """Recreate a collected task output by re-running its task, if possible."""
    tid = P.task_of(oid)
    task = sched.tasks.get(tid) if tid is not None else None
    if task is None or why_not(task) or task.state != "finished":
        return None
    rerun(sched, task)
    return sched.objects.get(oid)


def rerun(sched: Scheduler, task: Task) -> None:
    """Reset ``task``'s outputs to pending and queue it again."""
    for oid in task.spec[P.T_RETURNS]:
        obj = sched.objects.get(oid)
        if obj is None:
            sched.objects[oid] = Obj(oid, task.owner, task.spec[P.T_ID])
        else:
            sched.store.forget(obj)
            obj.loc = None
    task.event("reconstructing")
    sched.admit(task)


def reconstruct(sched: Scheduler, obj: Obj, requester: bytes) -> None:
    """``obj``'s bytes are gone: re-run the task that made it, or fail it."""
    if obj.loc is None or obj.loc[0] == P.LOC_ERROR:  # being rebuilt, or failed
        sched.subscribe(requester, [obj.oid])
        return
    task = sched.tasks.get(obj.task) if obj.task is not None else None
    why = ("it was made by put(), and put objects cannot be rebuilt" if obj.task is None
           else why_not(task))
    if why is None and task is not None and task.state == "finished":
        rerun(sched, task)
        sched.subscribe(requester, [obj.oid])
        return
    err = ObjectLostError(
        f"object {obj.oid.hex()} was lost (its shared memory or spill file is gone) "
        f"and cannot be rebuilt: {why or 'its task is still running'}"
    )
    sched.store.forget(obj)
    obj.loc = None
    sched.object_ready(obj, error_loc(err), notify_owner=False)
    sched.send(requester, (P.OBJECT_READY, obj.oid, obj.loc))
