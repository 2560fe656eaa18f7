"""Engines: named, stateful Python namespaces living in actors (``%jray engines N``).

Each engine is an ``Engine`` actor named ``jray-engine-<i>``, placed by the
scheduler like any actor (with no resources given it needs a CPU to be placed
but holds none, so engines do not starve tasks). ``%%remote --engine NAME``
runs a cell in its namespace; ``%jray push``/``%jray pull`` copy variables in
and out. The kernel keeps the handles; ``jray.shutdown()`` ends the engines.
"""

from __future__ import annotations

import os
import socket
from typing import Any

import jray
from jray.jupyter.capture import Bundle
from jray.jupyter.remote_cell import CellSpec, execute

PREFIX = "jray-engine-"


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
        names = sorted(n for n in self.ns if not n.startswith("_") and n != "display")
        return {"name": self.name, "pid": os.getpid(), "host": socket.gethostname(),
                "variables": names}


EngineActor = jray.remote(Engine)


def engine_name(name: str) -> str:
    """``0``, ``engine-0`` and ``jray-engine-0`` all name the first engine."""
    if name.isdigit():
        return PREFIX + name
    if name.startswith("engine-"):
        return "jray-" + name
    return name


def start(engines: dict[str, Any], n: int, options: dict[str, Any]) -> list[str]:
    """Start engines until ``n`` exist; return the names started."""
    started: list[str] = []
    i = 0
    while len(engines) < n:
        name = PREFIX + str(i)
        if name not in engines:
            engines[name] = EngineActor.options(name=name, get_if_exists=True,
                                                **options).remote(name)
            started.append(name)
        i += 1
    return started


def describe(engines: dict[str, Any], timeout: float = 30) -> list[dict[str, Any]]:
    """One row per engine (waits for engines still starting)."""
    rows: list[dict[str, Any]] = jray.get([h.info.remote() for h in engines.values()],
                                          timeout=timeout)
    return rows
