"""Remote functions end to end: options, arguments, nesting, closures, multiple returns."""

from __future__ import annotations

import os
import time
from typing import Any

import pytest

import jray
from jray import ObjectRef

pytestmark = pytest.mark.integration


def test_bare_and_configured_decorators(cluster: dict[str, object]) -> None:
    @jray.remote
    def bare(x: int) -> int:
        return x * 2

    @jray.remote(num_cpus=1, max_retries=0, name="configured")
    def configured(x: int) -> int:
        return x + 100

    assert isinstance(bare, jray.RemoteFunction)
    assert jray.get([bare.remote(3), configured.remote(1)], timeout=30) == [6, 101]
    names = {row["name"] for row in jray.state.list_tasks()}
    assert "configured" in names and "bare" in names


def test_remote_returns_a_ref_at_once(cluster: dict[str, object]) -> None:
    @jray.remote
    def slow() -> str:
        time.sleep(1.0)
        return "done"

    t0 = time.monotonic()
    ref = slow.remote()
    assert time.monotonic() - t0 < 0.5
    assert isinstance(ref, ObjectRef)
    assert jray.get(ref, timeout=30) == "done"


def test_direct_call_raises_type_error_mentioning_remote(cluster: dict[str, object]) -> None:
    @jray.remote
    def f() -> int:
        return 1

    with pytest.raises(TypeError, match=r"\.remote"):
        f()


def test_options_override_and_keep_the_original(cluster: dict[str, object]) -> None:
    @jray.remote(num_returns=1)
    def pair() -> tuple[int, int]:
        return 1, 2

    a, b = pair.options(num_returns=2).remote()
    assert jray.get([a, b], timeout=30) == [1, 2]
    assert jray.get(pair.remote(), timeout=30) == (1, 2)
    renamed = pair.options(name="renamed")
    jray.get(renamed.remote(), timeout=30)
    assert any(row["name"] == "renamed" for row in jray.state.list_tasks())


def test_top_level_refs_resolved_nested_refs_passed_as_refs(cluster: dict[str, object]) -> None:
    @jray.remote
    def inspect(x: Any, *, kw: Any, nested: Any) -> dict[str, Any]:
        return {
            "x": x,
            "kw": kw,
            "list_item_is_ref": isinstance(nested[0], ObjectRef),
            "dict_item_is_ref": isinstance(nested[1]["r"], ObjectRef),
            "nested_values": jray.get([nested[0], nested[1]["r"]], timeout=30),
        }

    a, b, c, d = (jray.put(v) for v in ("a", "b", "c", "d"))
    out = jray.get(inspect.remote(a, kw=b, nested=[c, {"r": d}]), timeout=30)
    assert out == {"x": "a", "kw": "b", "list_item_is_ref": True, "dict_item_is_ref": True,
                   "nested_values": ["c", "d"]}


def test_task_outputs_chain_as_inputs(cluster: dict[str, object]) -> None:
    @jray.remote
    def add(x: int, y: int) -> int:
        return x + y

    refs = [jray.put(i) for i in range(8)]
    while len(refs) > 1:
        refs = [add.remote(refs[i], refs[i + 1]) for i in range(0, len(refs), 2)]
    assert jray.get(refs[0], timeout=30) == sum(range(8))


@pytest.mark.timeout(60)
def test_recursive_fib_does_not_deadlock(cluster: dict[str, object]) -> None:
    @jray.remote
    def fib(n: int) -> int:
        if n < 2:
            return n
        return int(sum(jray.get([fib.remote(n - 1), fib.remote(n - 2)], timeout=50)))

    assert jray.get(fib.remote(5), timeout=50) == 5


@pytest.mark.timeout(60)
def test_more_waiting_parents_than_cpus(cluster: dict[str, object]) -> None:
    @jray.remote
    def child(i: int) -> int:
        return i * i

    @jray.remote
    def parent(i: int) -> tuple[int, int]:
        return os.getpid(), int(sum(jray.get([child.remote(i), child.remote(i + 1)], timeout=50)))

    results = jray.get([parent.remote(i) for i in range(4)], timeout=50)
    assert [r[1] for r in results] == [i * i + (i + 1) ** 2 for i in range(4)]


def test_lambdas_and_closures(cluster: dict[str, object]) -> None:
    offset = 7
    table = {"k": [1, 2, 3]}
    square = jray.remote(lambda x: x * x)

    @jray.remote
    def closure(x: int) -> int:
        return x + offset + sum(table["k"])

    assert jray.get([square.remote(4), closure.remote(1)], timeout=30) == [16, 14]


def test_num_returns_two(cluster: dict[str, object]) -> None:
    @jray.remote(num_returns=2)
    def divmod_(a: int, b: int) -> tuple[int, int]:
        return divmod(a, b)

    q, r = divmod_.remote(17, 5)
    assert isinstance(q, ObjectRef) and isinstance(r, ObjectRef) and q != r
    assert jray.get([q, r], timeout=30) == [3, 2]


def test_wrong_number_of_returns_is_a_clear_error(cluster: dict[str, object]) -> None:
    @jray.remote(num_returns=2)
    def one() -> int:
        return 1

    a, _ = one.remote()
    with pytest.raises(jray.exceptions.JrayError, match="num_returns=2"):
        jray.get(a, timeout=30)


def test_remote_function_passed_to_a_task(cluster: dict[str, object]) -> None:
    @jray.remote
    def leaf(x: int) -> int:
        return x + 1

    @jray.remote
    def caller(fn: Any, x: int) -> int:
        return int(jray.get(fn.remote(x), timeout=30))

    assert jray.get(caller.remote(leaf, 1), timeout=30) == 2


@pytest.mark.timeout(60)
def test_short_tasks_do_not_queue_behind_a_long_task(cluster: dict[str, object],
                                                      tmp_path: Any) -> None:
    flag = str(tmp_path / "release")
    started = str(tmp_path / "started")

    @jray.remote
    def long_task(started: str, flag: str) -> str:
        open(started, "w").close()
        deadline = time.monotonic() + 40
        while not os.path.exists(flag) and time.monotonic() < deadline:
            time.sleep(0.01)
        return "long"

    @jray.remote
    def short(i: int) -> int:
        return i

    slow = long_task.remote(started, flag)
    deadline = time.monotonic() + 20
    while not os.path.exists(started):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    for _ in range(5):  # the head learns that `short` is short: it may pipeline it
        jray.get([short.remote(i) for i in range(20)], timeout=20)
    try:
        assert jray.get([short.remote(i) for i in range(300)], timeout=15) == list(range(300))
    finally:
        open(flag, "w").close()
    assert jray.get(slow, timeout=30) == "long"



@jray.remote
def _prints_then_waits(stop: str) -> str:
    print("one")
    print("two", flush=True)  # goes now, not when the task ends
    deadline = time.monotonic() + 20
    while not os.path.exists(stop) and time.monotonic() < deadline:
        time.sleep(0.01)
    return "done"


def test_print_flush_in_a_task_reaches_the_driver_while_it_runs(
        cluster: dict[str, object], tmp_path: Any) -> None:
    from jray._private import task_output

    got: list[str] = []
    task_output.set_output_handler(lambda msg: got.append(msg[5]))
    stop = str(tmp_path / "stop")
    try:
        ref = _prints_then_waits.remote(stop)
        deadline = time.monotonic() + 10
        while "two" not in "".join(got) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert "two" in "".join(got), got  # the task is still running: it waits for stop
        open(stop, "w").close()
        assert jray.get(ref, timeout=30) == "done"
    finally:
        task_output.set_output_handler(None)


@jray.remote
def _grandchild(i: int) -> int:
    print(f"grandchild {i}")
    return i


@jray.remote
def _child(i: int) -> int:
    print(f"child {i} before")
    jray.get(_grandchild.remote(i), timeout=30)
    print(f"child {i} after")
    return i


@jray.remote
def _parent(rounds: int) -> int:
    for i in range(rounds):
        print(f"parent {i} before")
        jray.get(_child.remote(i), timeout=30)
        print(f"parent {i} after")
    return rounds


def test_nested_output_reaches_the_driver_in_the_order_it_was_printed(
        cluster: dict[str, object]) -> None:
    # each task's output passes through the worker of the task that started it, on the
    # socket that worker's own output takes: lines arrive in the order they were printed
    from jray._private import task_output

    got: list[str] = []
    task_output.set_output_handler(lambda msg: got.extend(msg[5].splitlines()))
    try:
        for _ in range(3):
            got.clear()
            assert jray.get(_parent.remote(4), timeout=60) == 4
            want = [line for i in range(4) for line in (
                f"parent {i} before", f"child {i} before", f"grandchild {i}",
                f"child {i} after", f"parent {i} after")]
            deadline = time.monotonic() + 10
            while len(got) < len(want) and time.monotonic() < deadline:
                time.sleep(0.01)
            assert got == want
    finally:
        task_output.set_output_handler(None)
