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


def test_a_named_actor_outlives_its_handles_until_killed(cluster: dict[str, object]) -> None:
    named = Holder.options(name="kept", num_cpus=0).remote()
    ray.get(named.size.remote(), timeout=60)
    del named
    time.sleep(0.5)
    again = ray.get_actor("kept")
    assert ray.get(again.size.remote(), timeout=60) == HOLD_BYTES
    ray.kill(again)
    with pytest.raises(ValueError):  # as in Ray: its name is gone as soon as it is killed
        ray.get_actor("kept")
    restartable = Holder.options(name="back", num_cpus=0, max_restarts=1,
                                 max_task_retries=-1).remote()
    ray.get(restartable.size.remote(), timeout=60)
    ray.kill(restartable, no_restart=False)  # restarted: the name stays
    assert ray.get(ray.get_actor("back").size.remote(), timeout=60) == HOLD_BYTES
    ray.kill(restartable)
