"""A synchronous, in-process backend: the magics' logic under test without processes.

``.remote()`` runs the function (or actor method) at once in this process and
returns a ``FakeRef`` holding its value or its error; arguments and results
pass through cloudpickle both ways, so a cell sees copies (as on a real
worker) and an unpicklable input fails as it would. Refs and actor handles
pickle as their ids and come back as the same objects. Top-level ref
arguments are resolved before the call; an error in one fails the call with
that error, as a dependency's failure would. Nothing here waits, so there is
nothing to interrupt: ``cancel`` only records the ref, and ``interrupt_next_wait``
makes the next blocking wait raise ``KeyboardInterrupt`` as an interrupt would.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Sequence
from typing import Any

import cloudpickle

from jray.jupyter.backends.base import Backend, Caps, Runtime

_ids = itertools.count(1)
_REFS: dict[bytes, FakeRef] = {}
_ACTORS: dict[int, FakeActor] = {}


class FakeTaskError(Exception):
    """A fake task failed; ``cause`` is the exception the function raised."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.cause = cause


class FakeRef:
    def __init__(self) -> None:
        self.id = next(_ids).to_bytes(8, "big")
        self.value: Any = None
        self.error: BaseException | None = None
        _REFS[self.id] = self

    def __reduce__(self) -> tuple[Any, ...]:
        return _ref_by_id, (self.id,)

    def __repr__(self) -> str:
        return f"FakeRef({self.id.hex()})"


def _ref_by_id(ref_id: bytes) -> FakeRef:
    return _REFS[ref_id]


def _copy(value: Any) -> Any:
    return cloudpickle.loads(cloudpickle.dumps(value, protocol=5))


def _resolve(args: tuple[Any, ...]) -> tuple[Any, ...]:
    out = []
    for a in args:
        if isinstance(a, FakeRef):
            if a.error is not None:
                raise a.error
            out.append(a.value)
        else:
            out.append(a)
    return tuple(out)


def _call(fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any], num_returns: int,
          log: list[str] | None, label: str) -> list[FakeRef]:
    """Run ``fn`` now; its refs. A task (``log`` given) adds its end state to ``log``."""
    log = [] if log is None else log
    refs = [FakeRef() for _ in range(num_returns)]
    payload = cloudpickle.dumps((args, kwargs), protocol=5)  # raises as a real submit would
    try:
        args, kwargs = cloudpickle.loads(payload)
        result = fn(*_resolve(args), **kwargs)
        values = [result] if num_returns == 1 else list(result)
        if len(values) != num_returns:
            raise ValueError(f"{label} returned {len(values)} values, not {num_returns}")
        for ref, v in zip(refs, values):
            ref.value = _copy(v)
        log.append("finished")
    except FakeTaskError as e:
        for ref in refs:
            ref.error = e
        log.append("failed")
    except Exception as e:
        for ref in refs:
            ref.error = FakeTaskError(e)
        log.append("failed")
    return refs


class FakeFunction:
    def __init__(self, backend: FakeBackend, fn: Any, options: dict[str, Any]) -> None:
        self.backend, self.fn, self.opts = backend, fn, options

    def options(self, **options: Any) -> FakeFunction:
        return FakeFunction(self.backend, self.fn, {**self.opts, **options})

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        n = int(self.opts.get("num_returns", 1))
        self.backend.submitted.append(dict(self.opts))
        refs = _call(self.fn, args, kwargs, n, self.backend.log,
                     str(self.opts.get("name", getattr(self.fn, "__name__", "task"))))
        return refs if n > 1 else refs[0]


class FakeActor:
    """An actor: one instance; calls run one at a time (a lock), like a real actor's."""

    def __init__(self, backend: FakeBackend, instance: Any, name: str | None) -> None:
        self.backend, self.instance, self.name = backend, instance, name
        self.lock = threading.Lock()
        self.key = next(_ids)
        _ACTORS[self.key] = self

    def __reduce__(self) -> tuple[Any, ...]:
        return _actor_by_key, (self.key,)

    def __getattr__(self, method: str) -> Any:
        if method.startswith("_"):
            raise AttributeError(method)
        return _Method(self, method)


def _actor_by_key(key: int) -> FakeActor:
    return _ACTORS[key]


class _Method:
    def __init__(self, actor: FakeActor, name: str) -> None:
        self.actor, self.name = actor, name

    def remote(self, *args: Any, **kwargs: Any) -> FakeRef:
        actor = self.actor
        if actor.instance is None:
            ref = FakeRef()
            ref.error = FakeTaskError(RuntimeError(f"actor {actor.name} was killed"))
            return ref
        with actor.lock:
            return _call(getattr(actor.instance, self.name), args, kwargs, 1, None,
                         self.name)[0]


class FakeActorClass:
    def __init__(self, backend: FakeBackend, cls: type, options: dict[str, Any]) -> None:
        self.backend, self.cls, self.opts = backend, cls, options

    def options(self, **options: Any) -> FakeActorClass:
        return FakeActorClass(self.backend, self.cls, {**self.opts, **options})

    def remote(self, *args: Any, **kwargs: Any) -> FakeActor:
        name = self.opts.get("name")
        if name and name in self.backend.named and self.opts.get("get_if_exists"):
            return self.backend.named[name]
        a, k = _copy((args, kwargs))
        actor = FakeActor(self.backend, self.cls(*_resolve(a), **k), name)
        if name:
            self.backend.named[name] = actor
        return actor


class FakeRuntime(Runtime):
    name = "fake"

    def get(self, refs: Any, timeout: float | None = None) -> Any:
        if isinstance(refs, (list, tuple)):
            return [self.get(r) for r in refs]
        if not isinstance(refs, FakeRef):
            raise TypeError(f"get: {refs!r} is not a FakeRef")
        if refs.error is not None:
            raise refs.error
        return _copy(refs.value)

    def is_ref(self, value: Any) -> bool:
        return isinstance(value, FakeRef)

    def ref_id(self, ref: Any) -> bytes:
        return bytes(ref.id)


class FakeBackend(Backend):
    name = "fake"
    caps = Caps(interrupt_running_actor_call=False)
    rt = FakeRuntime()

    def __init__(self, num_cpus: int = 2) -> None:
        self.num_cpus = num_cpus
        self.running = False
        self.log: list[str] = []  # "finished" / "failed" per task (not actor call), in order
        self.submitted: list[dict[str, Any]] = []  # the options of each task submitted
        self.cancelled: list[FakeRef] = []
        self.named: dict[str, FakeActor] = {}
        #: make the next blocking ``wait`` raise ``KeyboardInterrupt``, as the kernel's
        #: interrupt does while a cell waits (what happens next is the layer's logic)
        self.interrupt_next_wait = False

    def is_initialized(self) -> bool:
        return self.running

    def init(self, address: str | None = None, **options: Any) -> dict[str, Any]:
        unknown = set(options) - {"num_cpus", "num_gpus", "resources", "object_store_memory"}
        if unknown:
            raise TypeError(f"init: unexpected option(s) {', '.join(sorted(unknown))}")
        self.num_cpus = int(options.get("num_cpus") or self.num_cpus)
        self.running, self.started = True, address is None
        return self.info()

    def info(self) -> dict[str, Any]:
        return {"resources": self.cluster_resources(), "address": "fake://local"}

    def shutdown(self) -> None:
        self.running = self.started = False
        for actor in self.named.values():
            actor.instance = None
        self.named.clear()

    def nodes(self) -> list[dict[str, Any]]:
        return [{"NodeID": "fake-node", "Alive": True, "NodeManagerHostname": "localhost",
                 "Resources": self.cluster_resources()}]

    def cluster_resources(self) -> dict[str, float]:
        return {"CPU": float(self.num_cpus)}

    def available_resources(self) -> dict[str, float]:
        return self.cluster_resources()

    def task_counts(self) -> dict[str, int]:
        return {s: self.log.count(s) for s in sorted(set(self.log))}

    def remote(self, target: Any, **options: Any) -> Any:
        if isinstance(target, type):
            return FakeActorClass(self, target, options)
        return FakeFunction(self, target, options)

    def wait(self, refs: Sequence[Any], num_returns: int,
             timeout: float | None) -> tuple[list[Any], list[Any]]:
        if self.interrupt_next_wait and timeout != 0:
            self.interrupt_next_wait = False
            raise KeyboardInterrupt
        refs = list(refs)
        return refs[:num_returns], refs[num_returns:]

    def cancel(self, ref: Any) -> None:
        self.cancelled.append(ref)

    def kill(self, actor: Any) -> None:
        actor.instance = None
        self.named = {k: v for k, v in self.named.items() if v is not actor}
