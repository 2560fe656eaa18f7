"""State API: what the head knows about tasks, objects, actors and nodes, as plain dicts.

The same data the live views draw. Every task row carries its full history of
state changes with timestamps (SUBMITTED, WAITING, READY, RUNNING with the
worker's pid, FINISHED, FAILED, RETRIED, CANCELLED...). ``list_events(since=N)``
returns the cluster's event stream after sequence number N (kinds listed in
``jray._private.events.EventKind``); live views subscribe to it instead
(``jray.views.live``).

Filters run in the head: ``state`` (any case), ``label`` (a substring of the
task's name: the function's, or the ``%%remote`` cell's label), ``limit``
(keep the newest that many).
"""

from __future__ import annotations

from typing import Any, get_args

from jray._private import api
from jray._private.events import TaskState

TASK_STATES = frozenset(get_args(TaskState))
OBJECT_PLACES = frozenset({"pending", "inline", "shared_memory", "error", "spilled"})


def _limit(limit: int | None, fn: str) -> int | None:
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"jray.state.{fn}: limit must be a positive int or None, got {limit!r}")
    return limit


def _choice(value: str | None, allowed: frozenset[str], fn: str, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or value.lower() not in allowed:
        raise ValueError(f"jray.state.{fn}: {name} must be one of {sorted(allowed)}, "
                         f"got {value!r}")
    return value.lower()


def list_tasks(state: str | None = None, label: str | None = None,
               limit: int | None = None) -> list[dict[str, Any]]:
    """Tasks the head remembers (all live ones and the newest 100,000 finished ones),
    oldest first, filtered by ``state``, ``label`` substring and ``limit``."""
    if label is not None and not isinstance(label, str):
        raise ValueError(f"jray.state.list_tasks: label must be a str, got {label!r}")
    f = {"state": _choice(state, TASK_STATES, "list_tasks", "state"), "label": label,
         "limit": _limit(limit, "list_tasks")}
    rows: list[dict[str, Any]] = api.client().query("tasks", f)
    return rows


def list_objects(where: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
    """Objects the head tracks: id, size, where it lives (``where`` filters), its task."""
    f = {"where": _choice(where, OBJECT_PLACES, "list_objects", "where"),
         "limit": _limit(limit, "list_objects")}
    rows: list[dict[str, Any]] = api.client().query("objects", f)
    return rows


def list_actors(state: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
    """Actors (and notebook engines): id, class, state, name, pid, node, restarts."""
    from jray.actor import list_actors as _all

    n = _limit(limit, "list_actors")
    rows = _all()
    if state is not None:
        if not isinstance(state, str):
            raise ValueError(f"jray.state.list_actors: state must be a str, got {state!r}")
        rows = [r for r in rows if str(r["state"]).lower() == state.lower()]
    return rows if n is None else rows[-n:]


def list_nodes(alive: bool | None = None) -> list[dict[str, Any]]:
    """Nodes with their resources and availability (``alive`` filters)."""
    rows: list[dict[str, Any]] = api._cluster_query("nodes")
    return rows if alive is None else [r for r in rows if r["Alive"] == alive]


def list_events(since: int = 0) -> list[tuple[int, float, str, str, Any]]:
    """Events ``(seq, time, kind, id_hex, detail)`` with ``seq > since``, oldest first
    (at most 10,000 per call); ids inside ``detail`` are hex too."""
    rows: list[tuple[int, float, str, str, Any]] = api.client().query("events", since)
    return rows


def store_summary() -> dict[str, dict[str, Any]]:
    """Per node: store capacity, bytes used and reserved, spilled bytes, and counts of
    spills, restores and evictions; on a cluster of several machines also the objects
    pulled into it from other machines (``pulls``, ``pulled_bytes``), the copies it
    holds (``copies``, ``copy_bytes``) and the copies dropped for room."""
    result: dict[str, dict[str, Any]] = api._cluster_query("store")
    return result


def summary() -> dict[str, Any]:
    """Counts of tasks by state; objects, their bytes, workers, live nodes, events so far."""
    result: dict[str, Any] = api.client().query("summary")
    return result


__all__ = ["list_actors", "list_events", "list_nodes", "list_objects", "list_tasks",
           "store_summary", "summary"]
