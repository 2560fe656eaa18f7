"""jray: a Ray-style parallel runtime for Jupyter.

``import jray as ray`` runs code written for Ray's core API: remote functions,
``ObjectRef`` futures, ``get``/``put``/``wait``, resources, and a dynamic task
DAG, on a local cluster that ``jray.init()`` starts by itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from jray import exceptions
from jray._private.api import (
    available_resources,
    cancel,
    cluster_resources,
    get,
    get_gpu_ids,
    init,
    is_initialized,
    nodes,
    put,
    shutdown,
    wait,
)
from jray._private.generators import DynamicObjectRefGenerator, ObjectRefGenerator
from jray._private.object_ref import ObjectRef
from jray.actor import ActorClass, get_actor, kill, method
from jray.remote_function import RemoteFunction
from jray.runtime_context import get_runtime_context

__version__ = "0.1.0"
ObjectID = ObjectRef  # Ray's older name, kept by Ray for backward compatibility

if TYPE_CHECKING:
    from jray import state, util
else:

    def __getattr__(name: str) -> Any:
        # ``jray.state`` and ``jray.util`` load on first use: every worker and daemon
        # imports this package, and ``jray.util`` pulls in asyncio (~35 ms per process)
        if name in ("state", "util"):
            import importlib

            module = importlib.import_module(f"jray.{name}")
            globals()[name] = module
            return module
        raise AttributeError(f"module 'jray' has no attribute {name!r}")


def dashboard(height: int = 360) -> Any:
    """A live view of the cluster in the notebook: the task DAG by cell or function, the
    object store and which variables hold its largest objects, counts by state, and
    per-worker timelines (see ``jray.jupyter.dashboard``; needs a Jupyter front end)."""
    from jray.jupyter.dashboard import dashboard as make

    return make(height)


def remote(*args: Any, **options: Any) -> Any:
    """Make a function a remote function (a task factory), or a class an actor class.

    Use bare (``@jray.remote``) or with options (``@jray.remote(num_cpus=2)``):
    ``num_cpus``, ``num_gpus``, ``resources``, ``num_returns``, ``max_retries``,
    ``retry_exceptions``, ``name``; for classes see ``jray.actor``.
    """
    if len(args) == 1 and not options and callable(args[0]):
        return _make(args[0], {})
    if args:
        raise TypeError("@jray.remote takes keyword options only, e.g. @jray.remote(num_cpus=2)")
    if not options:  # as in Ray: bare, or with options, never with empty parentheses
        raise TypeError("@jray.remote() needs options, e.g. @jray.remote(num_cpus=2); "
                        "without options write @jray.remote")
    return lambda target: _make(target, options)


def _make(target: Any, options: dict[str, Any]) -> Any:
    if isinstance(target, type):
        return ActorClass(target, options)
    if not callable(target):
        raise TypeError(f"@jray.remote needs a function or a class, got {type(target).__name__}")
    return RemoteFunction(target, options)


__all__ = [
    "DynamicObjectRefGenerator",
    "ObjectID",
    "ObjectRef",
    "ObjectRefGenerator",
    "RemoteFunction",
    "__version__",
    "available_resources",
    "cancel",
    "cluster_resources",
    "dashboard",
    "exceptions",
    "get",
    "get_actor",
    "get_gpu_ids",
    "get_runtime_context",
    "init",
    "is_initialized",
    "kill",
    "method",
    "nodes",
    "put",
    "remote",
    "shutdown",
    "state",
    "util",
    "wait",
]


def load_ipython_extension(ip: Any) -> None:
    """``%load_ext jray``: register ``%jray`` and ``%%remote`` (see ``jray.jupyter``)."""
    from jray.jupyter import load_ipython_extension as load

    load(ip)


def unload_ipython_extension(ip: Any) -> None:
    """``%unload_ext jray``: remove the magics and stop what the extension started."""
    from jray.jupyter import unload_ipython_extension as unload

    unload(ip)
