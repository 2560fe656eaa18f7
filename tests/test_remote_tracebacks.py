"""Remote tracebacks name the real file, line and source text of the user's code.

Whatever the pickler does to code objects, and also where the file exists only
in the driver (a notebook cell; here a string run with ``exec`` under a made-up
file name). jray's own worker frames are left out.
"""

from __future__ import annotations

import linecache
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import cloudpickle
import psutil
import pytest
import tb_helpers

import jray
from jray.exceptions import ActorDiedError, TaskError

pytestmark = pytest.mark.integration
T = 30
HELPERS = tb_helpers.__file__


def _line(path_or_source: str, marker: str) -> int:
    text = path_or_source
    if os.path.exists(path_or_source):
        with open(path_or_source) as fh:
            text = fh.read()
    return next(i for i, line in enumerate(text.splitlines(), 1) if marker in line)


def _assert_frame(tb: str, filename: str, line: int, source: str) -> None:
    assert f'File "{filename}", line {line}' in tb, tb
    assert source in tb, tb
    assert "<dynamic-code>" not in tb and "jray/_private/worker.py" not in tb, tb


CELL = '''\
import math

def spread(values):
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))

class Model:
    def __init__(self, size):
        if size <= 0:
            raise ValueError("size must be positive")
        self.size = size

    def predict(self, x):
        return [x[i] * 2 for i in range(self.size)]
'''
CELL_FILE = "/nonexistent/ipykernel_0/cell-3.py"


@pytest.fixture
def cell() -> Iterator[dict[str, Any]]:
    """Names defined by a notebook-like cell whose source only the driver's linecache has."""
    linecache.cache[CELL_FILE] = (len(CELL), None, CELL.splitlines(True), CELL_FILE)
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec(compile(CELL, CELL_FILE, "exec"), namespace)
    try:
        yield namespace
    finally:
        linecache.cache.pop(CELL_FILE, None)


def test_function_of_an_importable_module(cluster: dict[str, object]) -> None:
    with pytest.raises(ZeroDivisionError) as info:
        jray.get(jray.remote(tb_helpers.divide).remote(1, 0), timeout=T)
    _assert_frame(info.value.traceback_str, HELPERS, _line(HELPERS, "the raising line"),
                  "ratio = a / b")  # type: ignore[attr-defined]


def test_module_function_pickled_by_value(cluster: dict[str, object]) -> None:
    cloudpickle.register_pickle_by_value(tb_helpers)
    try:
        remote = jray.remote(tb_helpers.divide)
        with pytest.raises(ZeroDivisionError) as info:
            jray.get(remote.remote(1, 0), timeout=T)
    finally:
        cloudpickle.unregister_pickle_by_value(tb_helpers)
    _assert_frame(info.value.traceback_str, HELPERS, _line(HELPERS, "the raising line"),
                  "ratio = a / b")  # type: ignore[attr-defined]


def test_function_whose_source_exists_only_in_the_driver(
    cluster: dict[str, object], cell: dict[str, Any]
) -> None:
    assert not os.path.exists(CELL_FILE)
    with pytest.raises(ZeroDivisionError) as info:
        jray.get(jray.remote(cell["spread"]).remote([1.0]), timeout=T)
    err = info.value
    assert isinstance(err, TaskError)
    _assert_frame(err.traceback_str, CELL_FILE, _line(CELL, "math.sqrt"), "return math.sqrt(")
    assert err.traceback_str.lstrip().startswith("Traceback (most recent call last):\n  File "
                                                 f'"{CELL_FILE}"')


def test_actor_class_whose_source_exists_only_in_the_driver(
    cluster: dict[str, object], cell: dict[str, Any]
) -> None:
    Model = jray.remote(cell["Model"])
    bad = Model.remote(0)
    with pytest.raises(ActorDiedError) as died:
        jray.get(bad.predict.remote([1]), timeout=T)
    _assert_frame(died.value.traceback_str, CELL_FILE, _line(CELL, "size must be positive"),
                  'raise ValueError("size must be positive")')
    good = Model.remote(3)
    with pytest.raises(IndexError) as info:
        jray.get(good.predict.remote([1, 2]), timeout=T)
    _assert_frame(info.value.traceback_str, CELL_FILE,  # type: ignore[attr-defined]
                  _line(CELL, "x[i] * 2"), "return [x[i] * 2 for i in range(self.size)]")
    for handle in (bad, good):
        jray.kill(handle)


def test_actor_class_of_an_importable_module(cluster: dict[str, object]) -> None:
    acct = jray.remote(tb_helpers.Account).remote(5)
    with pytest.raises(RuntimeError) as info:
        jray.get(acct.withdraw.remote(10), timeout=T)
    _assert_frame(info.value.traceback_str, HELPERS,  # type: ignore[attr-defined]
                  _line(HELPERS, "the method's raise"), 'raise RuntimeError("insufficient funds")')
    assert jray.get(acct.withdraw.remote(2), timeout=T) == 3
    jray.kill(acct)


@jray.remote
def _exits(code: int) -> int:
    sys.exit(code)


@jray.remote
def _pid() -> int:
    return os.getpid()


def test_system_exit_keeps_its_class_and_the_worker_survives(cluster: dict[str, object]) -> None:
    pids = set(jray.get([_pid.remote() for _ in range(4)], timeout=T))
    with pytest.raises(SystemExit) as info:
        jray.get(_exits.remote(3), timeout=T)
    err = info.value
    assert isinstance(err, TaskError) and err.code == 3
    assert "sys.exit(code)" in err.traceback_str
    assert all(psutil.pid_exists(p) for p in pids)
    assert jray.get(_pid.remote(), timeout=T) in pids


class TwoArgError(Exception):
    def __init__(self, code: int, msg: str) -> None:
        super().__init__(f"{code}: {msg}")
        self.code = code


@jray.remote
def _raises_two_arg() -> int:
    raise TwoArgError(7, "disk on fire")


@jray.remote
def _plus_one(x: int) -> int:
    return x + 1


def test_error_whose_init_takes_other_arguments(cluster: dict[str, object]) -> None:
    root = _raises_two_arg.remote()
    for ref in (root, _plus_one.remote(root)):
        with pytest.raises(TwoArgError) as info:
            jray.get(ref, timeout=T)
        err = info.value
        assert isinstance(err, TaskError)
        assert "7: disk on fire" in str(err)
        assert 'raise TwoArgError(7, "disk on fire")' in err.traceback_str


FULL_SCRIPT = """
import jray, tb_helpers
jray.init(num_cpus=1)
try:
    jray.get(jray.remote(tb_helpers.divide).remote(1, 0), timeout=30)
except ZeroDivisionError as exc:
    print(exc.traceback_str)
finally:
    jray.shutdown()
"""


@pytest.mark.parametrize("full", [False, True])
def test_full_traceback_switch_is_read_in_the_worker(full: bool) -> None:
    """JRAY_FULL_TRACEBACK=1 in the driver's environment shows jray's worker frames too."""
    env = {**os.environ, "PYTHONPATH": os.path.dirname(HELPERS)}
    env.pop("JRAY_FULL_TRACEBACK", None)
    if full:
        env["JRAY_FULL_TRACEBACK"] = "1"
    out = subprocess.run([sys.executable, "-c", FULL_SCRIPT], env=env, capture_output=True,
                         text=True, timeout=60, check=True).stdout
    assert "ratio = a / b" in out
    assert ("jray/_private/worker.py" in out) is full
