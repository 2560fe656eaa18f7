"""Cancelling actor calls with real processes, and actor calls made on other threads.

``jray.cancel`` follows Ray (a running sync or threaded call is not interrupted);
``api.interrupt`` (jray-only, the notebook's interrupt) stops a running call."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Any

import pytest
from test_actor import Gate  # an async actor whose calls wait until it is opened

import jray
from jray._private import api
from jray.exceptions import GetTimeoutError, TaskCancelledError
from jray.testing import eventually

pytestmark = pytest.mark.integration
T = 30  # every get in this module is bounded


@jray.remote
class Log:
    def __init__(self) -> None:
        self.log: list[Any] = []
        self.started: list[str] = []

    def append(self, x: Any) -> int:
        self.log.append(x)
        return len(self.log)

    def sleep(self, tag: str, s: float, mark: str = "") -> str:
        self.started.append(tag)
        if mark:
            open(mark, "w").close()
        time.sleep(s)
        self.log.append(tag)
        return tag

    def spin(self, tag: str, s: float, mark: str) -> str:
        open(mark, "w").close()
        end = time.monotonic() + s
        while time.monotonic() < end:
            pass
        self.log.append(tag)
        return tag

    def poll(self, tag: str, s: float, mark: str) -> str:
        """Runs until cancelled (``is_canceled``) or ``s`` seconds pass."""
        open(mark, "w").close()
        end = time.monotonic() + s
        while time.monotonic() < end:
            if jray.get_runtime_context().is_canceled():
                self.log.append(f"{tag} saw the cancel")
                return tag
            time.sleep(0.01)
        self.log.append(tag)
        return tag

    def count(self, n: int, mark: str) -> Any:
        for i in range(n):
            if i == 1:
                open(mark, "w").close()
            time.sleep(0.05)
            yield i

    def history(self) -> list[Any]:
        return self.log

    def begun(self) -> list[str]:
        return self.started


@jray.remote
class AsyncLog:
    def __init__(self) -> None:
        self.log: list[Any] = []
        self.started: list[str] = []

    async def sleep(self, tag: str, s: float) -> str:
        self.started.append(tag)
        await asyncio.sleep(s)
        self.log.append(tag)
        return tag

    async def append(self, x: Any) -> int:
        self.log.append(x)
        return len(self.log)

    async def history(self) -> list[Any]:
        return self.log

    async def canceled(self) -> bool:
        return jray.get_runtime_context().is_canceled()

    async def begun(self) -> list[str]:
        return self.started


def _started(h: Any, tag: str) -> bool:
    return tag in jray.get(h.begun.remote(), timeout=T)


def test_a_running_sync_call_is_not_interrupted_but_sees_is_canceled(
        cluster: object, tmp_path: Any) -> None:
    # Ray: a running call of a sync actor is not interrupted (the actor has state); it
    # can look at is_canceled() and stop, and its result is TaskCancelledError
    h = Log.remote()
    assert jray.get(h.append.remote("a"), timeout=T) == 1
    mark = str(tmp_path / "started")
    running = h.poll.remote("long", 30, mark)
    queued = h.append.remote("queued")  # behind the running call
    later = [h.append.remote(i) for i in range(3)]
    assert eventually(lambda: os.path.exists(mark), T)  # it runs (the actor is busy)
    t0 = time.monotonic()
    jray.cancel(running)
    with pytest.raises(TaskCancelledError):
        jray.get(running, timeout=T)
    assert time.monotonic() - t0 < 5
    # the actor lives, kept its state (the method ran to its end), ran the later calls
    assert jray.get(queued, timeout=T) == 3
    assert jray.get(later, timeout=T) == [4, 5, 6]
    assert jray.get(h.history.remote(), timeout=T) == [
        "a", "long saw the cancel", "queued", 0, 1, 2]


def test_cancel_queued_sync_call_drops_it(cluster: object) -> None:
    h = Log.remote()
    first = h.sleep.remote("first", 1.0)
    dropped = h.append.remote("dropped")
    after = h.append.remote("after")
    jray.cancel(dropped)
    assert jray.get(first, timeout=T) == "first"
    with pytest.raises(TaskCancelledError):
        jray.get(dropped, timeout=T)
    assert jray.get(after, timeout=T) == 2
    assert jray.get(h.history.remote(), timeout=T) == ["first", "after"]


def test_cancel_before_the_actor_is_up(cluster: object) -> None:
    h = Log.remote()
    ref = h.append.remote("x")  # the actor is still starting: the call waits here
    jray.cancel(ref)
    with pytest.raises(TaskCancelledError):
        jray.get(ref, timeout=T)
    assert jray.get(h.append.remote("y"), timeout=T) == 1


def test_a_cancelled_busy_loop_runs_to_its_end_as_cancelled(
        cluster: object, tmp_path: Any) -> None:
    h = Log.remote()
    mark = str(tmp_path / "spinning")
    ref = h.spin.remote("spin", 1.0, mark)
    assert eventually(lambda: os.path.exists(mark), T)
    jray.cancel(ref)
    with pytest.raises(TaskCancelledError):
        jray.get(ref, timeout=10)
    assert jray.get(h.append.remote("after"), timeout=T) == 2
    assert jray.get(h.history.remote(), timeout=T) == ["spin", "after"]


def test_a_cancelled_generator_method_stops_at_its_next_item(
        cluster: object, tmp_path: Any) -> None:
    h = Log.remote()
    mark = str(tmp_path / "second")
    gen = h.count.remote(1000, mark)
    assert eventually(lambda: os.path.exists(mark), T)
    jray.cancel(gen)
    got = []
    with pytest.raises(TaskCancelledError):
        for ref in gen:
            got.append(jray.get(ref, timeout=T))
    assert 1 <= len(got) < 1000 and got == list(range(len(got)))
    assert jray.get(h.append.remote("after"), timeout=T) == 1


def test_is_canceled_is_refused_in_an_async_actor(cluster: object) -> None:
    h = AsyncLog.remote()
    with pytest.raises(RuntimeError, match="not supported in an async actor"):
        jray.get(h.canceled.remote(), timeout=T)
    assert jray.get(h.append.remote("x"), timeout=T) == 1


def test_cancel_running_async_call(cluster: object) -> None:
    h = AsyncLog.remote()
    assert jray.get(h.append.remote("a"), timeout=T) == 1
    running = h.sleep.remote("long", 30)
    assert eventually(lambda: _started(h, "long"), T)
    jray.cancel(running)
    with pytest.raises(TaskCancelledError):
        jray.get(running, timeout=T)
    assert jray.get(h.append.remote("b"), timeout=T) == 2
    assert jray.get(h.history.remote(), timeout=T) == ["a", "b"]


def test_cancel_queued_threaded_call(cluster: object) -> None:
    h = Log.options(max_concurrency=2).remote()
    busy = [h.sleep.remote(f"busy{i}", 1.5) for i in range(2)]
    queued = h.append.remote("queued")
    time.sleep(0.3)
    jray.cancel(queued)
    with pytest.raises(TaskCancelledError):
        jray.get(queued, timeout=T)
    assert sorted(jray.get(busy, timeout=T)) == ["busy0", "busy1"]
    assert "queued" not in jray.get(h.history.remote(), timeout=T)


def test_a_running_threaded_call_sees_is_canceled_the_others_do_not(
        cluster: object, tmp_path: Any) -> None:
    h = Log.options(max_concurrency=2).remote()
    mark = str(tmp_path / "polling")
    ref = h.poll.remote("cancelled", 30, str(mark))
    other = h.poll.remote("other", 0.5, str(tmp_path / "other"))
    assert eventually(lambda: os.path.exists(mark), T)
    jray.cancel(ref)
    with pytest.raises(TaskCancelledError):
        jray.get(ref, timeout=10)
    assert jray.get(other, timeout=T) == "other"
    assert sorted(jray.get(h.history.remote(), timeout=T)) == [
        "cancelled saw the cancel", "other"]


def test_cancel_force_is_refused(cluster: object) -> None:
    h = Log.remote()
    ref = h.append.remote(1)
    with pytest.raises(ValueError, match="force=True is not supported.*jray.kill"):
        jray.cancel(ref, force=True)
    assert jray.get(ref, timeout=T) == 1


def test_cancel_after_finish_is_a_no_op(cluster: object) -> None:
    h = Log.remote()
    ref = h.append.remote("x")
    assert jray.get(ref, timeout=T) == 1
    jray.cancel(ref)
    assert jray.get(ref, timeout=T) == 1
    # a cancel that reaches the actor after the call finished does not hit a later call
    refs = [h.append.remote(i) for i in range(20)]
    jray.get(refs[-1], timeout=T)
    for r in refs:
        jray.cancel(r)
    assert jray.get(refs, timeout=T) == list(range(2, 22))
    assert jray.get(h.sleep.remote("next", 0.2), timeout=T) == "next"


@jray.remote
def _calls_from_a_thread(hs: list[Any], tag: str) -> list[Any]:
    h = hs[0]
    out: list[Any] = []

    def bg() -> None:
        h.append.remote(tag)  # fire and forget: must leave without a get anywhere
        try:
            out.append(jray.get(h.append.remote(tag + "-got"), timeout=10))
        except GetTimeoutError as exc:
            out.append(repr(exc))

    t = threading.Thread(target=bg)
    t.start()
    t.join(20)
    time.sleep(2)  # the main thread never waits on anything
    return out


def test_calls_from_a_background_thread_of_a_task(cluster: object) -> None:
    h = Log.remote()
    jray.get(h.append.remote("ready"), timeout=T)
    ref = _calls_from_a_thread.remote([h], "bg")
    # the first call arrives while the task's main thread sleeps
    assert eventually(lambda: "bg" in jray.get(h.history.remote(), timeout=T), 1.5)
    assert jray.get(ref, timeout=T) == [3]


@jray.remote
class Checker:
    def through(self, gate: Any) -> bool:
        jray.get(gate.wait.remote(), timeout=T)
        return bool(jray.get_runtime_context().is_canceled())


def test_a_cancel_arrives_before_what_the_caller_sends_next(cluster: object) -> None:
    # cancel, then at once unblock the call: the call must see the cancel
    for _ in range(5):
        gate, checker = Gate.remote(), Checker.remote()
        ref = checker.through.remote(gate)
        assert eventually(lambda g=gate: jray.get(g.waiters.remote(), timeout=T) == 1, T)
        jray.cancel(ref)
        jray.get(gate.open.remote(), timeout=T)
        with pytest.raises(TaskCancelledError):
            jray.get(ref, timeout=T)


# --- the notebook's interrupt (api.interrupt, jray-only): a running call is stopped ---

def test_jray_cancel_lets_a_running_sync_sleep_finish(cluster: object, tmp_path: Any) -> None:
    # Ray's cancel: a sleeping sync call is not woken; it ends, and its result says cancelled
    h = Log.remote()
    mark = str(tmp_path / "sleeping")
    ref = h.sleep.remote("slept", 1.5, mark)
    assert eventually(lambda: os.path.exists(mark), T)
    t0 = time.monotonic()
    jray.cancel(ref)
    with pytest.raises(TaskCancelledError):
        jray.get(ref, timeout=T)
    assert time.monotonic() - t0 > 1.0  # it slept on
    assert jray.get(h.history.remote(), timeout=T) == ["slept"]


def test_interrupt_stops_a_running_sync_call(cluster: object, tmp_path: Any) -> None:
    h = Log.remote()
    assert jray.get(h.append.remote("a"), timeout=T) == 1
    mark = str(tmp_path / "sleeping")
    running = h.sleep.remote("long", 30, mark)
    queued = h.append.remote("queued")
    assert eventually(lambda: os.path.exists(mark), T)
    t0 = time.monotonic()
    api.interrupt(running)
    with pytest.raises(TaskCancelledError):
        jray.get(running, timeout=T)
    assert time.monotonic() - t0 < 5
    # the actor lives and keeps its state; the interrupted method did not reach its end
    assert jray.get(queued, timeout=T) == 2
    assert jray.get(h.history.remote(), timeout=T) == ["a", "queued"]
    # an interrupt that comes after its call finished does not hit a later call
    refs = [h.append.remote(i) for i in range(10)]
    jray.get(refs[-1], timeout=T)
    for r in refs:
        api.interrupt(r)
    assert jray.get(refs, timeout=T) == list(range(3, 13))
    assert jray.get(h.sleep.remote("next", 0.3), timeout=T) == "next"


def test_interrupt_stops_a_running_threaded_call_only(cluster: object, tmp_path: Any) -> None:
    h = Log.options(max_concurrency=2).remote()
    mark = str(tmp_path / "spinning")
    ref = h.spin.remote("interrupted", 30, mark)
    other = h.spin.remote("other", 1.0, str(tmp_path / "other"))
    assert eventually(lambda: os.path.exists(mark), T)
    t0 = time.monotonic()
    api.interrupt(ref)
    with pytest.raises(TaskCancelledError):
        jray.get(ref, timeout=T)
    assert time.monotonic() - t0 < 5
    assert jray.get(other, timeout=T) == "other"
    assert jray.get(h.history.remote(), timeout=T) == ["other"]


def test_interrupt_stops_a_running_async_call(cluster: object) -> None:
    h = AsyncLog.remote()
    running = h.sleep.remote("long", 30)
    assert eventually(lambda: _started(h, "long"), T)
    t0 = time.monotonic()
    api.interrupt(running)
    with pytest.raises(TaskCancelledError):
        jray.get(running, timeout=T)
    assert time.monotonic() - t0 < 5
    assert jray.get(h.append.remote("b"), timeout=T) == 1
    assert jray.get(h.history.remote(), timeout=T) == ["b"]


def test_interrupt_refuses_what_is_not_a_ref(cluster: object) -> None:
    with pytest.raises(TypeError, match=r"api.interrupt\(\) takes an ObjectRef, got int"):
        api.interrupt(3)
