"""Actors: ``@jray.remote`` on a class makes an ``ActorClass``.

``Cls.remote(*args)`` starts the actor (a process of its own, running the
constructor) and returns an ``ActorHandle`` at once; ``handle.method.remote()``
returns an ``ObjectRef``. Calls from one caller run in the order they were
sent; they go straight from the caller's process to the actor's, in batches,
never through the head. Handles can be passed to tasks and other actors and
stored inside objects.

Options (``@jray.remote(...)`` or ``Cls.options(...)``):

- ``num_cpus``, ``num_gpus``, ``resources``: held while the actor lives. With
  none of them, the actor needs 1 CPU to be placed and holds nothing (Ray's rule).
- ``name``, ``namespace``: find it with ``jray.get_actor(name, namespace)``;
  a second actor with the same name raises ``ValueError`` unless
  ``get_if_exists=True`` (then the existing actor's handle is returned).
- ``lifetime="detached"``: the actor outlives its handles. Otherwise the actor
  (named or not) exits, after the calls already sent, once its creator's handle
  and every copy of it passed to tasks, actors or objects are gone (the head
  counts the copies like borrowed refs), or when the actor that created it dies.
  Handles from ``get_actor`` and ``current_actor`` are weak: they do not count.
- ``max_restarts`` (default 0, -1 forever): restart the process when it dies;
  ``max_task_retries`` (default 0, -1 forever): send calls that were in
  flight at the crash again to the restarted actor (at-least-once).
- ``max_pending_calls`` (default -1, no limit): a process with this many calls
  to the actor still without results gets ``PendingCallsLimitExceeded`` from
  the next ``.remote()`` (back-pressure, as in Ray).
- ``max_concurrency``: run up to N calls at once on threads. Actors with
  ``async def`` methods run them on an event loop (default concurrency 1000);
  their plain methods still work (they run on the loop thread).
- ``checkpoint_interval`` (calls) and ``checkpoint_interval_s`` (seconds):
  see below.

Checkpoints (opt-in). A class that defines both::

    def __jray_checkpoint__(self) -> Any:       # the state to keep (picklable)
    def __jray_restore__(self, state) -> None:  # put it back

and is created with ``checkpoint_interval=N`` and/or ``checkpoint_interval_s=T``
is checkpointed after every N-th call, and after any call (or while idle) once
T seconds passed since the last checkpoint. The state goes to the object store
(inline, or shared memory when large) and the head keeps the newest one,
stored before the results of the call that triggered it are sent. When the
actor is restarted (``max_restarts``), the constructor runs again, then
``__jray_restore__`` gets the newest checkpoint, before any new call. Calls
after the last checkpoint are lost unless retried (``max_task_retries``).

Failures: when the actor's process dies, calls in flight and later calls raise
``ActorDiedError`` (its message names the signal or exit code; its
``exitcode`` holds it). If the constructor raises, the actor is dead and the
error carries the constructor's traceback. A method that raises does not harm
the actor: ``get`` raises a ``TaskError`` that is also the original class.

Cancellation: ``jray.cancel(ref)`` on a call's result (made by this process)
makes its ``get`` raise ``TaskCancelledError``. A call that has not started is
dropped; a running call is interrupted: ``TaskCancelledError`` is raised inside
a sync method (a signal to the actor's main thread, so ``time.sleep`` wakes),
inside a threaded one (``max_concurrency``; at its next bytecode, not inside a
blocking C call), and an ``async def`` one's task is cancelled (plain methods of
an async actor are not interrupted). The actor lives on with its state, and
later calls run in order. A call that already finished is not affected.
``force=True`` raises ``ValueError``: ``jray.kill`` stops the actor's process.
"""

from __future__ import annotations

import inspect
import math
import os
from collections.abc import Callable
from typing import Any, TypeVar

from jray._private import actor_client, generators
from jray._private import actor_protocol as A
from jray._private import serialization as S
from jray._private.actor_calls import call_name, exception_names
from jray._private.actor_executor import BUILTIN_METHODS, ExitActor
from jray._private.actor_lifetime import hosted_actor, lifetime_ref
from jray._private.object_ref import ObjectRef
from jray._private.signature import ArgCheck, Params, check_of, params_of
from jray.exceptions import ActorClassInheritanceException, ArgumentError, SerializationError
from jray.remote_function import check_int, demand_of, validate_options

ACTOR_OPTIONS = frozenset({
    "num_cpus", "num_gpus", "resources", "memory", "name", "namespace", "lifetime",
    "get_if_exists", "max_restarts", "max_task_retries", "max_concurrency", "concurrency_groups",
    "checkpoint_interval", "checkpoint_interval_s", "scheduling_strategy", "runtime_env",
    "max_pending_calls",
})
ASYNC_DEFAULT_CONCURRENCY = 1000
F = TypeVar("F", bound=Callable[..., Any])


#: ``num_returns`` codes of generator methods: "streaming" (Ray's default for generator
#: methods; the call returns an ``ObjectRefGenerator``) and "dynamic" (one ref whose value
#: is a ``DynamicObjectRefGenerator``)
STREAMING = -1
DYNAMIC = -2
_MODES = {"streaming": STREAMING, "dynamic": DYNAMIC}


def _num_returns_opt(where: str, num_returns: Any) -> None:
    if num_returns not in _MODES:
        _int_opt(where, {"num_returns": num_returns}, "num_returns", 1)


def _num_returns_code(num_returns: Any) -> int:
    return _MODES.get(num_returns) or int(num_returns)


def _retry_exceptions_opt(where: str, value: Any) -> Any:
    """``retry_exceptions``: None, a bool, or a list/tuple of exception classes (a tuple)."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, (list, tuple)) and all(
            isinstance(c, type) and issubclass(c, BaseException) for c in value):
        return tuple(value)
    raise ValueError(f"{where}: retry_exceptions must be a bool or a list of exception "
                     f"classes, got {value!r}")


def method(*args: Any, num_returns: int | str | None = None,
           max_task_retries: int | None = None, retry_exceptions: Any = None,
           concurrency_group: str | None = None, **unknown: Any) -> Any:
    """Options of one actor method: ``@jray.method(num_returns=2, max_task_retries=1)``.

    ``num_returns``: how many refs a call returns ("streaming" for a generator's
    refs one by one, the default for generator methods). ``max_task_retries``
    (-1: forever): calls of this method in flight when the actor died are sent
    again to the restarted actor, overriding the actor's ``max_task_retries``.
    ``retry_exceptions`` (True or a list of exception classes): a call that raises
    one of them runs again, up to ``max_task_retries`` times. ``concurrency_group``:
    the group (of the actor's ``concurrency_groups``) whose threads or event loop run
    its calls. Used bare (``@jray.method``) it changes nothing, as in Ray.
    """
    if len(args) == 1 and callable(args[0]) and num_returns is None \
            and max_task_retries is None and retry_exceptions is None \
            and concurrency_group is None and not unknown:
        return args[0]
    if args:
        raise TypeError("jray.method takes keyword options only, e.g. @jray.method(num_returns=2)")
    if unknown:
        raise ValueError(f"jray.method: unknown option(s) {', '.join(sorted(unknown))}; "
                         f"valid options are concurrency_group, max_task_retries, num_returns, "
                         f"retry_exceptions")
    _group_opt("jray.method", concurrency_group)
    retry = _retry_exceptions_opt("jray.method", retry_exceptions)
    _num_returns_opt("jray.method", num_returns)
    _int_opt("jray.method", {"max_task_retries": max_task_retries}, "max_task_retries", -1)

    def decorate(fn: F) -> F:
        if num_returns is not None:
            fn.__jray_num_returns__ = num_returns  # type: ignore[attr-defined]
        if max_task_retries is not None:
            fn.__jray_max_task_retries__ = max_task_retries  # type: ignore[attr-defined]
        if retry:
            fn.__jray_retry_exceptions__ = retry  # type: ignore[attr-defined]
        if concurrency_group is not None:
            fn.__jray_concurrency_group__ = concurrency_group  # type: ignore[attr-defined]
        return fn

    return decorate


def _group_opt(where: str, group: Any) -> None:
    if group is not None and (not isinstance(group, str) or not group):
        raise TypeError(f"{where}: concurrency_group must be a group's name (a str), "
                        f"got {group!r}")


def exit_actor() -> None:
    """Inside an actor method: exit the actor once this call returns (no restart).

    Anywhere else (the driver, a task) it raises ``TypeError``, as in Ray."""
    from jray.runtime_context import _actor_process

    if _actor_process() is None:
        raise TypeError("jray.actor.exit_actor() was called outside an actor; it ends the "
                        "actor whose method calls it (use jray.kill(handle) from outside)")
    raise ExitActor()


def _int_opt(where: str, opts: dict[str, Any], key: str, lowest: int) -> None:
    check_int(where, opts, key, lowest)


def _validate(where: str, opts: dict[str, Any]) -> None:
    validate_options(where, opts, ACTOR_OPTIONS)
    _int_opt(where, opts, "max_restarts", -1)
    _int_opt(where, opts, "max_task_retries", -1)
    _int_opt(where, opts, "max_concurrency", 1)
    _int_opt(where, opts, "checkpoint_interval", 0)
    _int_opt(where, opts, "max_pending_calls", -1)
    if opts.get("max_pending_calls") == 0:
        raise ValueError(f"{where}: max_pending_calls must be -1 (no limit) or at least 1, "
                         f"got 0")
    t = opts.get("checkpoint_interval_s")
    if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float))
                          or not math.isfinite(t) or t < 0):
        raise ValueError(f"{where}: checkpoint_interval_s must be a finite number >= 0, "
                         f"got {t!r}")
    life = opts.get("lifetime")
    if life not in (None, "detached", "non_detached"):
        raise ValueError(f"{where}: lifetime must be 'detached' or None, got {life!r}")
    ns = opts.get("namespace")
    if ns is not None and not isinstance(ns, str):
        raise TypeError(f"{where}: namespace must be a str, got {type(ns).__name__}")
    if opts.get("name") == "":
        raise ValueError(f"{where}: name must not be empty")
    if opts.get("get_if_exists") and not opts.get("name"):
        raise ValueError(f"{where}: get_if_exists=True needs a name")
    groups = opts.get("concurrency_groups")
    if groups is not None:
        if not isinstance(groups, dict) or not all(isinstance(k, str) for k in groups):
            raise TypeError(f"{where}: concurrency_groups must be a dict of group name -> "
                            f"max concurrency, got {groups!r}")
        for group, n in groups.items():
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise ValueError(f"{where}: concurrency group {group!r}: max_concurrency must "
                                 f"be greater than 0, got {n!r}")


def _methods(cls: type) -> tuple[dict[str, int], dict[str, Params | None], dict[str, int], bool]:
    methods: dict[str, int] = {}
    params: dict[str, Params | None] = {}
    retries: dict[str, int] = {}  # methods with a max_task_retries of their own
    is_async = False
    for name in dir(cls):
        if name.startswith("__") and name.endswith("__") and name not in BUILTIN_METHODS:
            continue
        attr = inspect.getattr_static(cls, name)
        fn = attr.__func__ if isinstance(attr, (staticmethod, classmethod)) else attr
        if not inspect.isfunction(fn):
            continue
        nr = getattr(fn, "__jray_num_returns__", None)
        if nr is None:
            generator = inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn)
            nr = "streaming" if generator else 1
        methods[name] = _num_returns_code(nr)
        params[name] = params_of(fn, skip_first=not isinstance(attr, staticmethod))
        if hasattr(fn, "__jray_max_task_retries__"):
            retries[name] = int(fn.__jray_max_task_retries__)
        is_async = is_async or inspect.iscoroutinefunction(fn)
    for name, builtin in BUILTIN_METHODS.items():
        if name not in methods:
            methods[name] = 1
            params[name] = params_of(builtin, skip_first=True)
    return methods, params, retries, is_async


#: argument checks of actor methods, shared by every handle of one class
_CHECKS: dict[tuple[str, str, Params | None], ArgCheck] = {}


def _method_check(class_name: str, name: str, params: Any) -> ArgCheck:
    if params is not None:
        params = tuple(tuple(p) for p in params)
    key = (class_name, name, params)
    check = _CHECKS.get(key)
    if check is None:
        check = _CHECKS[key] = ArgCheck(f"{class_name}.{name}.remote()", params)
    return check


class _ClassCode:
    """A class's pickled code and method table, made once and shared by its option variants."""

    def __init__(self, cls: type) -> None:
        self.cls = cls
        self.methods, self.params, self.retries, self.is_async = _methods(cls)
        self.check_init = check_of(f"{cls.__name__}.remote()", cls)
        self._blob: bytes | None = None

    def blob(self) -> bytes:
        if self._blob is None:
            self._blob = S.dumps_code(self.cls, f"actor class {self.cls.__name__}")
        return self._blob


class ActorClass:
    """A class made remote: ``.remote(...)`` starts an actor and returns its handle."""

    def __init__(self, cls: type, options: dict[str, Any], code: _ClassCode | None = None
                 ) -> None:
        self._name = cls.__name__
        _validate(f"@jray.remote on class {self._name}", options)
        self._cls = cls
        self._options = options
        self._code = code or _ClassCode(cls)
        self.__doc__ = cls.__doc__
        self.__wrapped__ = cls

    def __getattr__(self, name: str) -> Any:
        """The class's own attributes (class attributes, static and class methods), as in Ray."""
        cls = self.__dict__.get("_cls")
        if cls is None or name.startswith("__"):
            raise AttributeError(name)
        return getattr(cls, name)

    def __mro_entries__(self, bases: tuple[Any, ...]) -> tuple[type, ...]:
        raise ActorClassInheritanceException(
            f"Inheriting from actor classes is not currently supported. {self._name} is an "
            f"actor class (@jray.remote): derive from the plain class and decorate the subclass"
        )

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f"actor class {self._name} cannot be instantiated directly; "
            f"use {self._name}.remote(...) to start an actor"
        )

    def options(self, **opts: Any) -> ActorClass:
        _validate(f"{self._name}.options()", opts)
        return ActorClass(self._cls, {**self._options, **opts}, self._code)

    def remote(self, *args: Any, **kwargs: Any) -> ActorHandle:
        """Start the actor; ``TypeError`` at once if the arguments do not fit ``__init__``."""
        opts = self._options
        code = self._code
        code.check_init(args, kwargs)
        ckpt_n = int(opts.get("checkpoint_interval") or 0)
        ckpt_s = float(opts.get("checkpoint_interval_s") or 0.0)
        if (ckpt_n or ckpt_s) and not (hasattr(self._cls, "__jray_checkpoint__")
                                       and hasattr(self._cls, "__jray_restore__")):
            raise ValueError(
                f"{self._name}: checkpoint_interval needs the class to define "
                f"__jray_checkpoint__(self) and __jray_restore__(self, state)"
            )
        client = actor_client.current()
        core = client.core
        max_conc = opts.get("max_concurrency")
        meta: A.ActorMeta = {
            "class_name": self._name,
            "methods": code.methods,
            "max_task_retries": int(opts.get("max_task_retries") or 0),
            "is_async": code.is_async,
            "params": code.params,
            "retries": code.retries,
            "groups": dict(opts.get("concurrency_groups") or {}),
            "max_pending_calls": int(opts.get("max_pending_calls") or -1),
        }
        name = opts.get("name")
        detached = opts.get("lifetime") == "detached"
        hold: list[ObjectRef] = []
        with core.lock:
            nested: list[bytes] = []
            core.rt.capture = nested
            try:
                data, bufs = S.dumps_args(list(args), kwargs)
            except Exception as exc:
                raise SerializationError(
                    f"could not pickle the arguments of {self._name}(): an argument of type "
                    f"{S.describe_unpicklable((args, kwargs))} cannot be serialized "
                    f"({type(exc).__name__}: {exc})"
                ) from exc
            finally:
                core.rt.capture = None
            hold.extend(ObjectRef(oid) for oid in nested)
            field: tuple[str, Any] = ("inline", data)
            if bufs or len(data) >= S.INLINE_MAX:
                ref = core.put((list(args), kwargs), _data=(data, bufs))
                hold.append(ref)
                field = ("ref", S.dumps(ref))
        spec: A.ActorSpec = {
            "actor_id": os.urandom(16),
            "meta": meta,
            "class_blob": code.blob(),
            "args": field,
            "name": name,
            "namespace": opts.get("namespace") or "",
            "demand": demand_of(opts, 1),
            "hold": any(opts.get(k) is not None for k in ("num_cpus", "num_gpus", "resources")),
            "max_restarts": int(opts.get("max_restarts") or 0),
            "max_concurrency": int(max_conc or (ASYNC_DEFAULT_CONCURRENCY if code.is_async else 1)),
            "checkpoint_interval": ckpt_n,
            "checkpoint_interval_s": ckpt_s,
            "detached": detached,
            "get_if_exists": bool(opts.get("get_if_exists")),
            "output_addr": core.output_addr,
            "owner_actor": hosted_actor(),
        }
        actor_id, meta = client.create(spec, hold, collectable=not detached)
        original = actor_id == spec["actor_id"] and not detached
        return ActorHandle(actor_id, meta, client if original else None)

    def __reduce__(self) -> tuple[Any, ...]:
        return (ActorClass, (self._cls, self._options))

    def __repr__(self) -> str:
        return f"<jray actor class {self._name}>"


class ActorMethod:
    """``handle.method``: call it with ``.remote(...)``."""

    __slots__ = ("_actor_id", "_class", "_name", "_num_returns", "_retries", "_check",
                 "_retry_exc", "_group", "_title", "_call", "_pending")

    def __init__(self, actor_id: bytes, class_name: str, name: str, num_returns: int,
                 retries: int, check: ArgCheck, retry_exc: Any = None,
                 group: str | None = None, title: str | None = None,
                 pending: int = -1) -> None:
        self._actor_id = actor_id
        self._pending = pending  # the handle's max_pending_calls (-1: no limit)
        self._class = class_name
        self._name = name
        self._num_returns = num_returns
        self._retries = retries
        self._check = check
        self._retry_exc = retry_exc
        self._group = group
        self._title = title
        opts: dict[str, str] = {}  # what the actor must know of this call (see call_name)
        if num_returns in (STREAMING, DYNAMIC):
            opts["g"] = "streaming" if num_returns == STREAMING else "dynamic"
        if retries != 0:
            opts["r"] = str(retries)
        if retry_exc is not None:
            opts["x"] = (("1" if retry_exc else "0") if isinstance(retry_exc, bool)
                         else exception_names(retry_exc))
        if group is not None:
            opts["c"] = group
        if title is not None:
            opts["n"] = title.encode().hex()
        self._call = call_name(name, opts)

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        """Send the call; ``TypeError`` at once if the arguments do not fit the method."""
        self._check(args, kwargs)
        client = actor_client.current()
        if self._num_returns == STREAMING:
            generators.install(client.core)
            ref = client.call(self._actor_id, self._call, args, kwargs, 1, self._retries,
                              self._pending)[0]
            return generators.ObjectRefGenerator(ref, client.core)
        if self._num_returns == DYNAMIC:
            return client.call(self._actor_id, self._call, args, kwargs, 1, self._retries,
                               self._pending)[0]
        refs = client.call(self._actor_id, self._call, args, kwargs, self._num_returns,
                           self._retries, self._pending)
        return refs[0] if self._num_returns == 1 else refs

    def options(self, *, num_returns: int | str | None = None,
                max_task_retries: int | None = None, retry_exceptions: Any = None,
                concurrency_group: str | None = None, name: str | None = None,
                **unknown: Any) -> ActorMethod:
        """Options of one call. ``name``: the call's name; while it runs, the actor's
        process title is ``ray::<name>`` (as in Ray, for ``ps`` and ``top``)."""
        where = f"{self._class}.{self._name}.options()"
        if unknown:
            raise ValueError(f"{where}: unknown option(s) {', '.join(sorted(unknown))}; "
                             f"valid: concurrency_group, max_task_retries, name, num_returns, "
                             f"retry_exceptions")
        if name is not None and (not isinstance(name, str) or not name):
            raise ValueError(f"{where}: name must be a non-empty str, got {name!r}")
        _group_opt(where, concurrency_group)
        _num_returns_opt(where, num_returns)
        _int_opt(where, {"max_task_retries": max_task_retries}, "max_task_retries", -1)
        retry = _retry_exceptions_opt(where, retry_exceptions)
        if num_returns is None and max_task_retries is None and retry is None \
                and concurrency_group is None and name is None:
            return self
        return ActorMethod(
            self._actor_id, self._class, self._name,
            self._num_returns if num_returns is None else _num_returns_code(num_returns),
            self._retries if max_task_retries is None else max_task_retries, self._check,
            self._retry_exc if retry is None else retry,
            self._group if concurrency_group is None else concurrency_group,
            self._title if name is None else name, self._pending)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f"actor method {self._class}.{self._name} cannot be called directly; "
            f"use handle.{self._name}.remote(...)"
        )

    def __repr__(self) -> str:
        return f"<jray actor method {self._class}.{self._name}>"


class ActorHandle:
    """A reference to a running actor; ``handle.method.remote(...)`` calls it.

    Picklable: pass it to tasks and other actors, or store it in objects.
    """

    __slots__ = ("_actor_id", "_meta", "_methods", "_client", "_life", "__weakref__")

    def __init__(self, actor_id: bytes, meta: A.ActorMeta,
                 client: actor_client.ActorClient | None = None,
                 life: ObjectRef | None = None) -> None:
        self._actor_id = actor_id
        self._meta = meta
        self._methods: dict[str, ActorMethod] = {}
        self._client = client  # set on the handles whose loss may end the actor
        # a ref to the actor's lifetime object (``A.lifetime_id``): the counted handles
        # hold one; None in a weak handle (get_actor, current_actor) and in an original
        # handle that never left its process (its client counts it)
        self._life = life
        if client is not None:
            client.handle_created(actor_id)

    def __getattr__(self, name: str) -> ActorMethod:
        if (name.startswith("__") and name.endswith("__") and name not in BUILTIN_METHODS
                or name in ActorHandle.__slots__):
            raise AttributeError(name)
        m = self._methods.get(name)
        if m is None:
            n = self._meta["methods"].get(name)
            if n is None:
                known = ", ".join(sorted(m for m in self._meta["methods"]
                                         if m not in BUILTIN_METHODS)) or "none"
                raise AttributeError(
                    f"actor class {self._meta['class_name']} has no method {name!r} "
                    f"(its methods: {known})"
                )
            cls_name = self._meta["class_name"]
            params = self._meta.get("params", {}).get(name)
            retries = self._meta.get("retries", {}).get(name, self._meta["max_task_retries"])
            m = self._methods[name] = ActorMethod(
                self._actor_id, cls_name, name, n, retries, _method_check(cls_name, name, params),
                pending=self._meta.get("max_pending_calls", -1))
        return m

    def __reduce__(self) -> tuple[Any, ...]:
        client = self._client
        if client is not None:
            client.handle_escaped(self._actor_id)  # its client no longer ends it
            if self._life is None:
                self._life = lifetime_ref(client.core, self._actor_id)
        return (_rebuild_handle, (self._actor_id, self._meta, self._life))

    def __del__(self) -> None:
        client = self._client
        if client is not None:
            try:
                client.dropped.append(self._actor_id)
            except Exception:  # interpreter shutdown
                pass

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ActorHandle) and other._actor_id == self._actor_id

    def __hash__(self) -> int:
        return hash(self._actor_id)

    def __repr__(self) -> str:
        return f"Actor({self._meta['class_name']}, {self._actor_id.hex()})"


def _rebuild_handle(actor_id: bytes, meta: A.ActorMeta,
                    life: ObjectRef | None = None) -> ActorHandle:
    return ActorHandle(actor_id, meta, None, life)


def get_actor(name: str, namespace: str | None = None) -> ActorHandle:
    """The handle of the live actor called ``name`` (in ``namespace``).

    Raises ``ValueError`` naming it when no such actor is alive.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"jray.get_actor: name must be a non-empty str, got {name!r}")
    client = actor_client.current()
    ok, payload = client.request(
        lambda req: (A.ACTOR_REQUEST, req, "get_named", (name, namespace or "")))
    if not ok:
        raise ValueError(f"Failed to look up actor with name {name!r}: {payload}")
    actor_id, meta = payload
    client.conn(actor_id, subscribed=True)
    return ActorHandle(actor_id, meta)


def kill(actor: ActorHandle, *, no_restart: bool = True) -> None:
    """Kill the actor's process at once (calls in flight fail with ``ActorDiedError``).

    With ``no_restart=False`` an actor with ``max_restarts`` left is restarted.
    """
    if not isinstance(actor, ActorHandle):  # Ray raises ValueError, jray did TypeError: both
        raise ArgumentError(f"jray.kill() takes an actor handle (for tasks use jray.cancel()), "
                            f"got {type(actor).__name__}")
    actor_client.current().kill(actor._actor_id, bool(no_restart), actor._meta["class_name"])


def list_actors() -> list[dict[str, Any]]:
    """Every actor the head knows: id, class, state, name, pid, restarts, checkpoints."""
    ok, rows = actor_client.current().request(lambda req: (A.ACTOR_REQUEST, req, "list", None))
    if not ok:
        raise RuntimeError(rows)
    result: list[dict[str, Any]] = rows
    return result


__all__ = ["ActorClass", "ActorClassInheritanceException", "ActorHandle", "ActorMethod",
           "exit_actor", "get_actor", "kill", "list_actors", "method"]
