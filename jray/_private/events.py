"""The cluster's event stream: every event kind, defined once, and the head's log.

Everything that changes state in the head appends one event
``(seq, time, kind, ident, detail)`` to its :class:`EventLog`: ``seq`` counts
from 1 with no gaps, ``ident`` is the raw id of the task, object, actor, node,
worker or driver the event is about, and ``detail`` is the small payload listed
beside each kind in :data:`DETAILS`. The live views, the state API and
``jray status`` all read this one stream; ``labextension/src/protocol.ts``
mirrors :data:`EventKind` for the TypeScript side.

The log is a ring of fixed size: appending is one list store, and reading
"everything after seq N" costs only the events returned (the position of N is
arithmetic, never a scan).
"""

from __future__ import annotations

import time
from typing import Any, Literal, get_args

EventKind = Literal[
    # membership
    "driver_connected", "driver_left", "node_added", "node_lost", "worker_started",
    "worker_died",
    # tasks
    "task_submitted", "task_waiting", "task_ready", "task_running", "task_blocked",
    "task_finished", "task_failed", "task_cancelled", "task_retried", "task_requeued",
    "task_reconstructing", "task_infeasible",
    # objects
    "object_created", "object_pinned", "object_unpinned", "object_spilled", "object_restored",
    "object_freed",
    # actors (and the engines of ``%%remote --engines``, which are actors)
    "actor_created", "actor_spawning", "actor_alive", "actor_restarting", "actor_dead",
    "actor_infeasible",
]
EVENT_KINDS: tuple[str, ...] = get_args(EventKind)

#: What ``detail`` holds for each kind (documentation, checked by a test to list
#: every kind once).
DETAILS: dict[str, str] = {
    "driver_connected": "the driver's pid",
    "driver_left": "{why, actors_killed, tasks_cancelled, objects_freed}",
    "node_added": "(resources dict, hostname, pid)",
    "node_lost": "why it was declared lost (str)",
    "worker_started": "(pid, node_id)",
    "worker_died": "how it ended (text)",
    "task_submitted": "(label, argument ids, return ids, owner id, tag); tag: a cell's "
                      "(cell_id, execution_count) or None",
    "task_waiting": "None", "task_ready": "None",
    "task_running": "the worker's pid",
    "task_blocked": "None", "task_finished": "None", "task_failed": "None",
    "task_cancelled": "None", "task_retried": "None", "task_requeued": "None",
    "task_reconstructing": "None",
    "task_infeasible": "why (text)",
    "object_created": "(size in bytes, location kind (protocol LOC_*), node_id or None)",
    "object_pinned": "the task whose pin came first (raw id): a pending or running task "
                     "now needs the object, so it is kept (sent when no task pinned it before)",
    "object_unpinned": "the task whose pin went last (raw id): no unfinished task needs it",
    "object_spilled": "size in bytes",
    "object_restored": "count of objects read back on that node",
    "object_freed": "size in bytes",
    "actor_created": "class name", "actor_spawning": "incarnation",
    "actor_alive": "pid", "actor_restarting": "why (text)", "actor_dead": "None",
    "actor_infeasible": "why (text)",
}

TaskState = Literal["submitted", "waiting", "ready", "running", "blocked", "finished", "failed",
                    "cancelled", "retried", "requeued", "reconstructing"]
#: the event kind of each task state change (``Task.event``)
TASK_KIND: dict[str, EventKind] = {s: "task_" + s for s in get_args(TaskState)}
TERMINAL_TASK_KINDS = frozenset({"task_finished", "task_failed", "task_cancelled"})

#: one event: (seq, time, kind, ident, detail)
Event = tuple[int, float, str, bytes, Any]
EVENTS_KEPT = 200_000
_now = time.time


class EventLog:
    """A bounded, ordered ring of events with gap-free sequence numbers.

    ``seq`` is the number of the newest event (0: none yet); ``first_seq`` the
    oldest still kept. ``record`` is the hot path (several calls per task).
    """

    __slots__ = ("_ring", "_size", "seq")

    def __init__(self, maxlen: int = EVENTS_KEPT) -> None:
        if maxlen < 1:
            raise ValueError(f"EventLog: maxlen must be at least 1, got {maxlen}")
        self._ring: list[Event | None] = [None] * maxlen
        self._size = maxlen
        self.seq = 0

    @property
    def first_seq(self) -> int:
        return max(1, self.seq - self._size + 1)

    def add(self, kind: EventKind, ident: bytes, detail: Any = None) -> None:
        self.record(_now(), kind, ident, detail)

    def record(self, t: float, kind: str, ident: bytes, detail: Any) -> None:
        seq = self.seq = self.seq + 1
        self._ring[seq % self._size] = (seq, t, kind, ident, detail)

    def since(self, seq: int, limit: int = 10_000) -> list[Event]:
        """Events with a sequence number above ``seq``, oldest first, at most ``limit``.

        Costs O(events returned). Events already overwritten are simply absent:
        compare the first one's seq with ``seq + 1`` (or ``first_seq``) to see a gap.
        """
        start = max(seq + 1, self.first_seq)
        stop = min(self.seq, start + limit - 1)
        ring, size = self._ring, self._size
        return [ring[i % size] for i in range(start, stop + 1)]  # type: ignore[misc]

    def __len__(self) -> int:
        return self.seq - self.first_seq + 1 if self.seq else 0


def to_plain(ev: Event) -> tuple[int, float, str, str, Any]:
    """An event with its id as hex and ids inside its detail as hex (for JSON and humans)."""
    seq, t, kind, ident, detail = ev
    return seq, t, kind, ident.hex(), _plain(detail)


def _plain(x: Any) -> Any:
    if isinstance(x, bytes):
        return x.hex()
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x
