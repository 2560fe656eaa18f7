"""State API: what the head knows about tasks, objects and nodes, as plain dicts.

Every task row carries its full history of state changes with timestamps
(SUBMITTED, WAITING, READY, RUNNING with the worker's pid, FINISHED, FAILED,
RETRIED, CANCELLED...). ``list_events(since=N)`` returns the cluster's event
stream after sequence number N: the feed for live views.
"""

from __future__ import annotations

from typing import Any

from jray._private import api


def list_tasks() -> list[dict[str, Any]]:
    """All tasks the head remembers (the newest 100,000 finished ones and all live ones)."""
    rows: list[dict[str, Any]] = api.client().query("tasks")
    return rows


def list_objects() -> list[dict[str, Any]]:
    """All objects the head tracks: id, size, where it lives, the task that made it."""
    rows: list[dict[str, Any]] = api.client().query("objects")
    return rows


def list_nodes() -> list[dict[str, Any]]:
    """Nodes with their resources and availability."""
    rows: list[dict[str, Any]] = api._cluster_query("nodes")
    return rows


def list_events(since: int = 0) -> list[tuple[int, float, str, str, Any]]:
    """Events ``(seq, time, kind, id_hex, detail)`` with ``seq > since``, oldest first."""
    rows: list[tuple[int, float, str, str, Any]] = api.client().query("events", since)
    return rows


def store_summary() -> dict[str, dict[str, Any]]:
    """Per node: store capacity, bytes used and reserved, spilled bytes, and counts of
    spills, restores and evictions."""
    result: dict[str, dict[str, Any]] = api._cluster_query("store")
    return result


def summary() -> dict[str, Any]:
    """Counts of tasks by state, objects and workers."""
    result: dict[str, Any] = api.client().query("summary")
    return result


__all__ = ["list_events", "list_nodes", "list_objects", "list_tasks", "store_summary", "summary"]
