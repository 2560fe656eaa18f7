"""``jray.get_runtime_context()``: who and where the calling code runs, as in Ray.

Ids are hex strings. The job is the cluster of the driver (jray runs one job
per embedded cluster), so every process of one session reports the same job
id. ``get_task_id()`` names the task or actor call running in this thread (or
asyncio task) and is None in the driver; ``get_actor_id()`` is None outside an
actor process, and ``current_actor`` is the actor's handle to itself. Not
provided (yet): ``get_assigned_resources``, task names and the deprecated ``get()``.
"""

from __future__ import annotations

import sys
from typing import Any

from jray._private import api
from jray._private.actor_executor import CURRENT_CALL


class RuntimeContext:
    """The runtime context of the current driver, task or actor process."""

    def get_node_id(self) -> str:
        """The id of the node this process runs on."""
        return api.client().node_id.hex()

    def get_job_id(self) -> str:
        """The id of the job: the same in the driver and in all its tasks and actors."""
        import hashlib

        prefix = api.client().shm_prefix  # one per cluster, known to every process of it
        return hashlib.sha1(prefix.encode()).hexdigest()[:8]

    def get_worker_id(self) -> str:
        """The id of this process (driver, worker or actor process)."""
        return api.client().ident.hex()

    def get_task_id(self) -> str | None:
        """The id of the task or actor call running here; None in the driver."""
        call = CURRENT_CALL.get()
        if call is not None:
            return call.hex()
        worker = _main_module("jray._private.worker")  # a task worker: the running task
        tid = getattr(getattr(worker, "_Running", None), "tid", None)
        return tid.hex() if isinstance(tid, bytes) else None

    def get_actor_id(self) -> str | None:
        """The id of the actor this process hosts; None elsewhere."""
        actor = _actor_process()
        return actor[0] if actor is not None else None

    @property
    def current_actor(self) -> Any:
        """A handle to the actor this code runs in (``RuntimeError`` outside an actor)."""
        actor = _actor_process()
        if actor is None:
            raise RuntimeError("get_runtime_context().current_actor is only available "
                               "inside an actor")
        from jray._private import actor_client
        from jray._private import actor_protocol as A
        from jray.actor import ActorHandle

        client = actor_client.current()
        actor_id = bytes.fromhex(actor[0])
        ok, payload = client.request(
            lambda req: (A.ACTOR_REQUEST, req, "get_by_id", actor_id))
        if not ok:
            raise RuntimeError(f"get_runtime_context().current_actor: {payload}")
        client.conn(actor_id, subscribed=True)
        return ActorHandle(payload[0], payload[1])

    def is_canceled(self) -> bool:
        """Whether ``jray.cancel()`` was called on the actor call running here.

        As in Ray, a running call of a sync or threaded actor is not interrupted: it
        may look here and stop early (its result is ``TaskCancelledError`` either
        way). ``RuntimeError`` in an async actor (its calls are cancelled as asyncio
        tasks instead); False outside actor calls.
        """
        from jray._private.actor_executor import ACTIVE

        return ACTIVE[0].is_canceled() if ACTIVE else False

    @property
    def was_current_actor_reconstructed(self) -> bool:
        """True in an actor process that is a restart (``max_restarts``) of its actor."""
        actor = _actor_process()
        return actor is not None and actor[1] > 0


def _main_module(name: str) -> Any:
    """The ``__main__`` module if this process was started as ``python -m name``."""
    main = sys.modules.get("__main__")
    return main if getattr(getattr(main, "__spec__", None), "name", None) == name else None


def _actor_process() -> tuple[str, int] | None:
    """(actor id, incarnation) when this process hosts an actor, else None.

    An actor process is ``python -m jray._private.actor_worker --actor-id HEX
    --incarnation N ...`` (started by the node daemon); its arguments say which.
    """
    if _main_module("jray._private.actor_worker") is None:
        return None
    argv = sys.argv
    try:
        actor_id = argv[argv.index("--actor-id") + 1]
        incarnation = int(argv[argv.index("--incarnation") + 1])
    except (ValueError, IndexError):
        return None
    return actor_id, incarnation


def get_runtime_context() -> RuntimeContext:
    """The runtime context of the calling process (starts jray if needed, as in Ray)."""
    api.client()
    return RuntimeContext()


__all__ = ["RuntimeContext", "get_runtime_context"]
