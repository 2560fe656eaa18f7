"""Engines: named, stateful Python namespaces living in actors (``%jray engines N``).

Each engine is an ``Engine`` actor named ``jray-engine-<i>``, placed by the
scheduler like any actor (with no resources given it needs a CPU to be placed
but holds none, so engines do not starve tasks). ``%%remote --engine NAME``
runs a cell in its namespace; ``%jray push``/``%jray pull`` copy variables in
and out. The kernel keeps the handles; a shutdown of the cluster ends the engines.
Everything here goes through the notebook's backend (jray's cluster or Ray's).
"""

from __future__ import annotations

import os
import socket
from typing import Any

from jray.jupyter.backends.base import Backend
from jray.jupyter.capture import Bundle
from jray.jupyter.remote_cell import CellSpec, execute

PREFIX = "jray-engine-"
#: How long a new engine may take to answer before it is killed (not registered).
START_TIMEOUT_S = 30.0


class Engine:
    """An actor holding one persistent ``__main__``-like namespace."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.ns: dict[str, Any] = {"__name__": "__main__"}

    def execute(self, spec: CellSpec, hub: Any) -> Bundle | None:
        return execute(spec, self.ns, hub)

    def push(self, values: dict[str, Any]) -> None:
        self.ns.update(values)

    def pull(self, names: list[str]) -> dict[str, Any]:
        missing = [n for n in names if n not in self.ns]
        if missing:
            raise NameError(f"name {missing[0]!r} is not defined in engine {self.name}")
        return {n: self.ns[n] for n in names}

    def info(self) -> dict[str, Any]:
        names = sorted(n for n in self.ns
                       if not n.startswith("_") and n not in ("display", "get_ipython"))
        return {"name": self.name, "pid": os.getpid(), "host": socket.gethostname(),
                "variables": names}


def engine_name(name: str) -> str:
    """``0``, ``engine-0`` and ``jray-engine-0`` all name the first engine."""
    if name.isdigit():
        return PREFIX + name
    if name.startswith("engine-"):
        return "jray-" + name
    return name


def select(engines: dict[str, Any], spec: str) -> dict[str, Any]:
    """The engines ``spec`` names: ``all``, ``0``, ``engine-1``, lists ``0,2`` and slices
    ``1:3`` / ``::2`` of the engines in order. ``KeyError`` names what is not there."""
    if spec.strip() == "all":
        return dict(engines)
    names = sorted(engines, key=lambda n: (len(n), n))  # engine-2 before engine-10
    out: dict[str, Any] = {}
    for item in (t.strip() for t in spec.split(",") if t.strip()):
        if ":" in item:
            try:
                parts = [int(x) if x.strip() else None for x in item.split(":")]
                chosen = names[slice(*parts)]
            except (ValueError, TypeError):
                raise KeyError(f"{item!r} is not a slice such as 1:3") from None
        else:
            full = engine_name(item)
            if full not in engines:
                raise KeyError(f"no engine {item!r}; engines: {', '.join(names) or 'none'}")
            chosen = [full]
        out.update((n, engines[n]) for n in chosen)
    if not out:
        raise KeyError(f"{spec!r} selects no engine; engines: {', '.join(names) or 'none'}")
    return out


def start(backend: Backend, engines: dict[str, Any], n: int, options: dict[str, Any],
          timeout: float | None = None) -> tuple[list[str], str]:
    """Start engines until ``n`` exist; the names started, and why others did not start.

    Each new engine must answer within ``timeout``; one that does not (it cannot be
    placed, or its constructor failed) is killed and not registered.
    """
    timeout = START_TIMEOUT_S if timeout is None else timeout
    new: dict[str, Any] = {}
    actor = backend.remote(Engine)
    i = 0
    while len(engines) + len(new) < n:
        name = PREFIX + str(i)
        if name not in engines:
            new[name] = actor.options(name=name, get_if_exists=True,
                                            **options).remote(name)
        i += 1
    pings = {h.info.remote(): name for name, h in new.items()}
    ready, late = backend.wait(list(pings), num_returns=len(pings), timeout=timeout) \
        if pings else ([], [])
    started: list[str] = []
    problems: list[str] = []
    for ref in ready:
        name = pings[ref]
        try:
            backend.get(ref, timeout=timeout)
        except Exception as e:
            problems.append(f"{name} failed to start ({type(e).__name__})")
            _kill(backend, new[name])
            continue
        engines[name] = new[name]
        started.append(name)
    for ref in late:
        problems.append(f"{pings[ref]} could not be placed within {timeout:g}s")
        _kill(backend, new[pings[ref]])
    return started, "; ".join(problems)


def _kill(backend: Backend, handle: Any) -> None:
    try:
        backend.kill(handle)
    except Exception:
        pass  # already gone


def describe(backend: Backend, engines: dict[str, Any],
             timeout: float = 30) -> list[dict[str, Any]]:
    """One row per engine (waits for engines still starting)."""
    rows: list[dict[str, Any]] = backend.get([h.info.remote() for h in engines.values()],
                                          timeout=timeout)
    return rows
