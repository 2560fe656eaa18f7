"""Leased workers with real processes: tasks that go straight from the driver to a
worker, and what must hold for them (see ``jray._private.leases``).

Each test first makes sure the driver holds a lease (``_leased``), then checks that
the task it submits went on it (its result id is in flight on a lease).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

import jray
from jray._private import api
from jray._private.ledger import LeaseLedger
from jray._private.resources import shape_of
from jray.exceptions import TaskCancelledError
from jray.testing import eventually

pytestmark = pytest.mark.integration
CPU1 = shape_of({"CPU": 1.0})


@jray.remote
def pid() -> int:
    return os.getpid()


@jray.remote
def echo(x: object) -> object:
    return x


@jray.remote(max_retries=2)
def pid_then_sleep(path: str, seconds: float) -> int:
    Path(path).write_text(str(os.getpid()))
    time.sleep(seconds)
    return os.getpid()


@jray.remote
def nested(depth: int) -> int:
    if depth == 0:
        return 0
    return 1 + int(jray.get(nested.remote(depth - 1), timeout=60))


@jray.remote
def spin(path: str) -> None:
    Path(path).touch()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        time.sleep(0.01)


def _ledger() -> LeaseLedger:
    leasing = api.client().leasing
    assert leasing is not None
    return leasing.ledger


def _leased() -> int:
    """Run one-at-a-time tasks until the driver holds a CPU lease; its worker's pid."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        got = jray.get(pid.remote(), timeout=30)
        if CPU1 in _ledger().by_shape:
            ref = pid.remote()
            assert ref.id in _ledger().by_result, "the task did not go on the lease"
            leased_pid = int(jray.get(ref, timeout=30))
            assert got > 0
            return leased_pid
    raise AssertionError("the driver never got a lease")


def _wait_file(path: str) -> None:
    assert eventually(lambda: os.path.exists(path) and os.path.getsize(path) >= 0, 30), path


def test_one_at_a_time_tasks_go_on_the_lease_and_the_head_sees_each(
        cluster: dict[str, object]) -> None:
    leased = _leased()
    refs = []
    for i in range(50):
        ref = echo.remote(i)
        assert ref.id in _ledger().by_result
        assert jray.get(ref, timeout=30) == i
        refs.append(ref)
    # every task reached the head's records, with its states, from the lease's worker
    want = {r.id.hex()[:28] for r in refs}

    def recorded() -> bool:
        rows = jray.state.list_tasks(label="echo", limit=10_000)
        done = {row["task_id"][:28] for row in rows if row["state"] == "FINISHED"}
        return want <= done

    assert eventually(recorded, 15)
    assert leased > 0


def test_idle_lease_goes_back_and_resources_show_free(cluster: dict[str, object]) -> None:
    _leased()
    assert CPU1 in _ledger().by_shape
    assert eventually(lambda: not _ledger().held(), 10)
    assert eventually(lambda: jray.available_resources().get("CPU") == 2.0, 10)


def test_task_with_pending_argument_waits_for_it(cluster: dict[str, object],
                                                 tmp_path: Path) -> None:
    _leased()
    slow = pid_then_sleep.remote(str(tmp_path / "p"), 0.5)
    assert slow.id in _ledger().by_result
    # made by a task in flight on the lease: it goes after it there, and waits for it
    chained = echo.remote(slow)
    assert chained.id in _ledger().by_result
    # made through the head (another shape, no lease for it yet): through the head too
    other = pid_then_sleep.options(num_cpus=0.5).remote(str(tmp_path / "q"), 0.5)
    assert other.id not in _ledger().by_result
    after = echo.remote(other)
    assert after.id not in _ledger().by_result
    assert jray.get(chained, timeout=30) == jray.get(slow, timeout=30)
    assert jray.get(after, timeout=30) == jray.get(other, timeout=30)
    ready = echo.remote(slow)  # it exists now: on the lease, with its value carried along
    assert ready.id in _ledger().by_result
    assert jray.get(ready, timeout=30) == jray.get(slow, timeout=30)


@jray.remote
def fails() -> None:
    raise ValueError("boom")


def test_chain_on_a_lease_and_an_error_in_it(cluster: dict[str, object]) -> None:
    _leased()
    x = echo.remote(0)
    for _ in range(50):
        x = echo.remote(x)  # each waits for the one before, on the same worker
        assert x.id in _ledger().by_result
    assert jray.get(x, timeout=30) == 0
    bad = fails.remote()
    after = echo.remote(bad)  # its input fails: the head fails it with that error
    with pytest.raises(ValueError, match="boom"):
        jray.get(after, timeout=30)


def test_worker_killed_while_holding_a_lease_is_retried(cluster: dict[str, object],
                                                       tmp_path: Path) -> None:
    leased = _leased()
    path = str(tmp_path / "pid")
    ref = pid_then_sleep.remote(path, 30)
    assert ref.id in _ledger().by_result
    assert eventually(lambda: os.path.exists(path) and Path(path).read_text() != "", 30)
    victim = int(Path(path).read_text())
    assert victim == leased
    Path(path).unlink()  # before the kill: a fast retry's mark must not be removed
    os.kill(victim, signal.SIGKILL)
    # the head retries it on another worker (max_retries=2); this one sleeps 30 s again,
    # so kill the retry too once it runs, proving it ran elsewhere
    assert eventually(lambda: os.path.exists(path) and Path(path).read_text() != "", 30)
    retry_pid = int(Path(path).read_text())
    assert retry_pid != victim
    Path(path).unlink()
    os.kill(retry_pid, signal.SIGKILL)
    assert eventually(lambda: os.path.exists(path) and Path(path).read_text() != "", 30)
    third = int(Path(path).read_text())
    os.kill(third, signal.SIGKILL)  # no retries left now
    with pytest.raises(jray.exceptions.WorkerCrashedError):
        jray.get(ref, timeout=60)
    assert jray.get(echo.remote(5), timeout=30) == 5  # new leases, new workers: it works


def test_nested_get_inside_leased_tasks_does_not_deadlock(cluster: dict[str, object]) -> None:
    _leased()
    ref = nested.remote(4)  # five tasks deep on two CPUs: each parent waits in get
    assert ref.id in _ledger().by_result
    assert jray.get(ref, timeout=60) == 4
    assert jray.get(echo.remote("after"), timeout=30) == "after"


@pytest.mark.parametrize("force", [False, True])
def test_cancel_reaches_a_leased_task(cluster: dict[str, object], tmp_path: Path,
                                      force: bool) -> None:
    _leased()
    started = str(tmp_path / "started")
    ref = spin.remote(started)
    assert ref.id in _ledger().by_result
    _wait_file(started)
    t0 = time.monotonic()
    jray.cancel(ref, force=force)
    with pytest.raises(TaskCancelledError):
        jray.get(ref, timeout=20)
    assert time.monotonic() - t0 < 10
    assert jray.get(echo.remote(1), timeout=30) == 1



# --- nested submitters: a task's own tasks go on leases of its worker ---------------

def _worker_ledger() -> LeaseLedger:
    leasing = api.client().leasing  # inside a task: the worker's client
    assert leasing is not None, "workers do not lease"
    return leasing.ledger


@jray.remote
def submit_one_at_a_time(n: int) -> tuple[int, list[str]]:
    on_lease, ids = 0, []
    for i in range(n):
        ref = echo.remote(i)
        on_lease += ref.id in _worker_ledger().by_result
        assert jray.get(ref, timeout=30) == i
        ids.append(ref.id.hex()[:28])
    return on_lease, ids


@jray.remote
def nested_on_leases(depth: int) -> list[bool]:
    if depth == 0:
        return []
    ref = nested_on_leases.remote(depth - 1)
    here = ref.id in _worker_ledger().by_result
    return [here, *jray.get(ref, timeout=60)]


@jray.remote
def launch_spin(path: str) -> tuple[list[jray.ObjectRef], bool]:
    ref = spin.remote(path)
    return [ref], ref.id in _worker_ledger().by_result


@jray.remote(max_retries=0)
def parent_holding_a_lease(path: str) -> None:
    deadline = time.monotonic() + 20
    while not _worker_ledger().by_id:  # until one of its children got a lease
        assert time.monotonic() < deadline, "no child of this task went on a lease"
        assert jray.get(echo.remote(1), timeout=30) == 1
    pid_then_sleep.remote(path + ".child", 1.0)  # in flight when the parent dies
    Path(path).write_text(str(os.getpid()))
    time.sleep(60)


def test_nested_one_at_a_time_tasks_go_on_leases_and_the_head_sees_each(
        cluster: dict[str, object]) -> None:
    on_lease, ids = jray.get(submit_one_at_a_time.remote(40), timeout=60)
    assert on_lease >= 20, f"only {on_lease} of 40 nested tasks went on a lease"

    def recorded() -> bool:
        rows = jray.state.list_tasks(label="echo", limit=10_000)
        return set(ids) <= {row["task_id"][:28] for row in rows if row["state"] == "FINISHED"}

    assert eventually(recorded, 15)
    # the worker gives its lease back once idle: every CPU is free again
    assert eventually(lambda: jray.available_resources().get("CPU") == 2.0, 10)


def test_nested_gets_on_leases_do_not_deadlock(cluster: dict[str, object]) -> None:
    used = jray.get(nested_on_leases.remote(5), timeout=90)  # six deep on two CPUs
    assert len(used) == 5
    assert jray.get(echo.remote("after"), timeout=30) == "after"


def test_cancel_reaches_a_task_leased_by_a_worker(cluster: dict[str, object],
                                                  tmp_path: Path) -> None:
    started = str(tmp_path / "started")
    (child,), _ = jray.get(launch_spin.remote(started), timeout=30)
    _wait_file(started)
    t0 = time.monotonic()
    jray.cancel(child)
    with pytest.raises(TaskCancelledError):
        jray.get(child, timeout=20)
    assert time.monotonic() - t0 < 10
    assert jray.get(echo.remote(2), timeout=30) == 2


def test_a_worker_killed_while_its_task_holds_a_lease(cluster: dict[str, object],
                                                      tmp_path: Path) -> None:
    path = str(tmp_path / "parent")
    ref = parent_holding_a_lease.remote(path)
    assert eventually(lambda: os.path.exists(path) and Path(path).read_text() != "", 30)
    os.kill(int(Path(path).read_text()), signal.SIGKILL)
    with pytest.raises(jray.exceptions.WorkerCrashedError):
        jray.get(ref, timeout=30)
    # its lease goes back (the head revokes a dead owner's leases): all CPUs free again
    assert eventually(lambda: jray.available_resources().get("CPU") == 2.0, 15)
    assert jray.get([echo.remote(i) for i in range(20)], timeout=30) == list(range(20))
