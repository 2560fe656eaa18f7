"""jray.util.ActorPool and jray.util.queue.Queue, from the driver and from tasks."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

import jray
from jray.testing import eventually
from jray.util import ActorPool
from jray.util.queue import Empty, Full, Queue

pytestmark = pytest.mark.integration
T = 30


@jray.remote
class Doubler:
    def double(self, v: int) -> int:
        time.sleep(0.05 if v % 2 else 0.0)  # odd values are slow: finish out of order
        return 2 * v

    def slow(self, v: int) -> int:
        time.sleep(v)
        return v


def _double(a: Any, v: int) -> Any:
    return a.double.remote(v)


@pytest.fixture(scope="module")
def doublers(cluster: dict[str, object]) -> list[Any]:
    actors = [Doubler.remote() for _ in range(3)]
    jray.get([a.double.remote(0) for a in actors], timeout=T)
    return actors


def test_pool_map_keeps_order(doublers: list[Any]) -> None:
    pool = ActorPool(doublers)
    assert list(pool.map(_double, range(12))) == [2 * v for v in range(12)]


def test_pool_map_unordered_yields_everything(doublers: list[Any]) -> None:
    pool = ActorPool(doublers)
    out = list(pool.map_unordered(_double, range(12)))
    assert sorted(out) == [2 * v for v in range(12)]


def test_pool_submit_get_next_has_next(doublers: list[Any]) -> None:
    pool = ActorPool(doublers[:2])
    for v in range(5):  # more submissions than actors: the rest wait for a free one
        pool.submit(_double, v)
    assert pool.has_next() and not pool.has_free()
    assert [pool.get_next() for _ in range(5)] == [0, 2, 4, 6, 8]
    assert not pool.has_next()
    with pytest.raises(StopIteration):
        pool.get_next()
    pool.submit(_double, 3)
    pool.submit(_double, 4)
    assert sorted([pool.get_next_unordered(), pool.get_next_unordered()]) == [6, 8]


def test_pool_get_next_timeout_and_membership(doublers: list[Any]) -> None:
    pool = ActorPool(doublers[:1])
    pool.submit(lambda a, v: a.slow.remote(v), 0.5)
    with pytest.raises(TimeoutError):
        pool.get_next(timeout=0.05)
    assert pool.get_next(timeout=T) == 0.5
    idle = pool.pop_idle()
    assert idle is doublers[0] and pool.pop_idle() is None
    pool.push(idle)
    with pytest.raises(ValueError, match="already belongs"):
        pool.push(idle)


def test_queue_put_get_in_order_and_qsize(cluster: dict[str, object]) -> None:
    q = Queue()
    for i in range(5):
        q.put(i)
    assert q.qsize() == len(q) == 5 and not q.empty()
    assert [q.get() for _ in range(5)] == list(range(5))
    assert q.empty()
    q.put_nowait_batch([7, 8, 9])
    assert q.get_nowait_batch(3) == [7, 8, 9]


def test_queue_blocking_timeouts_raise_empty_and_full(cluster: dict[str, object]) -> None:
    q = Queue(maxsize=2)
    with pytest.raises(Empty):
        q.get(block=False)
    t0 = time.perf_counter()
    with pytest.raises(Empty):
        q.get(timeout=0.3)
    assert 0.25 < time.perf_counter() - t0 < 5
    q.put("a")
    q.put("b")
    assert q.full()
    with pytest.raises(Full):
        q.put("c", block=False)
    with pytest.raises(Full):
        q.put("c", timeout=0.2)
    with pytest.raises(Full):
        q.put_nowait_batch(["x"])
    with pytest.raises(Empty):
        Queue().get_nowait_batch(1)
    with pytest.raises(ValueError):
        q.get(timeout=-1)
    assert q.get() == "a"
    q.shutdown()


@jray.remote
def produce(q: Queue, n: int) -> int:
    for i in range(n):
        q.put(i)
    return n


@jray.remote
def consume(q: Queue, n: int) -> int:
    return sum(q.get(timeout=T) for _ in range(n))


def test_queue_shared_by_tasks_and_driver(cluster: dict[str, object]) -> None:
    q = Queue(maxsize=10)  # producers block on a full queue while the consumer drains it
    consumer = consume.remote(q, 200)
    producers = [produce.remote(q, 100) for _ in range(2)]
    assert jray.get(producers, timeout=60) == [100, 100]
    assert jray.get(consumer, timeout=60) == 2 * sum(range(100))
    q.put("from the driver")

    @jray.remote
    def take(q: Queue) -> Any:
        return q.get(timeout=T)

    assert jray.get(take.remote(q), timeout=T) == "from the driver"


def test_queue_put_async_get_async(cluster: dict[str, object]) -> None:
    import asyncio

    q = Queue(maxsize=1)

    async def main() -> list[Any]:
        await q.put_async("a")
        with pytest.raises(Full):
            await q.put_async("b", block=False)
        with pytest.raises(Full):
            await q.put_async("b", timeout=0.2)
        first = await q.get_async()
        with pytest.raises(Empty):
            await q.get_async(block=False)
        getter = asyncio.ensure_future(q.get_async(timeout=10))
        await asyncio.sleep(0.1)
        await q.put_async("c")
        return [first, await getter]

    assert asyncio.run(main()) == ["a", "c"]
    q.shutdown()


@jray.remote
class Seen:
    def __init__(self) -> None:
        self.values: list[int] = []

    async def note(self, v: int) -> int:
        self.values.append(v)
        return v

    async def stall(self, s: float) -> float:
        await asyncio.sleep(s)
        return s

    async def seen(self) -> list[int]:
        return self.values


def test_pool_map_submits_when_called(cluster: dict[str, object]) -> None:
    # as in Ray: map() submits at once (as many values as there are idle actors, the
    # rest as results come back); the iterator only collects
    actors = [Seen.remote() for _ in range(3)]
    pool = ActorPool(actors)
    results = pool.map(lambda a, v: a.note.remote(v), range(3))

    def seen() -> list[int]:
        return sorted(v for a in actors for v in jray.get(a.seen.remote(), timeout=T))

    assert eventually(lambda: seen() == [0, 1, 2], T)
    assert list(results) == [0, 1, 2]


def test_pool_map_drops_earlier_work_nobody_took(cluster: dict[str, object]) -> None:
    pool = ActorPool([Seen.remote() for _ in range(2)])
    pool.submit(lambda a, v: a.stall.remote(v), 30)  # never collected
    start = time.monotonic()
    assert list(pool.map(lambda a, v: a.note.remote(v), [1, 2, 3])) == [1, 2, 3]
    assert time.monotonic() - start < 20
    pool.submit(lambda a, v: a.stall.remote(v), 30)
    with pytest.raises(TimeoutError, match="dropped"):
        pool.get_next(timeout=0.1, ignore_if_timedout=True)
    assert not pool.has_next() and pool.has_free()
