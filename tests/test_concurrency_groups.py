"""Actor ``concurrency_groups``, as Ray documents them: ``@ray.remote(concurrency_groups=
{"io": 2, "compute": 4})`` gives each group its own threads (or, in an async actor, its
own event loop) and concurrency limit; ``@ray.method(concurrency_group="io")`` puts a
method in a group, ``.options(concurrency_group=...)`` one call; methods of no group run
in the default group (``max_concurrency``). A blocked group does not block the others."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

import jray as ray

pytestmark = pytest.mark.integration


@ray.remote(concurrency_groups={"io": 2, "compute": 1})
class Grouped:
    def __init__(self) -> None:
        self.running = 0
        self.peak: dict[str, int] = {}
        self.lock = threading.Lock()

    def _track(self, group: str, seconds: float) -> int:
        with self.lock:
            self.running += 1
            self.peak[group] = max(self.peak.get(group, 0), self.running)
        time.sleep(seconds)
        with self.lock:
            self.running -= 1
        return threading.get_ident()

    @ray.method(concurrency_group="io")
    def io(self, seconds: float) -> int:
        return self._track("io", seconds)

    @ray.method(concurrency_group="compute")
    def compute(self, seconds: float) -> int:
        return self._track("compute", seconds)

    def plain(self) -> int:
        return threading.get_ident()

    def peaks(self) -> dict[str, int]:
        return self.peak


def test_groups_have_their_own_threads_and_limits(cluster: dict[str, object]) -> None:
    a = Grouped.remote()
    ray.get(a.plain.remote())
    ray.get([a.io.remote(0.5) for _ in range(2)])  # "io" runs two at once
    assert ray.get(a.peaks.remote())["io"] == 2
    start = time.monotonic()
    ray.get([a.compute.remote(0.3) for _ in range(2)])  # "compute": one at a time
    assert time.monotonic() - start >= 0.6
    compute_thread = ray.get(a.compute.remote(0))
    assert ray.get(a.io.options(concurrency_group="compute").remote(0)) == compute_thread
    assert ray.get(a.plain.remote()) != compute_thread
    ray.kill(a)


def test_a_blocked_group_does_not_block_the_others(cluster: dict[str, object]) -> None:
    a = Grouped.remote()
    ray.get(a.plain.remote())
    blocked = a.compute.remote(5)
    time.sleep(0.2)
    for other in (a.io.remote(0), a.plain.remote()):  # each done while "compute" is busy
        ready, _ = ray.wait([other, blocked], num_returns=1, timeout=30)
        assert ready == [other]
    ray.get(blocked)
    ray.kill(a)


@ray.remote(concurrency_groups={"slow": 1})
class AsyncGrouped:
    @ray.method(concurrency_group="slow")
    async def hog(self) -> str:
        time.sleep(5)  # blocks its group's event loop on purpose
        return "hogged"

    async def quick(self) -> str:
        await asyncio.sleep(0)
        return "quick"


def test_async_groups_run_on_their_own_event_loops(cluster: dict[str, object]) -> None:
    a = AsyncGrouped.remote()
    assert ray.get(a.quick.remote()) == "quick"
    hog = a.hog.remote()
    time.sleep(0.2)
    quick = a.quick.remote()  # the default group's loop is free: done before the hog
    ready, _ = ray.wait([quick, hog], num_returns=1, timeout=30)
    assert ready == [quick] and ray.get(quick) == "quick"
    assert ray.get(hog) == "hogged"
    ray.kill(a)


def test_concurrency_groups_are_validated() -> None:
    with pytest.raises(ValueError, match="max_concurrency must be greater than 0"):
        ray.remote(concurrency_groups={"io": 0})(type("A", (), {})).remote()
    with pytest.raises(TypeError, match="concurrency_group"):
        ray.method(concurrency_group=3)


def test_an_async_actors_constructor_sees_its_default_groups_loop(
        cluster: dict[str, object]) -> None:
    # as in Ray: the loop current in __init__ is the one the default group runs on
    @ray.remote(concurrency_groups={"io": 1})
    class Loops:
        def __init__(self) -> None:
            self.at_init = asyncio.get_event_loop()

        async def default(self) -> bool:
            return asyncio.get_running_loop() is self.at_init

        @ray.method(concurrency_group="io")
        async def io(self) -> bool:
            return asyncio.get_running_loop() is self.at_init

    @ray.remote
    class Plain:
        def __init__(self) -> None:
            self.at_init = asyncio.get_event_loop()

        async def default(self) -> bool:
            return asyncio.get_running_loop() is self.at_init

    a = Loops.remote()
    assert ray.get(a.default.remote(), timeout=60) is True
    assert ray.get(a.io.remote(), timeout=60) is False
    assert ray.get(Plain.remote().default.remote(), timeout=60) is True


def test_ray_system_group_on_an_actor_without_groups(cluster: dict[str, object]) -> None:
    # a call sent to ``_ray_system`` runs beside the actor's one queue
    @ray.remote
    class Busy:
        def block(self, s: float) -> str:
            time.sleep(s)
            return "done"

        def ping(self) -> str:
            return "pong"

    b = Busy.remote()
    blocked = b.block.options(concurrency_group="_ray_system").remote(5)
    start = time.monotonic()
    assert ray.get(b.ping.remote(), timeout=60) == "pong"
    assert time.monotonic() - start < 4
    assert ray.get(blocked, timeout=60) == "done"
