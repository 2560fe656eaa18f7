"""Running a cell's source remotely: as a task, or in an engine's namespace.

``run_cell_task(spec, hub, *values)`` is the remote function behind ``%%remote``:
the input values arrive as top-level arguments (so ``ObjectRef`` inputs are
dependencies, resolved before the task runs), the cell's source runs in a
fresh ``__main__``-like namespace, and the task returns one value per output
name plus the mimebundle of the last expression. Each output is its own
``ObjectRef`` (``num_returns``), so a ``--no-block`` cell can bind every name
to a ref of its own.

A failing cell re-raises its exception with ``_jray_cell_traceback`` set: the
traceback from the cell's first frame on (filename ``<remote-cell-N>``, N the
cell's ``In[N]``, with the cell's own line numbers and its lines as written).
An output that is a module comes back as ``ModuleValue`` (its name; the
kernel imports it), and ``get_ipython()`` in the cell is ``remote_shell``'s.
"""

from __future__ import annotations

import hashlib
import pickle
import sys
import traceback
import types
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cloudpickle

from jray.jupyter.backends.base import Runtime
from jray.jupyter.backends.jray_backend import JrayRuntime
from jray.jupyter.capture import Bundle, capture, format_value
from jray.jupyter.cell import compile_cell
from jray.jupyter.remote_shell import get_ipython

CELL_PREFIX = "<remote-cell-"
#: How deep inside containers refs are looked for (and resolved, and arrays made
#: writable), and the largest container looked into (a long list costs every cell).
MAX_DEPTH = 4
MAX_SCAN = 10_000
#: Watched inputs up to this size (pickle plus writable buffers) are compared.
WATCH_LIMIT = 64 << 20


@dataclass(frozen=True)
class CellSpec:
    source: str
    filename: str
    key: str
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    quiet: bool = False
    listing: str = ""  # the cell as written (IPython syntax), shown in tracebacks
    writable: tuple[str, ...] = ()  # inputs the cell changes in place: writable copies
    watched: tuple[str, ...] = ()  # inputs calls may change: compared before and after
    ref_ids: tuple[bytes, ...] = ()  # refs held inside inputs, sent resolved after them
    rt: Runtime = JrayRuntime()  # the runtime the cell runs on (its refs, its get)


class Unbound:
    """Stands for an output name the cell did not bind (or whose value cannot be pickled)."""

    def __init__(self, name: str, reason: str) -> None:
        self.name, self.reason = name, reason

    def __repr__(self) -> str:
        return f"<unbound {self.name}: {self.reason}>"


@dataclass(frozen=True)
class Unchanged:
    """Stands for a watched input that the cell left as it was (nothing to rebind)."""

    name: str


@dataclass(frozen=True)
class ModuleValue:
    """Stands for an output whose value is a module: the kernel imports it by name."""

    name: str


def _cell_traceback(exc: BaseException) -> str:
    """The traceback from the first frame of cell code on."""
    tb = exc.__traceback__
    while tb is not None and not tb.tb_frame.f_code.co_filename.startswith(CELL_PREFIX):
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb or exc.__traceback__))


def execute(spec: CellSpec, ns: dict[str, Any], hub: Any,
            after: Callable[[], None] | None = None) -> Bundle | None:
    """Run the cell in ``ns``, its output going to ``hub``; the last value's mimebundle.

    ``after`` runs once the cell succeeded, while its output is still captured."""
    body, tail = compile_cell(spec.source, spec.filename, spec.listing or None)
    ns["get_ipython"] = get_ipython
    with capture(hub, spec.key, ns, spec.rt, "IPython" in spec.source):
        try:
            with spec.rt.cancellable():
                exec(body, ns)
                value = eval(tail, ns) if tail is not None else None
        except Exception as e:
            try:
                e._jray_cell_traceback = _cell_traceback(e)  # type: ignore[attr-defined]
            except Exception:
                pass
            raise
        if after is not None:
            after()
        if value is None or spec.quiet:
            return None
        return format_value(value)


def fingerprint(value: Any) -> bytes | None:
    """A digest of ``value``'s pickle and its writable buffers (read-only ones cannot
    change); None when it cannot be pickled or is over ``WATCH_LIMIT`` bytes."""
    buffers: list[pickle.PickleBuffer] = []
    try:
        data = cloudpickle.dumps(value, protocol=5, buffer_callback=buffers.append)
    except Exception:
        return None
    digest = hashlib.blake2b(data, digest_size=16)
    size = len(data)
    for buf in buffers:
        raw = buf.raw()
        if raw.readonly:
            continue
        size += raw.nbytes
        if size > WATCH_LIMIT:
            return None
        digest.update(raw)
    return digest.digest() if size <= WATCH_LIMIT else None


def rebind_globals(value: Any, ns: dict[str, Any]) -> Any:
    """A notebook function (or class) with ``ns`` as its globals, as if defined there.

    cloudpickle gives a function pickled by value a globals dict of its own, so
    ``global counter`` in it would change a copy; rebound, it changes ``ns``.
    The globals it captured are added to ``ns`` where ``ns`` lacks them.
    """
    if isinstance(value, types.FunctionType) and value.__module__ == "__main__":
        if value.__globals__ is ns:
            return value
        for key, captured in value.__globals__.items():  # what cloudpickle captured
            ns.setdefault(key, captured)
        fn = types.FunctionType(value.__code__, ns, value.__name__, value.__defaults__,
                                value.__closure__)
        fn.__kwdefaults__ = value.__kwdefaults__
        fn.__dict__.update(value.__dict__)
        fn.__qualname__, fn.__doc__ = value.__qualname__, value.__doc__
        fn.__annotations__ = value.__annotations__
        return fn
    if isinstance(value, type) and value.__module__ == "__main__":
        for key, attr in list(vars(value).items()):
            fn = getattr(attr, "__func__", attr)
            if isinstance(fn, types.FunctionType) and fn.__globals__ is not ns:
                new = rebind_globals(fn, ns)
                wrapped = type(attr)(new) if attr is not fn else new
                try:
                    setattr(value, key, wrapped)
                except (AttributeError, TypeError):
                    pass
    return value


_JRAY = JrayRuntime()


def nested_refs(value: Any, rt: Runtime = _JRAY, depth: int = 0) -> list[Any]:
    """ObjectRefs (of runtime ``rt``) inside lists, tuples and dicts (a few levels deep),
    and in the globals and closure of a notebook function, in order of appearance."""
    if depth > MAX_DEPTH:
        return []
    if rt.is_ref(value):
        return [value] if depth else []
    if type(value) in (list, tuple, dict) and len(value) > MAX_SCAN:
        return []
    if type(value) in (list, tuple):
        return [r for v in value for r in nested_refs(v, rt, depth + 1)]
    if type(value) is dict:
        return [r for v in value.values() for r in nested_refs(v, rt, depth + 1)]
    if isinstance(value, types.FunctionType) and value.__module__ == "__main__":
        codes, names = [value.__code__], set()
        while codes:
            code = codes.pop()
            names |= set(code.co_names)
            codes += [c for c in code.co_consts if isinstance(c, types.CodeType)]
        held = [value.__globals__[n] for n in sorted(names) if n in value.__globals__]
        held += [c.cell_contents for c in value.__closure__ or () if _filled(c)]
        return [r for v in held for r in nested_refs(v, rt, depth + 1)]
    return []


def _filled(cell: Any) -> bool:
    try:
        _ = cell.cell_contents
    except ValueError:  # an empty cell (a name not yet assigned in the enclosing scope)
        return False
    return True


def resolve(value: Any, values: dict[bytes, Any], rt: Runtime = _JRAY, depth: int = 0) -> Any:
    """``value`` with the refs ``nested_refs`` found replaced by their values."""
    if depth > MAX_DEPTH or not values:
        return value
    if rt.is_ref(value):
        return values.get(rt.ref_id(value), value) if depth else value
    if type(value) in (list, tuple):
        return type(value)(resolve(v, values, rt, depth + 1) for v in value)
    if type(value) is dict:
        return {k: resolve(v, values, rt, depth + 1) for k, v in value.items()}
    return value


def writable(value: Any, depth: int = 0) -> Any:
    """``value`` with read-only NumPy arrays (zero-copy views of the object store) copied,
    also inside lists, tuples and dicts; everything else is returned as it is."""
    np = sys.modules.get("numpy")
    if np is None or depth > MAX_DEPTH:
        return value
    if isinstance(value, np.ndarray):
        return value if value.flags.writeable else value.copy()
    if type(value) in (list, tuple, dict) and len(value) > MAX_SCAN:
        return value
    if type(value) in (list, tuple):
        items = [writable(v, depth + 1) for v in value]
        return value if all(a is b for a, b in zip(items, value)) else type(value)(items)
    if type(value) is dict:
        new = {k: writable(v, depth + 1) for k, v in value.items()}
        return value if all(new[k] is v for k, v in value.items()) else new
    return value


def _output(ns: dict[str, Any], name: str) -> Any:
    if name not in ns:
        return Unbound(name, "the cell did not bind it")
    value = ns[name]
    if isinstance(value, types.ModuleType):
        return ModuleValue(value.__name__)
    try:  # out-of-band buffers are not copied: a cheap check even for large arrays
        cloudpickle.dumps(value, protocol=5, buffer_callback=lambda _b: None)
    except Exception as e:
        return Unbound(name, f"its value cannot be pickled ({type(e).__name__}: {e})")
    return value


def _run_cell(spec: CellSpec, hub: Any, *values: Any) -> Any:
    ns: dict[str, Any] = {"__name__": "__main__"}
    resolved = dict(zip(spec.ref_ids, values[len(spec.inputs):]))
    rt = spec.rt
    ns.update((name, rebind_globals(resolve(v, resolved, rt), ns))
              for name, v in zip(spec.inputs, values))
    for name, v in list(ns.items()):  # globals that notebook functions captured
        if rt.is_ref(v) and rt.ref_id(v) in resolved and name not in spec.inputs:
            ns[name] = resolved[rt.ref_id(v)]
    for name in spec.writable:
        if name in ns:
            ns[name] = writable(ns[name])
    before = {n: fingerprint(ns[n]) for n in spec.watched if n in ns}
    changed: set[str] = set()

    def compare() -> None:
        for name, old in before.items():
            if old is None:
                print(f"jray: cannot tell whether the cell changed {name} in place (it is too "
                      f"large to compare); --out {name} brings it back", file=sys.stderr)
            elif name in ns and fingerprint(ns[name]) != old:
                changed.add(name)
        if changed and not set(changed) <= set(spec.outputs):
            lost = sorted(changed - set(spec.outputs))
            print(f"jray: the cell changed {', '.join(lost)} in place; the notebook keeps the "
                  f"old value (--out {','.join(lost)} brings it back)", file=sys.stderr)

    bundle = execute(spec, ns, hub, compare)
    result = (*(Unchanged(n) if n in before and n not in changed and n in ns
                else _output(ns, n) for n in spec.outputs), bundle)
    return result if len(result) > 1 else result[0]


#: backend -> the remote function of _run_cell on it
_TASKS: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def submit(backend: Any, spec: CellSpec, hub: Any, values: list[Any],
           options: dict[str, Any]) -> list[Any]:
    """Submit the cell as a task of ``backend``; one ref per output, then the last
    value's ref."""
    task = _TASKS.get(backend)
    if task is None:
        task = _TASKS[backend] = backend.remote(_run_cell, max_retries=0)
    n = len(spec.outputs) + 1
    refs = task.options(num_returns=n, **options).remote(spec, hub, *values)
    return list(refs) if n > 1 else [refs]
