"""Actor lifetime follows references, as in Ray: an actor that is neither named nor
detached stops once every handle to it is gone, and its process, memory and CPU
return; a long loop creating such actors therefore runs in constant resources."""

from __future__ import annotations

import time

import psutil
import pytest

import jray as ray

pytestmark = pytest.mark.integration

ROUNDS = 25
HOLD_BYTES = 64 * 1024 * 1024


@ray.remote(num_cpus=1)
class Holder:
    def __init__(self) -> None:
        self.block = bytearray(HOLD_BYTES)  # touched: resident memory of its own
        for i in range(0, HOLD_BYTES, 4096):
            self.block[i] = 1

    def size(self) -> int:
        return len(self.block)


def _actor_processes() -> list[psutil.Process]:
    found = []
    for p in psutil.Process().children(recursive=True):
        try:
            if "jray._private.actor_worker" in " ".join(p.cmdline()):
                found.append(p)
        except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
            continue
    return found


def _settled(check: object, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return bool(check())  # type: ignore[operator]


def test_a_loop_of_unreferenced_actors_returns_cpu_and_memory(
        cluster: dict[str, object]) -> None:
    total = ray.cluster_resources()["CPU"]
    assert _settled(lambda: ray.available_resources().get("CPU", 0.0) == total)
    before = len(_actor_processes())
    for _ in range(ROUNDS):
        h = Holder.remote()
        assert ray.get(h.size.remote(), timeout=60) == HOLD_BYTES
        del h  # the only handle: the actor stops, its CPU comes back
        assert _settled(lambda: ray.available_resources().get("CPU", 0.0) == total)
    # 25 actors of 64 MiB each ran, one at a time; none is left, nor its memory
    assert _settled(lambda: len(_actor_processes()) <= before)
    rss = sum(p.memory_info().rss for p in _actor_processes())
    assert rss < HOLD_BYTES
    dead = [a for a in ray.state.list_actors() if a.get("class_name") == "Holder"]
    assert len(dead) == ROUNDS and all(a.get("state") == "DEAD" for a in dead), dead[:2]


def test_a_named_actor_dies_with_its_handles_a_detached_one_lives_until_killed(
        cluster: dict[str, object]) -> None:
    # as in Ray: a name does not keep an actor alive, and get_actor's handles are weak
    named = Holder.options(name="kept", num_cpus=0).remote()
    ray.get(named.size.remote(), timeout=60)
    for _ in range(3):
        assert ray.get(ray.get_actor("kept").size.remote(), timeout=60) == HOLD_BYTES
    del named

    def name_gone() -> bool:
        try:
            ray.get_actor("kept")
        except ValueError:
            return True
        return False

    assert _settled(name_gone)
    detached = Holder.options(name="stays", num_cpus=0, lifetime="detached").remote()
    ray.get(detached.size.remote(), timeout=60)
    del detached
    time.sleep(0.5)
    again = ray.get_actor("stays")
    assert ray.get(again.size.remote(), timeout=60) == HOLD_BYTES
    ray.kill(again)
    with pytest.raises(ValueError):  # as in Ray: its name is gone as soon as it is killed
        ray.get_actor("stays")
    restartable = Holder.options(name="back", num_cpus=0, max_restarts=1,
                                 max_task_retries=-1).remote()
    ray.get(restartable.size.remote(), timeout=60)
    ray.kill(restartable, no_restart=False)  # restarted: the name stays
    assert ray.get(ray.get_actor("back").size.remote(), timeout=60) == HOLD_BYTES
    ray.kill(restartable)


@ray.remote(num_cpus=0)
class Pid:
    def __init__(self) -> None:
        self.kept: list[object] = []

    def pid(self) -> int:
        return psutil.Process().pid

    def keep(self, handle: object) -> None:
        self.kept.append(handle)

    def drop(self) -> None:
        self.kept.clear()

    def look(self, handle: object) -> int:
        return 0

    def make(self, n: int) -> int:
        self.kept = [Pid.remote() for _ in range(n)]
        return len(self.kept)

    def pids(self) -> list[int]:
        return ray.get([h.pid.remote() for h in self.kept], timeout=60)  # type: ignore[attr-defined]


@ray.remote(num_cpus=0)
def use_later(handle: object, delay: float) -> int:
    time.sleep(delay)  # the caller drops its own handle meanwhile
    return int(ray.get(handle.pid.remote(), timeout=60))  # type: ignore[attr-defined]


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:  # reaped while we looked
        return True


def _exited(pid: int, timeout: float = 30) -> bool:
    return _settled(lambda: _gone(pid), timeout)


def test_handles_passed_to_tasks_and_actors_are_counted(cluster: dict[str, object]) -> None:
    # a copy of the handle in a task's arguments keeps the actor after the creator's goes
    a = Pid.remote()
    pid = ray.get(a.pid.remote(), timeout=60)
    x = use_later.remote(a, 1.0)
    del a
    assert ray.get(x, timeout=60) == pid
    assert _exited(pid)
    # a copy an actor keeps counts until that actor drops it
    a = Pid.remote()
    pid = ray.get(a.pid.remote(), timeout=60)
    keeper = Pid.remote()
    ray.get(keeper.keep.remote(a), timeout=60)
    del a
    time.sleep(1.0)
    assert psutil.pid_exists(pid), "the actor died while another actor held its handle"
    ray.get(keeper.drop.remote(), timeout=60)
    assert _exited(pid)
    # an actor given its own handle in calls does not keep itself alive
    a = Pid.remote()
    pid = ray.get(a.pid.remote(), timeout=60)
    for _ in range(3):
        ray.get(a.look.remote(a), timeout=60)
    del a
    assert _exited(pid)
    del keeper


def test_actors_die_with_the_actor_that_created_them(cluster: dict[str, object]) -> None:
    owner = Pid.remote()
    assert ray.get(owner.make.remote(2), timeout=60) == 2
    pids = ray.get(owner.pids.remote(), timeout=60)
    del owner  # the owner exits: the actors it created go with it
    assert all(_exited(pid) for pid in pids)
