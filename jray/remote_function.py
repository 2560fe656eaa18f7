"""``@jray.remote`` on a function: ``RemoteFunction`` and its options."""

from __future__ import annotations

import functools
import inspect
import math
import os
from typing import Any

from jray._private import api, generator_stream, generators
from jray._private import serialization as S
from jray._private.object_ref import ObjectRef
from jray._private.resources import check_precision, validate_demand
from jray._private.signature import ArgCheck, check_of
from jray.exceptions import ArgumentError

TASK_OPTIONS = frozenset({
    "num_cpus", "num_gpus", "resources", "num_returns", "max_retries", "retry_exceptions",
    "name", "memory", "scheduling_strategy", "runtime_env", "_generator_backpressure_num_objects",
    "max_calls",
})
#: ``num_returns`` of generator tasks (see ``jray._private.generators``)
GENERATOR_MODES = ("streaming", "dynamic")
DEFAULT_MAX_RETRIES = 3
_INFINITE_RETRIES = 1 << 30


def validate_options(where: str, opts: dict[str, Any], allowed: frozenset[str]) -> None:
    """Raise ``ValueError``/``TypeError`` naming ``where`` and the bad option."""
    unknown = sorted(set(opts) - allowed)
    if unknown:
        raise ValueError(
            f"{where}: unknown option(s) {', '.join(unknown)}; valid options are "
            f"{', '.join(sorted(allowed))}"
        )
    for key in ("num_cpus", "num_gpus", "memory"):
        v = opts.get(key)
        if v is None:
            continue
        msg = f"{where}: {key} must be a number >= 0 (not inf or nan), got {v!r}"
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ArgumentError(msg)  # a wrong type: Ray raises TypeError, jray did ValueError
        if not math.isfinite(v) or v < 0:
            raise ValueError(msg)
        if key != "memory":
            check_precision(where, key, v)
    res = opts.get("resources")
    if res is not None:
        if not isinstance(res, dict):
            raise TypeError(f"{where}: resources must be a dict, got {type(res).__name__}")
        for reserved in ("CPU", "GPU"):
            if reserved in res:
                raise ValueError(f"{where}: use num_{reserved.lower()}s= instead of resources="
                                 f"{{'{reserved}': ...}}")
        if "memory" in res:
            raise ValueError(f"{where}: use memory= instead of resources={{'memory': ...}}")
        validate_demand(res, where)
    if opts.get("num_returns") not in GENERATOR_MODES:
        check_int(where, opts, "num_returns", 1, types="(int, str, NoneType)")
    check_int(where, opts, "_generator_backpressure_num_objects", -1)
    check_int(where, opts, "max_retries", -1)
    check_int(where, opts, "max_calls", 0)
    re = opts.get("retry_exceptions")
    if re is not None and not isinstance(re, bool):
        if not (isinstance(re, (list, tuple)) and all(
            isinstance(c, type) and issubclass(c, BaseException) for c in re
        )):
            raise ValueError(
                f"{where}: retry_exceptions must be a bool or a list of exception classes, "
                f"got {re!r}"
            )
    name = opts.get("name")
    if name is not None and not isinstance(name, str):
        raise TypeError(f"{where}: name must be a str, got {type(name).__name__}")


#: what an int option accepts, by its lowest value (Ray's wording)
_ACCEPTS = {
    -1: "None, 0, -1 or a positive integer, where -1 represents infinity.",
    0: "None, 0 or a positive integer",
    1: "None or a positive integer",
}


def check_int(where: str, opts: dict[str, Any], key: str, lowest: int,
              types: str = "(int, NoneType)") -> None:
    """``opts[key]`` is None or an int >= ``lowest``: ``ArgumentError`` for another type
    (a ``TypeError`` as in Ray, and the ``ValueError`` jray raised), ``ValueError`` below.
    The messages are Ray's, after ``where``."""
    v = opts.get(key)
    if v is None:
        return
    if isinstance(v, bool) or not isinstance(v, int):
        shown = types.replace("int", str(int)).replace("str", str(str)).replace(
            "NoneType", str(type(None)))
        raise ArgumentError(f"{where}: The type of keyword '{key}' must be {shown}, but "
                            f"received type {type(v)} ({key}={v!r})")
    if v < lowest:
        if key == "num_returns" and v < 0:
            raise ValueError(f"{where}: The keyword 'num_returns' only accepts None, a "
                             f"non-negative integer, 'streaming' (for generators), or "
                             f"'dynamic' (num_returns={v!r})")
        if key == "num_returns":
            raise ValueError(f"{where}: num_returns=0 (no return value) is not supported; "
                             f"use num_returns=1 and return None")
        accepts = _ACCEPTS.get(lowest, f"None or an integer >= {lowest}")
        raise ValueError(f"{where}: The keyword '{key}' only accepts {accepts} ({key}={v!r})")


def demand_of(opts: dict[str, Any], default_cpus: float) -> dict[str, float]:
    cpus = opts.get("num_cpus")
    demand: dict[str, float] = {"CPU": float(default_cpus if cpus is None else cpus)}
    if opts.get("num_gpus"):
        demand["GPU"] = float(opts["num_gpus"])
    if opts.get("memory"):
        demand["memory"] = float(opts["memory"])
    for k, v in (opts.get("resources") or {}).items():
        demand[k] = float(v)
    return {k: v for k, v in demand.items() if v > 0}


class MaxCalls:
    """A task function with ``max_calls``: the worker that runs it for the
    ``jray_max_calls``-th time exits after that run (and a fresh one takes its place)."""

    def __init__(self, fn: Any, max_calls: int) -> None:
        self.fn = fn
        self.jray_max_calls = max_calls
        functools.update_wrapper(self, fn)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)


class _Code:
    """A function's id, pickled code and argument check, made once, shared by option variants."""

    __slots__ = ("fn", "func_id", "_blob", "_check", "variants")

    def __init__(self, fn: Any, func_id: bytes | None = None) -> None:
        self.fn = fn
        self.func_id = func_id or os.urandom(16)
        self._blob: bytes | None = None
        self._check: ArgCheck | None = None
        #: wrappers of a generator function (streaming, dynamic), by their settings
        self.variants: dict[tuple[Any, ...], _Code] = {}

    def check(self, name: str) -> ArgCheck:
        if self._check is None:
            self._check = check_of(f"{name}.remote()", self.fn)
        return self._check

    def blob(self, name: str) -> bytes:
        if self._blob is None:
            self._blob = S.dumps_code(self.fn, f"remote function {name}")
        return self._blob


class RemoteFunction:
    """A function run as a task by ``.remote(...)``, returning ``ObjectRef``(s)."""

    def __init__(self, fn: Any, options: dict[str, Any], code: _Code | None = None) -> None:
        self._name = getattr(fn, "__name__", repr(fn))
        validate_options(f"@jray.remote on {self._name}", options, TASK_OPTIONS)
        self._fn = fn
        self._options = options
        self._code = code or _Code(fn)
        self._task_name = options.get("name") or self._name
        self._demand = demand_of(options, 1)
        nr = options.get("num_returns")
        if nr is None and (inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn)):
            nr = "streaming"  # Ray's default for generator functions
        self._mode: str | None = nr if nr in GENERATOR_MODES else None
        self._backpressure = int(options.get("_generator_backpressure_num_objects") or -1)
        self._num_returns = 1 if self._mode is not None else int(nr or 1)
        mr = options.get("max_retries")
        self._max_retries = DEFAULT_MAX_RETRIES if mr is None else (
            _INFINITE_RETRIES if mr == -1 else mr)
        re = options.get("retry_exceptions")
        self._retry_exc: Any = bool(re) if not isinstance(re, (list, tuple)) else tuple(re)
        max_calls = options.get("max_calls")
        if max_calls is None and self._demand.get("GPU"):
            max_calls = 1  # Ray's default: a GPU task's worker exits, freeing the device
        self._run_code = self._code
        if self._mode is not None or max_calls:
            # the worker runs a wrapper of fn (its own code id), sharing fn's argument check
            variant = (self._mode, self._backpressure,
                       self._retry_exc if self._mode else None, max_calls or 0)
            run = self._code.variants.get(variant)
            if run is None:
                target = fn if self._mode is None else generator_stream.wrap_task(
                    fn, self._mode, self._backpressure, self._retry_exc)
                run = _Code(MaxCalls(target, max_calls) if max_calls else target)
                run._check = self._code.check(self._name)
                self._code.variants[variant] = run
            self._run_code = run
        self.__doc__ = getattr(fn, "__doc__", None)
        self.__wrapped__ = fn

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f"remote function {self._name} cannot be called directly; "
            f"use {self._name}.remote(...) to run it as a task"
        )

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        """Submit the task; ``TypeError`` at once if the arguments do not fit ``fn``."""
        code = self._run_code
        check = code._check or code.check(self._name)
        check(args, kwargs)
        client = api.client()
        fid = code.func_id
        blob = b"" if fid in client.functions_sent else code.blob(self._name)
        if self._mode == "streaming":
            generators.install(client)
        # a generator's wrapper picks the exceptions to retry itself (and re-raises only
        # those): the spec says just whether to, with no classes to pickle
        retry = self._retry_exc if self._mode is None else bool(self._retry_exc)
        refs = client.submit(fid, blob, self._task_name, args, kwargs, self._num_returns,
                             self._demand, self._max_retries, retry)
        if self._mode == "streaming":
            return generators.ObjectRefGenerator(refs[0], client, self._backpressure)
        return refs[0] if self._num_returns == 1 else refs

    def options(self, **opts: Any) -> RemoteFunction:
        if "max_calls" in opts:  # as in Ray: a property of the function's workers
            raise ValueError(f"{self._name}.options(): Setting 'max_calls' is not supported "
                             f"in '.options()'; give it to @jray.remote")
        merged = {**self._options, **opts}
        validate_options(f"{self._name}.options()", opts, TASK_OPTIONS)
        return RemoteFunction(self._fn, merged, self._code)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (self._fn, self._options, self._code.func_id))

    def __repr__(self) -> str:
        return f"<jray remote function {self._name}>"


def _rebuild(fn: Any, options: dict[str, Any], func_id: bytes) -> RemoteFunction:
    return RemoteFunction(fn, options, _Code(fn, func_id))


__all__ = ["ObjectRef", "RemoteFunction"]
