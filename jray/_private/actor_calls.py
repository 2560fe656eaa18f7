"""Per-call options of an actor call, carried in its ``ACTOR_CALL``'s method field.

The caller (``jray.actor.ActorMethod``) appends what only it knows of a call
(``.options()`` overrides, a generator's mode) as ``method\x00k=v;k=v``; the actor
(``actor_executor``) splits them off. A method name never holds ``\x00``, and a
call with no options sends the bare name, as before.
"""

from __future__ import annotations

from typing import Any

from jray.exceptions import TaskCancelledError


def call_name(method: str, opts: dict[str, str]) -> str:
    """The method field of an ``ACTOR_CALL`` with per-call options the actor reads:
    ``g`` (a generator's mode: streaming | dynamic), ``r`` (retries of exceptions left),
    ``x`` (the retry_exceptions override: 1, 0, or ``module:qualname`` names),
    ``c`` (the concurrency group that runs it)."""
    if not opts:
        return method
    return method + "\x00" + ";".join(f"{k}={v}" for k, v in opts.items())


def resent(msg: Any, left: int) -> Any:
    """``msg`` (an ``ACTOR_CALL``) sent again after its actor died, with ``left`` retries:
    the budget it carries (``r``) is what its caller has left, so the restarted actor
    never retries it more than ``max_task_retries`` in all (Ray's shared budget)."""
    method = msg[1]
    if "\x00" not in method or left < 0:
        return msg
    name, opts = split_call(method)
    if "r" not in opts:
        return msg
    opts["r"] = str(left)
    return (msg[0], call_name(name, opts), *msg[2:])


def split_call(method: str) -> tuple[str, dict[str, str]]:
    """``(method name, options)`` of an ``ACTOR_CALL``'s method field (``call_name``)."""
    if "\x00" not in method:
        return method, {}
    name, _, rest = method.partition("\x00")
    return name, dict(item.split("=", 1) for item in rest.split(";"))


def exception_names(classes: tuple[type, ...]) -> str:
    return ",".join(f"{c.__module__}:{c.__qualname__}" for c in classes)


def retry_spec(fn: Any, opts: dict[str, str]) -> Any:
    """What a call retries: None, True (any Exception), classes, or a set of names."""
    x = opts.get("x")
    if x is None:
        return getattr(fn, "__jray_retry_exceptions__", None)
    if x in ("0", "1"):
        return x == "1" or None
    return set(x.split(","))


def retryable(spec: Any, exc: BaseException) -> bool:
    if not isinstance(exc, Exception) or isinstance(exc, TaskCancelledError):
        return False
    if spec is True:
        return True
    if isinstance(spec, tuple):
        return isinstance(exc, spec)
    return any(f"{c.__module__}:{c.__qualname__}" in spec for c in type(exc).__mro__)
