"""What ``get_runtime_context()`` reads about the code running in this process.

A task worker records the task it runs (``begin_task``/``end_task``); an actor
process records its actor's resources once (``set_actor``) and, per call, the
bound method that runs (``CURRENT_METHOD``, next to ``actor_executor.CURRENT_CALL``).
No I/O: plain module state, read by ``jray.runtime_context``.
"""

from __future__ import annotations

import contextvars
from typing import Any

#: the bound method of the actor call running in this thread or asyncio task
CURRENT_METHOD: contextvars.ContextVar[Any] = contextvars.ContextVar(
    "jray_current_method", default=None)


class _Process:
    #: (task name, function, resources, gpu ids) of the task running in this worker
    task: tuple[str, Any, dict[str, float], list[int]] | None = None
    #: the resources held by this actor, in an actor process
    actor: dict[str, float] | None = None


def begin_task(name: str, fn: Any, resources: dict[str, float], gpu_ids: list[int]) -> None:
    _Process.task = (name, fn, resources, gpu_ids)


def end_task() -> None:
    _Process.task = None


def running_task() -> tuple[str, Any, dict[str, float], list[int]] | None:
    return _Process.task


def set_actor(resources: dict[str, float]) -> None:
    _Process.actor = dict(resources)


def actor_resources() -> dict[str, float] | None:
    return _Process.actor
