"""Actor failures with real processes: crashes, restarts, retries, checkpoints."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import psutil
import pytest

import jray
from jray.exceptions import ActorDiedError, SerializationError

pytestmark = pytest.mark.integration
T = 30


@jray.remote
class Victim:
    def __init__(self, fail: bool = False) -> None:
        if fail:
            raise RuntimeError("constructor refused to start")
        self.n = 0

    def pid(self) -> int:
        return os.getpid()

    def inc(self) -> int:
        self.n += 1
        return self.n

    def nap(self, s: float) -> float:
        time.sleep(s)
        return s

    def exit_with(self, code: int) -> None:
        os._exit(code)

    def signal_self(self, sig: int) -> None:
        os.kill(os.getpid(), sig)
        time.sleep(5)

    def unpicklable(self) -> Any:
        return threading.Lock()


def _crash_exit(v: Any) -> None:
    v.exit_with.remote(3)


def _crash_segv(v: Any) -> None:
    v.signal_self.remote(signal.SIGSEGV)


def _crash_sigkill(v: Any) -> None:
    os.kill(jray.get(v.pid.remote(), timeout=T), signal.SIGKILL)


def _crash_kill(v: Any) -> None:
    jray.kill(v)


CRASHES: list[tuple[str, Callable[[Any], None], str, int | None]] = [
    ("os._exit(3) in a method", _crash_exit, "exited with code 3", 3),
    ("SIGSEGV", _crash_segv, "SIGSEGV", -11),
    ("SIGKILL from outside", _crash_sigkill, "SIGKILL", -9),
    ("jray.kill()", _crash_kill, r"killed by jray\.kill\(\)", None),
]


@pytest.mark.parametrize("how, crash, message, exitcode", CRASHES, ids=[c[0] for c in CRASHES])
def test_crash_table(cluster: dict[str, object], how: str, crash: Callable[[Any], None],
                     message: str, exitcode: int | None) -> None:
    v = Victim.remote()
    assert jray.get(v.inc.remote(), timeout=T) == 1
    crash(v)
    with pytest.raises(ActorDiedError, match=message) as info:
        jray.get(v.inc.remote(), timeout=T)
    if exitcode is not None:
        assert info.value.exitcode == exitcode
    with pytest.raises(ActorDiedError, match=message):  # later calls fail at once
        jray.get(v.inc.remote(), timeout=5)


def test_constructor_error_carries_its_traceback(cluster: dict[str, object]) -> None:
    v = Victim.remote(fail=True)
    with pytest.raises(ActorDiedError, match="constructor refused to start") as info:
        jray.get(v.inc.remote(), timeout=T)
    assert "RuntimeError" in info.value.traceback_str
    assert "raise RuntimeError" in info.value.traceback_str


def test_pending_calls_fail_when_the_process_dies(cluster: dict[str, object]) -> None:
    v = Victim.remote()
    pid = jray.get(v.pid.remote(), timeout=T)
    pending = [v.nap.remote(0.5) for _ in range(3)]
    time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)
    for ref in pending:
        with pytest.raises(ActorDiedError, match="SIGKILL"):
            jray.get(ref, timeout=T)


def test_unserializable_result_fails_the_call_only(cluster: dict[str, object]) -> None:
    v = Victim.remote()
    with pytest.raises(SerializationError, match="Victim.unpicklable"):
        jray.get(v.unpicklable.remote(), timeout=T)
    assert jray.get(v.inc.remote(), timeout=T) == 1


def test_max_restarts_runs_the_constructor_again(cluster: dict[str, object]) -> None:
    v = Victim.options(max_restarts=2).remote()
    pids = []
    for restart in range(3):
        assert jray.get(v.inc.remote(), timeout=T) == 1  # fresh state each time
        pids.append(jray.get(v.pid.remote(), timeout=T))
        os.kill(pids[-1], signal.SIGKILL)
        if restart < 2:
            _wait_alive(v)
    assert len(set(pids)) == 3
    with pytest.raises(ActorDiedError, match=r"no restarts left \(max_restarts=2\)"):
        jray.get(v.inc.remote(), timeout=T)
    row = [r for r in jray.actor.list_actors() if r["actor_id"] == v._actor_id.hex()][0]
    assert row["num_restarts"] == 2 and row["state"] == "DEAD"


def test_a_call_made_after_the_restart_began_waits_for_it(cluster: dict[str, object]) -> None:
    """The caller slept through the crash (no jray call read the head's news): its next
    call must go to the next incarnation, not fail on the dead one (Ray's
    test_was_current_actor_reconstructed)."""
    v = Victim.options(max_restarts=1).remote()
    pid = jray.get(v.pid.remote(), timeout=T)
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while psutil.pid_exists(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # the head has heard of it by now; this process has not looked
    assert jray.get(v.inc.remote(), timeout=T) == 1  # fresh state: the new incarnation
    assert jray.get(v.pid.remote(), timeout=T) != pid


def _wait_alive(handle: Any, method: str = "pid", timeout: float = T) -> None:
    """Calls in flight at the crash fail (no retries); wait for the next incarnation."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            jray.get(getattr(handle, method).remote(), timeout=timeout)
            return
        except ActorDiedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_kill_with_no_restart_false_restarts(cluster: dict[str, object]) -> None:
    v = Victim.options(max_restarts=1).remote()
    pid = jray.get(v.pid.remote(), timeout=T)
    jray.kill(v, no_restart=False)
    deadline = time.monotonic() + T
    while True:  # the kill is asynchronous: wait for the next incarnation
        try:
            if jray.get(v.pid.remote(), timeout=T) != pid:
                break
        except ActorDiedError:
            pass
        assert time.monotonic() < deadline
        time.sleep(0.05)
    jray.kill(v)
    with pytest.raises(ActorDiedError):
        jray.get(v.pid.remote(), timeout=T)


@jray.remote
class Flaky:
    def __init__(self, marker: str) -> None:
        self.marker = marker
        self.seen: list[int] = []

    def step(self, i: int) -> int:
        if i == 2 and not os.path.exists(self.marker):
            with open(self.marker, "w"):
                pass
            os._exit(1)  # the first incarnation dies on call 2
        self.seen.append(i)
        return i

    def history(self) -> list[int]:
        return self.seen


def test_max_task_retries_resends_calls_in_flight(cluster: dict[str, object],
                                                  tmp_path: Any) -> None:
    f = Flaky.options(max_restarts=1, max_task_retries=1).remote(str(tmp_path / "crashed"))
    refs = [f.step.remote(i) for i in range(6)]
    assert jray.get(refs, timeout=T) == list(range(6))
    # the calls from 2 on ran again, in order, on the second incarnation (calls 0 and 1
    # too if their results had not left the first one yet: at-least-once)
    history = jray.get(f.history.remote(), timeout=T)
    assert history in ([2, 3, 4, 5], [0, 1, 2, 3, 4, 5], [1, 2, 3, 4, 5])


def test_without_task_retries_calls_in_flight_fail(cluster: dict[str, object],
                                                   tmp_path: Any) -> None:
    f = Flaky.options(max_restarts=1).remote(str(tmp_path / "crashed"))
    assert jray.get([f.step.remote(i) for i in range(2)], timeout=T) == [0, 1]
    refs = [f.step.remote(i) for i in range(2, 5)]
    for ref in refs:
        with pytest.raises(ActorDiedError, match="exited with code 1"):
            jray.get(ref, timeout=T)
    _wait_alive(f, "history")
    assert jray.get(f.step.remote(9), timeout=T) == 9


@jray.remote
class Checkpointed:
    def __init__(self) -> None:
        self.total = 0
        self.restored_from: int | None = None

    def add(self, k: int, nap: float = 0.0) -> int:
        time.sleep(nap)
        self.total += k
        return self.total

    def pid(self) -> int:
        return os.getpid()

    def info(self) -> tuple[int, int | None]:
        return self.total, self.restored_from

    def __jray_checkpoint__(self) -> dict[str, int]:
        return {"total": self.total}

    def __jray_restore__(self, state: dict[str, int]) -> None:
        self.total = state["total"]
        self.restored_from = state["total"]


def test_sigkill_mid_sequence_resumes_from_last_checkpoint(cluster: dict[str, object]) -> None:
    c = Checkpointed.options(max_restarts=1, checkpoint_interval=5).remote()
    for i in range(12):  # checkpoints after calls 5 and 10
        assert jray.get(c.add.remote(1), timeout=T) == i + 1
    os.kill(jray.get(c.pid.remote(), timeout=T), signal.SIGKILL)
    _wait_alive(c)
    total, restored_from = jray.get(c.info.remote(), timeout=T)
    assert (total, restored_from) == (10, 10)  # calls 11 and 12 came after the checkpoint
    assert jray.get(c.add.remote(1), timeout=T) == 11


def test_checkpoint_by_time_and_retried_calls(cluster: dict[str, object]) -> None:
    c = Checkpointed.options(max_restarts=1, max_task_retries=-1,
                             checkpoint_interval_s=0.2).remote()
    assert jray.get([c.add.remote(1) for _ in range(3)], timeout=T)[-1] == 3
    time.sleep(0.6)  # idle: the time-based checkpoint is taken
    pid = jray.get(c.pid.remote(), timeout=T)
    slow = [c.add.remote(100, nap=1.0) for _ in range(2)]  # still running at the kill
    time.sleep(0.3)
    os.kill(pid, signal.SIGKILL)
    # both calls were in flight at the kill: they are retried on the restored state
    assert sorted(jray.get(slow, timeout=T)) == [103, 203]
    assert jray.get(c.info.remote(), timeout=T) == (203, 3)  # restored from the checkpoint
