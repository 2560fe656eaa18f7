"""Failures: task exceptions, worker crashes and retries, cancellation, bad input.

Crash cases are one parametrized table; after each bad input the cluster must
still run tasks.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import jray
from jray.exceptions import (
    GetTimeoutError,
    JrayError,
    SerializationError,
    TaskCancelledError,
    TaskError,
    WorkerCrashedError,
)
from jray.testing import eventually

pytestmark = pytest.mark.integration


@jray.remote
def _ok(x: int = 1) -> int:
    return x


def _still_works() -> None:
    assert jray.get(_ok.remote(5), timeout=30) == 5


def _bump(path: str) -> int:
    """Count attempts in a file: the crash tests succeed on attempt N."""
    n = int(Path(path).read_text()) + 1 if os.path.exists(path) else 1
    Path(path).write_text(str(n))
    return n


class CustomError(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(f"code {code}")
        self.code = code


def test_exception_is_task_error_and_original_class(cluster: dict[str, object]) -> None:
    @jray.remote
    def fails(x: int) -> int:
        raise CustomError(x)

    with pytest.raises(CustomError) as info:
        jray.get(fails.remote(7), timeout=30)
    err = info.value
    assert isinstance(err, TaskError) and isinstance(err, JrayError)
    assert err.code == 7  # type: ignore[attr-defined]
    assert "fails" in str(err) and "CustomError" in err.traceback_str
    assert "raise CustomError(x)" in err.traceback_str
    with pytest.raises(ValueError):

        @jray.remote
        def builtin() -> None:
            raise ValueError("plain")

        jray.get(builtin.remote(), timeout=30)
    _still_works()


def test_error_propagates_to_dependents(cluster: dict[str, object]) -> None:
    @jray.remote
    def fails() -> int:
        raise KeyError("root cause")

    @jray.remote
    def plus_one(x: int) -> int:
        return x + 1

    ref = plus_one.remote(plus_one.remote(fails.remote()))
    with pytest.raises(KeyError) as info:
        jray.get(ref, timeout=30)
    assert "root cause" in str(info.value)
    _still_works()


def _exit(_: int) -> None:
    os._exit(3)


def _sigkill(_: int) -> None:
    os.kill(os.getpid(), 9)


def _segfault(_: int) -> None:
    import ctypes
    import faulthandler

    faulthandler.disable()  # keep the test output quiet
    ctypes.string_at(0)


CRASHES: dict[str, Callable[[int], None]] = {
    "os._exit": _exit, "SIGKILL": _sigkill, "segfault": _segfault,
}


@pytest.mark.timeout(90)
@pytest.mark.parametrize("how", sorted(CRASHES))
def test_worker_crash_is_retried_then_succeeds(cluster: dict[str, object], tmp_path: Path,
                                               how: str) -> None:
    crash = CRASHES[how]
    counter = str(tmp_path / "attempts")

    @jray.remote(max_retries=2)
    def flaky(path: str) -> int:
        n = _bump(path)
        if n < 3:
            crash(n)
        return n

    assert jray.get(flaky.remote(counter), timeout=60) == 3
    _still_works()


@pytest.mark.timeout(90)
@pytest.mark.parametrize("how", sorted(CRASHES))
def test_worker_crash_without_retries_left_raises(cluster: dict[str, object], tmp_path: Path,
                                                  how: str) -> None:
    crash = CRASHES[how]
    counter = str(tmp_path / "attempts")

    @jray.remote(max_retries=1)
    def always(path: str) -> int:
        crash(_bump(path))
        return 0

    with pytest.raises(WorkerCrashedError, match="max_retries=1") as info:
        jray.get(always.remote(counter), timeout=60)
    assert "always" in str(info.value)
    assert Path(counter).read_text() == "2"  # the first attempt and one retry
    _still_works()


def test_retry_exceptions(cluster: dict[str, object], tmp_path: Path) -> None:
    counter = str(tmp_path / "attempts")

    @jray.remote(max_retries=3, retry_exceptions=True)
    def flaky(path: str) -> int:
        n = _bump(path)
        if n < 3:
            raise RuntimeError(f"attempt {n}")
        return n

    assert jray.get(flaky.remote(counter), timeout=30) == 3

    other = str(tmp_path / "other")

    @jray.remote(max_retries=1, retry_exceptions=[OSError])
    def only_oserror(path: str) -> int:
        raise ValueError(f"attempt {_bump(path)}")

    with pytest.raises(ValueError, match="attempt 1"):
        jray.get(only_oserror.remote(other), timeout=30)

    third = str(tmp_path / "third")

    @jray.remote(max_retries=1, retry_exceptions=True)
    def never(path: str) -> int:
        raise RuntimeError(f"attempt {_bump(path)}")

    with pytest.raises(RuntimeError, match="attempt 2"):  # retried once, then raised
        jray.get(never.remote(third), timeout=30)


def test_exceptions_are_not_retried_by_default(cluster: dict[str, object],
                                               tmp_path: Path) -> None:
    counter = str(tmp_path / "attempts")

    @jray.remote(max_retries=3)
    def fails(path: str) -> int:
        raise RuntimeError(f"attempt {_bump(path)}")

    with pytest.raises(RuntimeError, match="attempt 1"):
        jray.get(fails.remote(counter), timeout=30)


@jray.remote(max_retries=0)
def _spin(started: str) -> str:
    Path(started).touch()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        time.sleep(0.01)
    return "not cancelled"


def _wait_file(path: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.01)


@pytest.mark.parametrize("force", [False, True])
def test_cancel_running_task(cluster: dict[str, object], tmp_path: Path, force: bool) -> None:
    started = str(tmp_path / "started")
    ref = _spin.remote(started)
    _wait_file(started)
    t0 = time.monotonic()
    jray.cancel(ref, force=force)
    with pytest.raises(TaskCancelledError):
        jray.get(ref, timeout=20)
    assert time.monotonic() - t0 < 10
    _still_works()


@pytest.mark.parametrize("force", [False, True])
def test_cancel_pending_task(cluster: dict[str, object], tmp_path: Path, force: bool) -> None:
    started = str(tmp_path / "started")
    blocker = _spin.remote(started)
    pending = _ok.remote(blocker)  # waits for its argument
    jray.cancel(pending, force=force)
    with pytest.raises(TaskCancelledError):
        jray.get(pending, timeout=20)
    jray.cancel(blocker, force=True)
    with pytest.raises(TaskCancelledError):
        jray.get(blocker, timeout=20)
    _still_works()


@jray.remote(max_retries=0)
def _spin_until(started: str, stop: str) -> str:
    Path(started).touch()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not os.path.exists(stop):
        time.sleep(0.01)
    return "stopped"


@jray.remote(max_retries=0)
def _parent_of_spinner(started: str, stop: str) -> str:
    return str(jray.get(_spin_until.remote(started, stop), timeout=60))


@pytest.mark.parametrize("recursive", [True, False])
def test_cancel_reaches_child_tasks_when_recursive(
    cluster: dict[str, object], tmp_path: Path, recursive: bool
) -> None:
    started, stop = str(tmp_path / "child-started"), str(tmp_path / "stop")
    before = {t["task_id"] for t in jray.state.list_tasks()}
    parent = _parent_of_spinner.remote(started, stop)
    _wait_file(started)  # the child runs; the parent waits for it in get

    def child_state() -> str:
        rows = [t for t in jray.state.list_tasks()
                if t["name"].endswith("_spin_until") and t["task_id"] not in before]
        assert len(rows) == 1, rows
        return str(rows[0]["state"])

    jray.cancel(parent, recursive=recursive)
    with pytest.raises(TaskCancelledError):
        jray.get(parent, timeout=20)
    if recursive:
        assert eventually(lambda: child_state() == "CANCELLED", timeout=10), (
            child_state(), [t for t in jray.state.list_tasks() if t["task_id"] not in before])
    else:
        assert child_state() == "RUNNING"
        Path(stop).touch()
        assert eventually(lambda: child_state() == "FINISHED", timeout=10)
    _still_works()


def test_cancel_of_a_finished_task_keeps_its_value(cluster: dict[str, object]) -> None:
    ref = _ok.remote(3)
    assert jray.get(ref, timeout=30) == 3
    jray.cancel(ref)
    assert jray.get(ref, timeout=30) == 3
    with pytest.raises(TypeError):
        jray.cancel("not a ref")  # type: ignore[arg-type]


def test_get_timeout_then_value(cluster: dict[str, object], tmp_path: Path) -> None:
    started = str(tmp_path / "started")
    ref = _spin.remote(started)
    with pytest.raises(GetTimeoutError, match="timed out"):
        jray.get(ref, timeout=0.2)
    jray.cancel(ref)
    with pytest.raises(TaskCancelledError):
        jray.get(ref, timeout=20)


# --- bad input ----------------------------------------------------------------------

def test_unpicklable_argument_names_function_and_type(cluster: dict[str, object]) -> None:
    @jray.remote
    def takes_lock(lock: Any) -> None:
        return None

    with pytest.raises(SerializationError) as info:
        takes_lock.remote(threading.Lock())
    text = str(info.value)
    assert "takes_lock" in text and "lock" in text.lower()
    assert isinstance(info.value, TypeError)
    with pytest.raises(SerializationError, match="takes_lock"):
        takes_lock.remote([1, {"x": threading.Lock()}])
    _still_works()


def test_unpicklable_return_value(cluster: dict[str, object]) -> None:
    @jray.remote
    def returns_lock() -> Any:
        return threading.Lock()

    with pytest.raises(SerializationError) as info:
        jray.get(returns_lock.remote(), timeout=30)
    text = str(info.value)
    assert "returns_lock" in text and "lock" in text.lower()
    _still_works()


def test_unpicklable_function_names_it(cluster: dict[str, object]) -> None:
    lock = threading.Lock()

    @jray.remote
    def uses_lock() -> bool:
        return lock.locked()

    with pytest.raises(SerializationError, match="uses_lock"):
        uses_lock.remote()
    _still_works()


@pytest.mark.parametrize("options, message", [
    ({"num_cpus": -1}, "num_cpus"),
    ({"num_gpus": "one"}, "num_gpus"),
    ({"num_returns": 0}, "num_returns"),
    ({"max_retries": -2}, "max_retries"),
    ({"bogus_option": 1}, "bogus_option"),
    ({"resources": {"CPU": 1}}, "num_cpus"),
    ({"resources": {"tpu": -1}}, "tpu"),
    ({"retry_exceptions": "yes"}, "retry_exceptions"),
])
def test_bad_options_are_clear_errors(cluster: dict[str, object], options: dict[str, Any],
                                      message: str) -> None:
    def f() -> None:
        return None

    with pytest.raises((ValueError, TypeError), match=message):
        jray.remote(**options)(f)
    with pytest.raises((ValueError, TypeError), match=message):
        jray.remote(f).options(**options)
    with pytest.raises(TypeError, match="keyword"):
        jray.remote(f, 1)
    _still_works()


def test_function_not_importable_on_worker_names_module(cluster: dict[str, object],
                                                        tmp_path: Path) -> None:
    modname = f"jray_only_in_driver_{os.getpid()}"
    (tmp_path / f"{modname}.py").write_text("def double(x):\n    return 2 * x\n")
    sys.path.insert(0, str(tmp_path))
    try:
        mod = __import__(modname)
        double = jray.remote(mod.double)  # pickled by reference: the worker must import it
        with pytest.raises(SerializationError) as info:
            jray.get(double.remote(2), timeout=30)
        assert modname in str(info.value) and "double" in str(info.value)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop(modname, None)
    _still_works()


def test_argument_not_importable_on_worker_names_module(cluster: dict[str, object],
                                                        tmp_path: Path) -> None:
    modname = f"jray_arg_only_in_driver_{os.getpid()}"
    (tmp_path / f"{modname}.py").write_text("class Point:\n    x = 1\n")
    sys.path.insert(0, str(tmp_path))
    try:
        mod = __import__(modname)

        @jray.remote
        def use(p: Any) -> int:
            return int(p.x)

        with pytest.raises(SerializationError) as info:
            jray.get(use.remote(mod.Point()), timeout=30)
        assert modname in str(info.value) and "use" in str(info.value)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop(modname, None)
    _still_works()


def test_error_raised_through_a_nested_get(cluster: dict[str, object]) -> None:
    @jray.remote
    def child() -> int:
        raise CustomError(3)

    @jray.remote
    def parent() -> int:
        return int(jray.get(child.remote(), timeout=30))

    with pytest.raises(CustomError) as info:
        jray.get(parent.remote(), timeout=30)
    assert isinstance(info.value, TaskError)
    assert info.value.code == 3  # type: ignore[attr-defined]
    assert "child" in info.value.traceback_str
