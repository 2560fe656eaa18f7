"""Peer adapters: one small object per system, all with the same methods.

The workload code in :mod:`benchmarks.workloads` talks only to :class:`Peer`,
so every workload is written once and runs unchanged on:

* ``jray`` and ``ray`` -- one adapter, :class:`RayApiPeer`, parameterised by the
  module, because jray's API is Ray's API;
* ``dask`` -- :class:`DaskPeer`, a ``distributed.LocalCluster`` with process
  workers, ``client.submit``/``gather``/``scatter``;
* ``futures`` -- :class:`FuturesPeer`, a ``concurrent.futures.ProcessPoolExecutor``.

Peer modules are imported lazily (in :func:`make_peer`) and held as ``Any``, so
this module imports without any peer installed and type-checks without stubs.
"""

from __future__ import annotations

import importlib
import logging
import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

PEER_NAMES: tuple[str, ...] = ("jray", "ray", "dask", "futures")

# Distribution names to report when a peer's import fails on a missing module.
_PACKAGES: dict[str, str] = {
    "jray": "jray",
    "ray": "ray",
    "dask": "dask[distributed]",
    "futures": "(standard library)",
}


class Unsupported(Exception):
    """Raised by an adapter for an operation its system has no equivalent of."""


class PeerUnavailable(Exception):
    """The peer's package is missing or fails to import."""


class Peer:
    """The interface the workloads use. Subclasses implement every method.

    ``Ref`` values are whatever the system hands back for a pending result
    (``ObjectRef``, dask ``Future``, ``concurrent.futures.Future``); workloads
    only pass them back into :meth:`submit` and :meth:`get`.
    """

    name: str = "?"
    version: str = "?"

    def init(self, num_cpus: int) -> None:
        """Start the local cluster/pool with ``num_cpus`` worker processes."""
        raise NotImplementedError

    def shutdown(self) -> None:
        """Stop everything :meth:`init` started."""
        raise NotImplementedError

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` as a task; refs among ``args`` are resolved first."""
        raise NotImplementedError

    def get(self, ref: Any) -> Any:
        """Block for one ref's value."""
        raise NotImplementedError

    def get_many(self, refs: Sequence[Any]) -> list[Any]:
        """Block for several refs' values, in order."""
        raise NotImplementedError

    def put(self, value: Any) -> Any:
        """Store ``value`` in the system and return a ref to it."""
        raise Unsupported(f"{self.name} has no object store")

    def actor(self, cls: type, **options: Any) -> Any:
        """Start an actor of ``cls`` (Ray's options, e.g. ``max_concurrency``); its handle."""
        raise Unsupported(f"{self.name} has no actors here")

    def call(self, handle: Any, method: str, *args: Any) -> Any:
        """Call ``method`` on an actor; return the ref to its result."""
        raise Unsupported(f"{self.name} has no actors here")

    def stream(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run generator ``fn`` as a streaming task: an iterator of refs, ready one by one."""
        raise Unsupported(f"{self.name} has no streaming generator tasks")

    def notes(self) -> dict[str, str]:
        """Settings worth recording next to the results (start method, ...)."""
        return {}

    def event_stream_address(self) -> str:
        """Where a live-view subscriber connects (jray's head address)."""
        raise Unsupported(f"{self.name} has no event subscription to compare")

    def head_cpu_seconds(self) -> float:
        """CPU time (user + system) the head process has used so far (jray only)."""
        raise Unsupported(f"{self.name} has no head process to measure here")

    def nested_module(self) -> str:
        """The Ray-API module a task calls to submit tasks of its own."""
        raise Unsupported(f"{self.name}: its tasks do not submit tasks through Ray's API")


class RayApiPeer(Peer):
    """Any module with Ray's core API: ``init``/``remote``/``get``/``put``/``shutdown``."""

    def __init__(self, name: str, module: Any, init_options: dict[str, Any]) -> None:
        self.name = name
        self.version = str(getattr(module, "__version__", "?"))
        self._mod = module
        self._init_options = init_options
        self._remote: dict[Callable[..., Any], Any] = {}

    def init(self, num_cpus: int) -> None:
        self._info = self._mod.init(num_cpus=num_cpus, **self._init_options)

    def event_stream_address(self) -> str:
        if self.name != "jray":
            raise Unsupported(f"{self.name}: the watched workload measures jray's event stream")
        return str(self._info["address"])

    def head_cpu_seconds(self) -> float:
        if self.name != "jray":
            raise Unsupported(f"{self.name}: only jray's head process is measured")
        import psutil

        from jray._private.api import _Session

        cluster = _Session.cluster
        if cluster is None:
            raise Unsupported("jray: no embedded cluster (and so no head process) here")
        pid = cluster.procs["head"].pid
        try:  # nanoseconds on the CPU, every thread (ZeroMQ's I/O thread included)
            total = 0
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
            return total / 1e9
        except (OSError, ValueError, IndexError):  # no schedstat: clock ticks (10 ms)
            t = psutil.Process(pid).cpu_times()
            return float(t.user + t.system)

    def shutdown(self) -> None:
        self._mod.shutdown()
        self._remote.clear()

    def nested_module(self) -> str:
        return str(self._mod.__name__)

    def _as_remote(self, fn: Callable[..., Any]) -> Any:
        handle = self._remote.get(fn)
        if handle is None:
            handle = self._remote[fn] = self._mod.remote(fn)
        return handle

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self._as_remote(fn).remote(*args)

    def get(self, ref: Any) -> Any:
        return self._mod.get(ref)

    def get_many(self, refs: Sequence[Any]) -> list[Any]:
        return list(self._mod.get(list(refs)))

    def put(self, value: Any) -> Any:
        return self._mod.put(value)

    def actor(self, cls: type, **options: Any) -> Any:
        actor_class = self._as_remote(cls)
        return (actor_class.options(**options) if options else actor_class).remote()

    def call(self, handle: Any, method: str, *args: Any) -> Any:
        return getattr(handle, method).remote(*args)

    def stream(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self._as_remote(fn).remote(*args)  # a generator: an ObjectRefGenerator

    def notes(self) -> dict[str, str]:
        return {"init": ", ".join(f"{k}={v!r}" for k, v in self._init_options.items())}


class DaskPeer(Peer):
    """dask.distributed with ``n`` single-threaded worker processes."""

    def __init__(self, distributed: Any, dask_version: str) -> None:
        self.name = "dask"
        self.version = dask_version
        self._dist = distributed
        self._cluster: Any = None
        self._client: Any = None

    def init(self, num_cpus: int) -> None:
        self._cluster = self._dist.LocalCluster(
            n_workers=num_cpus,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        )
        self._client = self._dist.Client(self._cluster)

    def shutdown(self) -> None:
        if self._client is not None:
            self._client.close()
        if self._cluster is not None:
            self._cluster.close()
        self._client = self._cluster = None

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        # pure=False: otherwise identical calls (e.g. 10,000 x noop()) share
        # one key and dask would run the task once.
        return self._client.submit(fn, *args, pure=False)

    def get(self, ref: Any) -> Any:
        return self._client.gather(ref)

    def get_many(self, refs: Sequence[Any]) -> list[Any]:
        return list(self._client.gather(list(refs)))

    def put(self, value: Any) -> Any:
        # hash=False: a fresh key per call, as a real put would make.
        return self._client.scatter(value, hash=False)

    def notes(self) -> dict[str, str]:
        return {"cluster": "LocalCluster(processes=True, threads_per_worker=1)"}


class FuturesPeer(Peer):
    """``concurrent.futures.ProcessPoolExecutor``: tasks only, no object store.

    A task's arguments must be concrete values, so :meth:`submit` waits in the
    driver for any ``Future`` argument before submitting (a driver-side get).
    """

    def __init__(self) -> None:
        self.name = "futures"
        self.version = "stdlib"
        self._start_method = multiprocessing.get_start_method()
        self._pool: ProcessPoolExecutor | None = None

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            raise RuntimeError("futures peer used before init()")
        return self._pool

    def init(self, num_cpus: int) -> None:
        self._pool = ProcessPoolExecutor(max_workers=num_cpus)

    def shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        self._pool = None

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        values = [a.result() if isinstance(a, Future) else a for a in args]
        return self._executor().submit(fn, *values)

    def get(self, ref: Any) -> Any:
        return ref.result()

    def get_many(self, refs: Sequence[Any]) -> list[Any]:
        return [r.result() for r in refs]

    def notes(self) -> dict[str, str]:
        return {"start_method": self._start_method}


def _import(module: str, peer: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        missing = (exc.name or module).split(".")[0]
        hint = _PACKAGES[peer] if missing == module else f"{_PACKAGES[peer]} with its dependencies"
        raise PeerUnavailable(f"cannot import {missing!r} ({exc}); install {hint}") from exc
    except Exception as exc:  # a peer under development may fail in any way
        raise PeerUnavailable(f"importing {module!r} failed ({type(exc).__name__}: {exc})") from exc


def make_peer(name: str) -> Peer:
    """Import ``name``'s package and build its adapter, or raise PeerUnavailable."""
    if name == "jray":
        return RayApiPeer("jray", _import("jray", name), {})
    if name == "ray":
        return RayApiPeer("ray", _import("ray", name), {"include_dashboard": False})
    if name == "dask":
        dask = _import("dask", name)
        return DaskPeer(_import("distributed", name), str(getattr(dask, "__version__", "?")))
    if name == "futures":
        return FuturesPeer()
    raise ValueError(f"unknown peer {name!r}; choose from {', '.join(PEER_NAMES)}")
