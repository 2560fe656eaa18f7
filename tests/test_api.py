"""Objects and the state API: put/get/wait, zero-copy arrays, refs, list_tasks/objects."""

from __future__ import annotations

import os
import pickle
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import jray
from jray import ObjectRef
from jray.exceptions import GetTimeoutError

pytestmark = pytest.mark.integration


@jray.remote
def _wait_for(path: str, value: Any = None) -> Any:
    """Returns ``value`` once ``path`` exists (the test decides when; bounded)."""
    deadline = time.monotonic() + 30
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.01)
    return value


def test_put_get_roundtrip(cluster: dict[str, object]) -> None:
    values: list[Any] = [0, "text", b"bytes", None, {"a": [1, 2]}, (1, 2.5), list(range(1000))]
    refs = [jray.put(v) for v in values]
    assert jray.get(refs, timeout=30) == values
    assert jray.get(tuple(refs[:2]), timeout=30) == values[:2]
    assert jray.get(refs[1], timeout=30) == "text"
    assert jray.get([], timeout=30) == []


def test_put_of_a_ref_is_refused(cluster: dict[str, object]) -> None:
    with pytest.raises(TypeError, match="ObjectRef"):
        jray.put(jray.put(1))


def test_get_of_a_non_ref_raises_type_error(cluster: dict[str, object]) -> None:
    with pytest.raises(TypeError, match="ObjectRef"):
        jray.get(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="item 1"):
        jray.get([jray.put(1), "nope"])  # type: ignore[list-item]


def test_get_timeout_raises_get_timeout_error(cluster: dict[str, object], tmp_path: Path) -> None:
    flag = str(tmp_path / "go")
    ref = _wait_for.remote(flag, 5)
    t0 = time.monotonic()
    with pytest.raises(GetTimeoutError) as info:
        jray.get(ref, timeout=0.3)
    assert 0.25 < time.monotonic() - t0 < 5
    assert isinstance(info.value, TimeoutError)
    Path(flag).touch()
    assert jray.get(ref, timeout=30) == 5


@jray.remote
def _fail_now() -> None:
    raise KeyError("failed at once")


def test_get_of_a_list_raises_the_first_error_without_waiting(
        cluster: dict[str, object], tmp_path: Path) -> None:
    slow = _wait_for.remote(str(tmp_path / "go"), 1)  # runs until the test says so
    failing = _fail_now.remote()
    t0 = time.monotonic()
    with pytest.raises(KeyError, match="failed at once"):
        jray.get([slow, failing], timeout=30)  # (not after slow: it would wait 30 s)
    assert time.monotonic() - t0 < 20
    (tmp_path / "go").touch()
    assert jray.get([slow, jray.put(2)], timeout=30) == [1, 2]
    pending = _wait_for.remote(str(tmp_path / "never"), 1)
    with pytest.raises(KeyError):  # already failed: raised at once, before any wait
        jray.get([pending, failing], timeout=10)
    jray.cancel(pending)


def test_wait_preserves_order_and_honours_num_returns(cluster: dict[str, object],
                                                      tmp_path: Path) -> None:
    flag = str(tmp_path / "go")
    slow = _wait_for.remote(flag, "slow")
    fast = [jray.put(i) for i in range(3)]
    refs = [fast[0], slow, fast[1], fast[2]]
    ready, not_ready = jray.wait(refs, num_returns=2, timeout=10)
    assert ready == [fast[0], fast[1]] and not_ready == [slow, fast[2]]
    ready, not_ready = jray.wait(refs, num_returns=4, timeout=0.2)
    assert ready == [fast[0], fast[1], fast[2]] and not_ready == [slow]
    Path(flag).touch()
    ready, not_ready = jray.wait(refs, num_returns=4, timeout=30)
    assert ready == refs and not_ready == []


def test_wait_default_returns_one(cluster: dict[str, object]) -> None:
    refs = [jray.put(i) for i in range(3)]
    ready, not_ready = jray.wait(refs)
    assert ready == refs[:1] and not_ready == refs[1:]


@pytest.mark.parametrize("kwargs, exc", [
    ({"num_returns": 0}, ValueError),
    ({"num_returns": 5}, ValueError),
])
def test_wait_rejects_bad_arguments(cluster: dict[str, object], kwargs: dict[str, Any],
                                    exc: type[Exception]) -> None:
    refs = [jray.put(i) for i in range(2)]
    with pytest.raises(exc):
        jray.wait(refs, **kwargs)
    with pytest.raises(ValueError, match="duplicates"):
        jray.wait([refs[0], refs[0]])
    with pytest.raises(TypeError):
        jray.wait(refs[0])  # type: ignore[arg-type]


def test_large_array_comes_back_read_only_zero_copy(cluster: dict[str, object]) -> None:
    arr = np.random.default_rng(0).random(4_000_000)  # 32 MB
    ref = jray.put(arr)
    out = jray.get(ref, timeout=30)
    np.testing.assert_array_equal(out, arr)
    assert not out.flags.writeable
    assert not out.flags.owndata  # a view of the shared-memory mapping, not a copy
    with pytest.raises(ValueError):
        out[0] = 1.0
    rows = {r["object_id"]: r for r in jray.state.list_objects()}
    assert rows[ref.hex()]["where"] == "shared_memory"
    assert rows[ref.hex()]["size"] >= arr.nbytes

    @jray.remote
    def total(a: np.ndarray) -> tuple[float, bool]:
        return float(a.sum()), bool(a.flags.writeable)

    s, writeable = jray.get(total.remote(ref), timeout=30)
    assert s == pytest.approx(arr.sum()) and not writeable


def test_large_task_result_is_zero_copy(cluster: dict[str, object]) -> None:
    @jray.remote
    def make() -> np.ndarray:
        return np.ones((1000, 1000))

    out = jray.get(make.remote(), timeout=30)
    assert out.shape == (1000, 1000) and not out.flags.writeable and not out.flags.owndata


def test_object_ref_hashable_printable_picklable(cluster: dict[str, object]) -> None:
    ref = jray.put("v")
    same = pickle.loads(pickle.dumps(ref))
    assert same == ref and hash(same) == hash(ref) and len({ref, same}) == 1
    assert {ref: 1}[same] == 1
    assert ref.hex() in repr(ref) and ref.hex() in str(ref)

    @jray.remote
    def unwrap(box: list[ObjectRef], blob: bytes) -> tuple[Any, Any]:
        return jray.get(box[0], timeout=30), jray.get(pickle.loads(blob), timeout=30)

    assert jray.get(unwrap.remote([ref], pickle.dumps(ref)), timeout=30) == ("v", "v")


def test_refs_inside_put_values(cluster: dict[str, object]) -> None:
    inner = jray.put(np.arange(10))
    outer = jray.put({"inner": inner})

    @jray.remote
    def read(d: dict[str, ObjectRef]) -> int:
        return int(jray.get(d["inner"], timeout=30).sum())

    assert jray.get(read.remote(outer), timeout=30) == 45


def test_list_tasks_shows_transitions_timestamps_and_worker(cluster: dict[str, object]) -> None:
    @jray.remote(name="tracked")
    def tracked() -> int:
        return os.getpid()

    ref = tracked.remote()
    pid = jray.get(ref, timeout=30)
    deadline = time.monotonic() + 10
    row: dict[str, Any] = {}
    while time.monotonic() < deadline:  # the head hears TASK_DONE in a batch, just after
        rows = [r for r in jray.state.list_tasks() if r["returns"] == [ref.hex()]]
        if rows and rows[0]["state"] == "FINISHED":
            row = rows[0]
            break
        time.sleep(0.02)
    assert row, "the task never showed as FINISHED"
    assert row["name"] == "tracked" and row["worker_pid"] == pid
    states = [e["state"] for e in row["events"]]
    assert states[0] == "SUBMITTED" and states[-1] == "FINISHED"
    assert "RUNNING" in states
    times = [e["time"] for e in row["events"]]
    assert times == sorted(times) and abs(times[0] - time.time()) < 60
    assert row["start_time"] <= row["end_time"]
    running = next(e for e in row["events"] if e["state"] == "RUNNING")
    assert running["detail"] == pid


def test_list_objects_and_summary(cluster: dict[str, object]) -> None:
    small, big = jray.put(1), jray.put(np.zeros(1 << 18))

    @jray.remote
    def touch(x: Any) -> None:  # passing them to a task registers them with the head
        return None

    jray.get(touch.remote([small, big]), timeout=30)
    rows = {r["object_id"]: r for r in jray.state.list_objects()}
    assert rows[big.hex()]["where"] == "shared_memory"
    assert rows[small.hex()]["where"] == "inline"
    summary = jray.state.summary()
    deadline = time.monotonic() + 20  # the second worker may still be registering
    while summary["workers"] < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
        summary = jray.state.summary()
    assert summary["objects"] >= 2 and summary["workers"] >= 2
