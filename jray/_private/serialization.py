"""Turning values into object locations and back.

Small values (under ``INLINE_MAX`` bytes in all) are pickled into a ``bytes``
that travels inside messages. Larger ones are pickled with protocol 5: their
big buffers (NumPy arrays, bytes, bytearrays) go out of band straight into a
shared-memory segment, written once, read anywhere on the node without a copy.
Functions, lambdas and classes defined in ``__main__`` or a notebook cell are
pickled by value with cloudpickle; plain data takes the faster C pickler.

Code pickled by value keeps its identity for tracebacks: ``CodePickler``
ships each code object whole (``marshal``, so its file name and line table
survive whatever the pickler version does to them) together with the source
lines its frames can show, and loading it registers those lines in the
worker's ``linecache``. A remote traceback then names the real file, line and
source text, also on a machine where that file does not exist (a notebook
cell).
"""

from __future__ import annotations

import io
import linecache
import marshal
import os
import pickle
import traceback
import types
from collections import ChainMap
from collections.abc import Callable, Iterator
from typing import Any, cast

import cloudpickle

from jray._private import protocol as P
from jray._private import shm
from jray._private.debug import HIDE, full_traceback
from jray.exceptions import SerializationError, TaskError

INLINE_MAX = 100 * 1024
#: Buffers at least this large are taken out of band (the rest stay in-band).
OOB_MIN = 4096
#: At most this many source lines travel with one code object.
MAX_SHIPPED_LINES = 2000


class ArgRef:
    """Placeholder for the i-th dependency among a task's top-level arguments."""

    __slots__ = ("i",)

    def __init__(self, i: int) -> None:
        self.i = i

    def __reduce__(self) -> tuple[Any, ...]:
        return (ArgRef, (self.i,))


def _code_lines(code: types.CodeType) -> Iterator[int]:
    """Every line number the frames of ``code`` (and the code nested in it) can show."""
    yield code.co_firstlineno
    for _, _, line in code.co_lines():
        if line is not None:
            yield line
    for const in code.co_consts:
        if type(const) is types.CodeType:
            yield from _code_lines(const)


def _source_of(code: types.CodeType) -> tuple[int, tuple[str, ...]]:
    """``(first line number, source lines)`` covering ``code``, as the driver knows them."""
    lines = linecache.getlines(code.co_filename)
    if not lines:
        return 0, ()
    numbers = list(_code_lines(code))
    first = max(1, min(numbers))
    last = min(max(numbers), first + MAX_SHIPPED_LINES - 1, len(lines))
    return first, tuple(lines[first - 1 : last])


def _reduce_code(code: types.CodeType) -> tuple[Any, ...]:
    first, lines = _source_of(code)
    return (load_code_object, (marshal.dumps(code), code.co_filename, first, lines))


def register_source(filename: str, first: int, lines: tuple[str, ...]) -> None:
    """Make ``linecache`` show ``lines`` as lines ``first``... of ``filename``.

    Lines already known for the file (from disk, or shipped earlier) are kept
    where nothing new covers them; the entry never expires, since the shipped
    code is what runs here whatever the disk holds.
    """
    if not lines or first < 1:
        return
    known = list(linecache.getlines(filename))
    end = first - 1 + len(lines)
    if len(known) < end:
        known.extend("\n" for _ in range(end - len(known)))
    known[first - 1 : end] = lines
    linecache.cache[filename] = (sum(map(len, known)), None, known, filename)


def load_code_object(
    data: bytes, filename: str, first: int, lines: tuple[str, ...]
) -> types.CodeType:
    """Unpickle a code object shipped by ``CodePickler`` and register its source."""
    register_source(filename, first, lines)
    return cast(types.CodeType, marshal.loads(data))


#: reducers of the classes given to ``register_serializer`` (this process only, as in Ray)
_CUSTOM: dict[type, Callable[[Any], tuple[Any, ...]]] = {}


class CodePickler(cloudpickle.Pickler):  # type: ignore[misc]
    """cloudpickle, with code objects shipped whole and with their source lines."""

    dispatch_table = ChainMap(
        _CUSTOM, {types.CodeType: _reduce_code}, cloudpickle.Pickler.dispatch_table
    )


def register_serializer(cls: type, *, serializer: Callable[[Any], Any],
                        deserializer: Callable[[Any], Any]) -> None:
    """Serialize instances of exactly ``cls`` as ``serializer(obj)``, rebuilt by
    ``deserializer(that)`` wherever they are read (the deserializer travels with the
    value, pickled by value). Registered in this process only: a task or actor that
    sends such objects registers the serializer itself, as in Ray."""
    if not isinstance(cls, type):
        raise TypeError(f"register_serializer: cls must be a class, got {cls!r}")
    for name, fn in (("serializer", serializer), ("deserializer", deserializer)):
        if not callable(fn):
            raise TypeError(f"register_serializer: {name} must be callable, got {fn!r}")
    _CUSTOM[cls] = lambda obj: (_call_deserializer, (deserializer, serializer(obj)))


def deregister_serializer(cls: type) -> None:
    """Forget the serializer of ``cls`` (nothing happens if it has none)."""
    _CUSTOM.pop(cls, None)


def _call_deserializer(deserializer: Callable[[Any], Any], state: Any) -> Any:
    return deserializer(state)


def cloud_dumps(
    value: Any, buffer_callback: Callable[[pickle.PickleBuffer], Any] | None = None
) -> bytes:
    """``cloud_dumps(value)`` through ``CodePickler``."""
    with io.BytesIO() as file:
        CodePickler(file, protocol=5, buffer_callback=buffer_callback).dump(value)
        return file.getvalue()


def dumps_code(obj: Any, what: str) -> bytes:
    """Pickle a function or class by value (cloudpickle); ``what`` names it in the error."""
    try:
        return cloud_dumps(obj)
    except Exception as exc:
        raise SerializationError(
            f"{what} cannot be pickled: it refers to an object that cannot be serialized "
            f"({type(exc).__name__}: {exc})"
        ) from exc


def fill_args(
    args: Any, kwargs: dict[str, Any], values: list[Any]
) -> tuple[list[Any], dict[str, Any]]:
    """Put the resolved dependency ``values`` in place of the ``ArgRef`` placeholders."""
    filled = [values[a.i] if type(a) is ArgRef else a for a in args]
    for k, v in kwargs.items():
        if type(v) is ArgRef:
            kwargs[k] = values[v.i]
    return filled, kwargs


def split_returns(name: str, result: Any, count: int) -> list[Any]:
    """The ``count`` return values of ``name()`` (``num_returns``), or SerializationError."""
    if count == 1:
        return [result]
    try:
        values = list(result)
    except TypeError:
        values = []
    if len(values) != count:
        raise SerializationError(
            f"{name}() declared num_returns={count} but returned "
            f"{type(result).__name__} {'of length ' + str(len(values)) if values else ''}"
        )
    return values


_PLAIN = frozenset({type(None), bool, int, float, str, bytes, complex, ArgRef})


def _is_plain(value: Any) -> bool:
    t = type(value)
    if t in _PLAIN:
        return True
    if t is tuple or t is list:
        return len(value) <= 16 and all(type(v) in _PLAIN for v in value)
    return False


def dumps(value: Any) -> bytes:
    """Pickle ``value`` in-band (for code and small control data)."""
    if _is_plain(value):
        return pickle.dumps(value, 5)
    data: bytes = cloud_dumps(value)
    return data


def dumps_oob(value: Any) -> tuple[bytes, list[memoryview]]:
    """Pickle ``value``; buffers of at least ``OOB_MIN`` bytes come back separately."""
    data, buffers, _ = _dumps_counted(value)
    return data, buffers


def _dumps_counted(value: Any) -> tuple[bytes, list[memoryview], int]:
    """``dumps_oob``, and how many buffers (of any size) the value holds."""
    if _is_plain(value) and (type(value) is not bytes or len(value) < INLINE_MAX):
        return pickle.dumps(value, 5), [], 0
    buffers: list[memoryview] = []
    seen = [0]

    def take(buf: pickle.PickleBuffer) -> bool:
        seen[0] += 1
        raw = buf.raw()
        if raw.nbytes >= OOB_MIN:
            buffers.append(raw)
            return False
        return True

    data = cloud_dumps(value, buffer_callback=take)
    return data, buffers, seen[0]


def _dumps_inline(value: Any) -> bytes:
    """A small value that holds buffers (NumPy arrays): they travel beside its pickle
    stream and are read back as read-only, aligned buffers, as from the store."""
    raws: list[bytes] = []
    data = cloud_dumps(value, buffer_callback=lambda b: raws.append(b.raw().tobytes()))
    return pickle.dumps(_InlineBuffers(data, raws), 5)


class _InlineBuffers:
    __slots__ = ("data", "raws")

    def __init__(self, data: bytes, raws: list[bytes]) -> None:
        self.data, self.raws = data, raws

    def __reduce__(self) -> tuple[Any, ...]:
        return (_load_inline, (self.data, self.raws))


def _load_inline(data: bytes, raws: list[bytes]) -> Any:
    return pickle.loads(data, buffers=[aligned_readonly(r) for r in raws])


def aligned_readonly(raw: bytes) -> memoryview:
    """A read-only copy of ``raw`` at a 64-byte aligned address (8 for under 64 bytes,
    as Ray aligns small arrays)."""
    import ctypes

    n = len(raw)
    align = 64 if n >= 64 else 8
    block = bytearray(n + align)
    address = ctypes.addressof(ctypes.c_char.from_buffer(block))
    start = -address % align
    view = memoryview(block)[start : start + n]
    view[:] = raw
    return view.toreadonly()


def dumps_args(args: list[Any], kwargs: dict[str, Any]) -> tuple[bytes, list[memoryview]]:
    """Pickle a task's arguments; small ones in-band, large buffers out of band."""
    plain = _PLAIN
    if all(type(a) in plain for a in args) and all(type(v) in plain for v in kwargs.values()):
        if sum(len(a) for a in args if type(a) is bytes) < INLINE_MAX:
            return pickle.dumps((args, kwargs), 5), []
    data, bufs = dumps_oob((args, kwargs))
    if bufs and len(data) + sum(b.nbytes for b in bufs) < INLINE_MAX:
        return cloud_dumps((args, kwargs)), []
    return data, bufs


def describe_unpicklable(value: Any) -> str:
    """Best effort: the type of the first part of ``value`` that fails to pickle."""
    candidates: list[Any] = []
    if isinstance(value, (list, tuple, set)):
        candidates = list(value)
    elif isinstance(value, dict):
        candidates = list(value.values())
    for item in candidates:
        try:
            cloud_dumps(item)
        except Exception:
            return describe_unpicklable(item)
    return type(value).__qualname__


class SegmentMissing(Exception):
    """A location's bytes are not where it says (spilled meanwhile, or lost)."""


#: Segments at least this large ask the head for room first (see ``store``).
RESERVE_MIN = 1 << 20


def encode(
    value: Any,
    segment_name: str,
    node_id: bytes,
    reserve: Callable[[int], None] | None = None,
    bases: list[tuple[bytes, P.Loc]] | None = None,
) -> P.Loc:
    """Serialize ``value``: inline if small, else into segment ``segment_name``.

    ``reserve(size)`` is called before a large segment is written; it blocks
    until the store has room, or raises ``ObjectStoreFullError``. ``bases``:
    objects in segments this process has mapped (a task's arguments); a value
    whose large buffers all lie in them becomes a ``LOC_VIEW`` of them, no copy.
    """
    data, buffers, held = _dumps_counted(value)
    total = len(data) + sum(b.nbytes for b in buffers)
    if total < INLINE_MAX:
        if held:  # arrays in a small value: read back read-only and aligned
            data = _dumps_inline(value)
        return (P.LOC_INLINE, data)
    if bases and buffers and len(data) < INLINE_MAX:
        view = _view_of(data, buffers, bases, node_id)
        if view is not None:
            return view
    return write_parts(data, buffers, segment_name, node_id, reserve)


def _address(buf: memoryview) -> int:
    import numpy as np

    return int(np.frombuffer(buf, np.uint8).ctypes.data)


def _view_of(data: bytes, buffers: list[memoryview], bases: list[tuple[bytes, P.Loc]],
             node_id: bytes) -> P.Loc | None:
    """A ``LOC_VIEW`` if every buffer lies inside a buffer of a base segment, else None."""
    spans: list[tuple[int, int, str, int, bytes]] = []
    for oid, loc in bases:
        if loc[0] != P.LOC_SHM or loc[3] != node_id:
            continue
        try:
            _, seg_bufs = shm.read_segment(loc[1])  # mapped already: the cached mapping
        except (OSError, shm.Untrusted):
            continue
        for i, b in enumerate(seg_bufs):
            if b.nbytes:
                start = _address(b)
                spans.append((start, start + b.nbytes, loc[1], i, oid))
    refs: list[tuple[str, int, int, int]] = []
    used: list[bytes] = []
    for buf in buffers:
        if buf.nbytes == 0 or not buf.contiguous:
            return None
        at = _address(buf)
        for start, end, name, i, oid in spans:
            if start <= at and at + buf.nbytes <= end:
                refs.append((name, i, at - start, buf.nbytes))
                if oid not in used:
                    used.append(oid)
                break
        else:
            return None
    return (P.LOC_VIEW, data, refs, used, node_id)


def _read_view(loc: P.Loc) -> Any:
    segments: dict[str, list[memoryview]] = {}
    bufs = []
    for name, i, start, nbytes in loc[2]:
        seg = segments.get(name)
        if seg is None:
            try:
                seg = segments[name] = shm.read_segment(name)[1]
            except FileNotFoundError:
                raise SegmentMissing(name) from None
        if i >= len(seg) or start + nbytes > seg[i].nbytes:
            raise shm.Untrusted(f"a view of segment {name} reaches past its buffer {i}")
        bufs.append(seg[i][start : start + nbytes])
    return pickle.loads(loc[1], buffers=bufs)


def write_parts(
    data: bytes,
    buffers: list[memoryview],
    segment_name: str,
    node_id: bytes,
    reserve: Callable[[int], None] | None = None,
) -> P.Loc:
    pool = None
    if reserve is not None:
        total = shm.segment_size(data, buffers)
        if total >= RESERVE_MIN:
            reserve(total)
            # reserved: the head counted on this writer reusing a pooled segment
            pool = shm.pool_prefix(segment_name[: segment_name.rfind("-") + 1], node_id)
    size = shm.write_segment(segment_name, data, buffers, pool)
    return (P.LOC_SHM, segment_name, size, node_id)


def decode(loc: P.Loc) -> Any:
    """The value at ``loc``; raises the stored exception for error locations."""
    __tracebackhide__ = HIDE  # noqa: F841  (read by IPython and pytest)
    kind = loc[0]
    if kind == P.LOC_INLINE:
        return pickle.loads(loc[1])
    if kind == P.LOC_SHM:
        try:
            data, bufs = shm.read_segment(loc[1])
        except FileNotFoundError:
            raise SegmentMissing(loc[1]) from None
        return pickle.loads(data, buffers=bufs)
    if kind == P.LOC_SPILLED:
        try:
            data, bufs = shm.read_spilled(loc[1], loc[2], loc[3])
        except FileNotFoundError:
            raise SegmentMissing(loc[1]) from None
        return pickle.loads(data, buffers=bufs)
    if kind == P.LOC_VIEW:
        return _read_view(loc)
    err = pickle.loads(loc[1])
    if isinstance(err, TaskError):
        err = err.as_instanceof_cause()
    raise err


def loc_size(loc: P.Loc) -> int:
    if loc[0] == P.LOC_SHM:
        return int(loc[2])
    if loc[0] == P.LOC_SPILLED:
        return int(loc[3])
    return len(loc[1])


def error_loc(exc: BaseException) -> P.Loc:
    """Encode an exception (a jray error, or anything else) as an error location."""
    try:
        return (P.LOC_ERROR, cloud_dumps(exc))
    except Exception:
        fallback = SerializationError(f"{type(exc).__qualname__}: {exc}")
        return (P.LOC_ERROR, pickle.dumps(fallback, 5))


_JRAY_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def format_remote_traceback(exc: BaseException) -> str:
    """The traceback of user code that raised in a worker, from the user's frame down.

    The frames of jray's worker loop above the user's function are left out
    (unless ``JRAY_FULL_TRACEBACK`` is set); if every frame is jray's, all stay.
    """
    tb = exc.__traceback__
    if not full_traceback():
        first = tb
        while first is not None and first.tb_frame.f_code.co_filename.startswith(_JRAY_DIR):
            first = first.tb_next
        if first is not None:
            tb = first
    return "".join(traceback.format_exception(type(exc), exc, tb))


def _round_trips(blob: bytes) -> bool:
    try:
        pickle.loads(blob)
        return True
    except Exception:
        return False


def task_error_loc(function_name: str, exc: BaseException) -> P.Loc:
    """Encode an exception raised by user code in a task, traceback included.

    The original exception travels as the cause when it survives a pickle
    round trip (a class whose ``__init__`` takes other arguments may pickle but
    not unpickle); otherwise the error keeps its class, message and traceback
    without it, and as a last resort only the text.
    """
    tb = format_remote_traceback(exc)
    # A task that lets a dependency's error through raises as that error's original class.
    cls = exc.cause_cls if isinstance(exc, TaskError) and exc.cause_cls is not None else type(exc)
    for err in (TaskError(function_name, tb, exc, cls), TaskError(function_name, tb, None, cls)):
        try:
            blob = cloud_dumps(err)
        except Exception:
            continue
        if _round_trips(blob):
            return (P.LOC_ERROR, blob)
    return (P.LOC_ERROR, pickle.dumps(TaskError(function_name, tb, None, None), 5))
