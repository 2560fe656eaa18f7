"""serialization without processes: code keeps its file name and source lines."""

from __future__ import annotations

import linecache
import os
import pickle
import types
from collections.abc import Iterator

import cloudpickle
import pytest

from jray._private import protocol as P
from jray._private import serialization as S

SOURCE = '''\
def outer(n):
    scale = 3

    def inner(k):
        return k * scale  # inner's line

    return inner(n) + undefined_name  # outer's line
'''
FILENAME = "/nonexistent/notebook/cell-17.py"


def _line_of(marker: str) -> int:
    return next(i for i, line in enumerate(SOURCE.splitlines(), 1) if marker in line)


@pytest.fixture
def cell_function() -> Iterator[types.FunctionType]:
    """A function whose source exists only in this process's linecache, as IPython does."""
    linecache.cache[FILENAME] = (len(SOURCE), None, SOURCE.splitlines(True), FILENAME)
    namespace: dict[str, object] = {"__name__": "__main__"}
    exec(compile(SOURCE, FILENAME, "exec"), namespace)
    try:
        yield namespace["outer"]  # type: ignore[misc]
    finally:
        linecache.cache.pop(FILENAME, None)


def test_code_keeps_its_file_name_through_the_pickle(cell_function: types.FunctionType) -> None:
    fn = pickle.loads(S.dumps_code(cell_function, "remote function outer"))
    assert fn.__code__.co_filename == FILENAME
    nested = [c for c in fn.__code__.co_consts if isinstance(c, types.CodeType)]
    assert [c.co_filename for c in nested] == [FILENAME]
    assert fn.__code__.co_firstlineno == 1


def test_loading_registers_the_source_where_the_file_does_not_exist(
    cell_function: types.FunctionType,
) -> None:
    blob = S.dumps_code(cell_function, "remote function outer")
    linecache.cache.pop(FILENAME)  # as in a worker that never saw the cell
    assert not os.path.exists(FILENAME) and linecache.getline(FILENAME, 1) == ""
    fn = pickle.loads(blob)
    assert linecache.getline(FILENAME, _line_of("outer's line")).strip().startswith(
        "return inner(n)"
    )
    with pytest.raises(NameError) as info:
        fn(2)
    text = S.format_remote_traceback(info.value)
    assert f'File "{FILENAME}", line {_line_of("outer" + chr(39) + "s line")}, in outer' in text
    assert "return inner(n) + undefined_name" in text


def test_plain_cloudpickle_loses_the_file_name_which_is_why_codepickler_exists(
    cell_function: types.FunctionType,
) -> None:
    """Documents the pickler behaviour jray must not depend on (either answer is fine)."""
    name = pickle.loads(cloudpickle.dumps(cell_function)).__code__.co_filename
    assert name in (FILENAME, "<dynamic-code>")


def test_shipped_lines_overlay_what_the_worker_knows() -> None:
    name = "/nonexistent/overlay.py"
    try:
        S.register_source(name, 3, ("c = 3\n", "d = 4\n"))
        S.register_source(name, 1, ("a = 1\n",))
        assert linecache.getlines(name) == ["a = 1\n", "\n", "c = 3\n", "d = 4\n"]
        linecache.checkcache(name)  # never expires: the shipped code is what runs
        assert linecache.getline(name, 4) == "d = 4\n"
    finally:
        linecache.cache.pop(name, None)


def test_traceback_starts_at_the_users_frame(
    cell_function: types.FunctionType, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner_file = os.path.join(os.path.dirname(S.__file__), "fake_runner.py")
    namespace: dict[str, object] = {}
    runner = "def run(f, x):\n    try:\n        f(x)\n    except Exception as e:\n" \
        "        return e\n"
    exec(compile(runner, runner_file, "exec"), namespace)  # a worker loop, as jray's
    exc = namespace["run"](cell_function, 1)  # type: ignore[operator]
    assert isinstance(exc, NameError)
    monkeypatch.delenv("JRAY_FULL_TRACEBACK", raising=False)
    short = S.format_remote_traceback(exc)
    assert runner_file not in short and FILENAME in short
    monkeypatch.setenv("JRAY_FULL_TRACEBACK", "1")
    full = S.format_remote_traceback(exc)
    assert runner_file in full and FILENAME in full


class TwoArgError(Exception):
    def __init__(self, code: int, msg: str) -> None:
        super().__init__(f"{code}: {msg}")
        self.code = code


def test_error_that_does_not_unpickle_keeps_class_message_and_traceback() -> None:
    try:
        raise TwoArgError(4, "bad sector")
    except TwoArgError as exc:
        loc = S.task_error_loc("reader", exc)
    with pytest.raises(TwoArgError) as info:
        S.decode(loc)
    err = info.value
    assert isinstance(err, S.TaskError) and err.cause is None
    assert "4: bad sector" in str(err) and 'raise TwoArgError(4, "bad sector")' in str(err)


def test_small_arrays_come_back_read_only_and_aligned() -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    values = [np.full((2, 2), 1.0), rng.normal(size=(10, 20, 30)),
              [rng.normal(size=i) for i in range(40)],
              [rng.normal(size=(5, 5))[1:3, 1:3], np.asfortranarray(rng.normal(size=(4, 3)))]]
    for value in values:
        loc = S.encode(value, "unused", b"node")
        assert loc[0] == P.LOC_INLINE  # small enough to travel in the message
        back = S.decode(loc)
        arrays = back if isinstance(back, list) else [back]
        originals = value if isinstance(value, list) else [value]
        for a, b in zip(originals, arrays):
            assert np.array_equal(a, b)
            # a contiguous array's buffer travels as it is, read-only as from the store;
            # NumPy pickles a strided view as a copy of its elements (writable)
            contiguous = a.flags.c_contiguous or a.flags.f_contiguous
            assert b.flags.writeable is not contiguous
            assert b.ctypes.data % (64 if b.nbytes >= 64 else 8) == 0
    with pytest.raises(ValueError, match="read-only"):
        S.decode(S.encode(np.zeros(3), "unused", b"node"))[0] = 1.0
    assert S.decode(S.encode(bytearray(b"ab"), "unused", b"node")) == bytearray(b"ab")


class _Locked:
    def __init__(self, x: int) -> None:
        import threading

        self.x = x
        self.lock = threading.Lock()  # cannot be pickled


def test_register_serializer_and_deregister() -> None:
    import jray.util

    jray.util.register_serializer(_Locked, serializer=lambda obj: obj.x,
                                  deserializer=lambda x: _Locked(x * 10))
    try:
        loc = S.encode({"v": _Locked(4)}, "unused", b"node")
    finally:
        jray.util.deregister_serializer(_Locked)
    assert S.decode(loc)["v"].x == 40  # the deserializer travelled with the value
    with pytest.raises(TypeError, match="lock"):
        S.encode(_Locked(1), "unused", b"node")
    jray.util.deregister_serializer(_Locked)  # a second time: nothing happens
    with pytest.raises(TypeError, match="callable"):
        jray.util.register_serializer(_Locked, serializer=1, deserializer=lambda x: x)  # type: ignore[arg-type]
