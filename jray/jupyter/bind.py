"""Binding a remote cell's results in the notebook's namespace, as local execution would.

- Names a cell binds by ``import`` never travel as values: the kernel runs the
  same import statement (``import_here``) and binds the module (or imported
  object) itself; where the kernel cannot import it the name is left as it
  was, and the cell says so.
- ``from M import *`` binds M's public names, found by importing M here
  (``star_names``; None when the kernel cannot, so no name can be ruled out).
- ``apply`` binds the task's values (a function or class defined in the cell
  gets the notebook's namespace as its globals, an array is writable unless
  ``--zero-copy``): a ``ModuleValue`` is imported here, a
  name the cell deleted (``del x``) and left unbound is deleted, and an
  output that could not be pickled is dropped (quietly for ``with``/``for``/
  ``except`` temporaries, with one note for other inferred names, and with a
  message naming it for names given with ``--out``).
"""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from jray.jupyter.cell import CellInfo
from jray.jupyter.remote_cell import ModuleValue, Unbound, Unchanged, rebind_globals, writable

NOT_BOUND = "the cell did not bind it"


def import_here(imports: Iterable[tuple[str, str]]) -> tuple[dict[str, Any], list[str]]:
    """Run each import statement in the kernel: the values bound, and notes on failures."""
    values: dict[str, Any] = {}
    notes: list[str] = []
    for name, stmt in imports:
        scratch: dict[str, Any] = {}
        try:
            exec(stmt, scratch)
        except Exception as e:
            notes.append(f"{name} (`{stmt}` fails here: {type(e).__name__}: {e})")
            continue
        values[name] = scratch[name]
    return values, notes


def star_names(modules: Sequence[str]) -> dict[str, Any] | None:
    """What ``from M import *`` binds for each module, or None if one cannot be imported."""
    out: dict[str, Any] = {}
    for mod in modules:
        scratch: dict[str, Any] = {}
        try:
            exec(f"from {mod} import *", scratch)
        except Exception:
            return None
        scratch.pop("__builtins__", None)
        out.update(scratch)
    return out


_IMMUTABLE = (int, float, complex, str, bytes, bool, type(None), frozenset, range,
              types.ModuleType, types.FunctionType, types.BuiltinFunctionType, type)


def mutable(value: Any, is_ref: Callable[[Any], bool] = lambda _v: False) -> bool:
    """Whether ``value`` could change in place (a tuple: if one of its items could);
    ``is_ref`` tells the backend's refs, which cannot."""
    if isinstance(value, tuple):
        return any(mutable(v, is_ref) for v in value)
    return not isinstance(value, _IMMUTABLE) and not is_ref(value)


def apply(ns: dict[str, Any], names: Sequence[str], values: Sequence[Any], info: CellInfo,
          explicit: bool, zero_copy: bool = False) -> list[str]:
    """Bind ``values`` to ``names`` in ``ns``; return notes for the cell's output.

    Arrays are bound as ordinary writable arrays (a read-only view of the object
    store is copied) unless ``zero_copy``."""
    notes: list[str] = []
    dropped: list[str] = []
    for name, value in zip(names, values):
        if isinstance(value, Unchanged):
            continue
        if isinstance(value, ModuleValue):
            try:
                ns[name] = sys.modules.get(value.name) or importlib.import_module(value.name)
            except Exception as e:
                notes.append(f"jray: {name} left as it was: module {value.name} cannot be "
                             f"imported here ({type(e).__name__}: {e})")
        elif not isinstance(value, Unbound):
            ns[name] = rebind_globals(value if zero_copy else writable(value), ns)
        elif value.reason == NOT_BOUND:
            if name in info.deletes:
                ns.pop(name, None)
            elif explicit:
                notes.append(f"jray: {name} not bound: {value.reason}")
        elif explicit:
            notes.append(f"jray: {name} not bound: {value.reason}")
        elif name not in info.temporaries:
            dropped.append(name)
    if dropped:
        notes.append(f"jray: not brought back (cannot be pickled; --out NAME says why): "
                     f"{', '.join(dropped)}")
    return notes
