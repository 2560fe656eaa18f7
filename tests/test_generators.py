"""Generator tasks and actor methods, as Ray documents them (docs.ray.io, "Ray Generators").

A remote function or actor method that yields returns an ``ObjectRefGenerator``
(``num_returns="streaming"``, the default for generators): its refs become ready
one by one as the values are yielded, usable with ``next``/``for`` and ``async
for``; an exception inside the generator is raised by the ``get`` of the ref
after the last value; ``jray.cancel`` stops it; ``_generator_backpressure_num_objects``
pauses the producer. ``num_returns="dynamic"`` returns one ref whose value
iterates over the items' refs, and ``num_returns=N`` takes N yielded values.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import jray as ray
from jray._private import generators

pytestmark = pytest.mark.integration


@ray.remote
def count_to(n: int, delay: float = 0.0) -> Iterator[int]:
    for i in range(n):
        if delay:
            time.sleep(delay)
        yield i


@ray.remote
def big_items(n: int) -> Iterator[np.ndarray]:
    for i in range(n):
        yield np.full(300_000, i, dtype=np.int64)  # 2.4 MB: stored in shared memory


@ray.remote
def fails_after(n: int) -> Iterator[int]:
    yield from range(n)
    raise KeyError("stream broke")


@ray.remote
def gated(path: str) -> Iterator[str]:
    """Yields 'first', then waits (bounded) for ``path`` before yielding 'second'."""
    yield "first"
    deadline = time.monotonic() + 30
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.01)
    yield "second"


@ray.remote
def forever() -> Iterator[int]:
    i = 0
    while True:
        time.sleep(0.05)
        yield i
        i += 1


@ray.remote
class Streamer:
    def numbers(self, n: int) -> Iterator[int]:
        yield from range(n)

    def broken(self) -> Iterator[int]:
        yield 7
        raise ValueError("method broke")

    def plain(self) -> int:
        return 5


@ray.remote
class AsyncStreamer:
    async def numbers(self, n: int) -> AsyncIterator[int]:
        for i in range(n):
            await asyncio.sleep(0.001)
            yield i

    async def consume(self, other: Any, n: int) -> list[int]:
        return [await ref async for ref in other.numbers.remote(n)]


def test_generator_task_returns_an_object_ref_generator(cluster: dict[str, object]) -> None:
    gen = count_to.remote(5)
    assert isinstance(gen, ray.ObjectRefGenerator)
    refs = list(gen)
    assert all(isinstance(r, ray.ObjectRef) for r in refs)
    assert ray.get(refs) == [0, 1, 2, 3, 4]
    assert gen.is_finished()
    assert ray.get(gen.completed()) == 5  # the call itself: ready once exhausted


def test_refs_become_ready_as_values_are_yielded(cluster: dict[str, object],
                                                 tmp_path: Path) -> None:
    gate = tmp_path / "go"
    gen = gated.remote(str(gate))
    assert ray.get(next(gen), timeout=30) == "first"  # before the generator finished
    assert not gen.is_finished()
    with pytest.raises(ray.exceptions.GetTimeoutError):
        gen._next_sync(timeout_s=0.3)  # the second value does not exist yet
    gate.touch()
    assert ray.get(next(gen), timeout=30) == "second"
    with pytest.raises(StopIteration):
        next(gen)


def test_empty_generator_stops_at_once(cluster: dict[str, object]) -> None:
    assert list(count_to.remote(0)) == []


def test_large_items_travel_through_shared_memory(cluster: dict[str, object]) -> None:
    values = [ray.get(ref) for ref in big_items.remote(3)]
    assert [int(v[0]) for v in values] == [0, 1, 2]
    assert all(v.shape == (300_000,) for v in values)


def test_an_item_ref_can_be_passed_to_another_task(cluster: dict[str, object]) -> None:
    @ray.remote
    def double(x: int) -> int:
        return 2 * x

    assert ray.get([double.remote(ref) for ref in count_to.remote(3)]) == [0, 2, 4]


def test_error_mid_stream_is_raised_by_the_next_ref(cluster: dict[str, object]) -> None:
    refs = list(fails_after.remote(2))
    assert len(refs) == 3
    assert ray.get(refs[:2]) == [0, 1]
    with pytest.raises(KeyError, match="stream broke"):
        ray.get(refs[2])
    with pytest.raises(ray.exceptions.RayTaskError):
        ray.get(refs[2])


def test_cancel_stops_a_running_generator(cluster: dict[str, object]) -> None:
    gen = forever.remote()
    assert ray.get(next(gen), timeout=30) == 0
    ray.cancel(gen)
    deadline = time.monotonic() + 30
    with pytest.raises(ray.exceptions.TaskCancelledError):
        for ref in gen:  # the values yielded before the cancel landed, then the error
            ray.get(ref, timeout=30)
            assert time.monotonic() < deadline
    assert list(gen) == []  # the error was the last item
    assert gen.is_finished()


def test_async_for_in_the_driver(cluster: dict[str, object]) -> None:
    async def main() -> list[int]:
        return [await ref async for ref in count_to.remote(4, 0.01)]

    assert asyncio.run(main()) == [0, 1, 2, 3]


def test_backpressure_pauses_the_producer(cluster: dict[str, object]) -> None:
    @ray.remote(_generator_backpressure_num_objects=2)
    def stamps(n: int) -> Iterator[float]:
        for _ in range(n):
            yield time.monotonic()

    gen = stamps.remote(5)
    made, asked = [], []
    while True:
        asked.append(time.monotonic())
        try:
            ref = next(gen)
        except StopIteration:
            break
        made.append(ray.get(ref))
        time.sleep(0.3)
    # at most 2 unconsumed: item k+2 is made only once item k was asked for (one clock)
    assert all(m >= t for m, t in zip(made[2:], asked)), (made, asked)
    assert made[4] - made[0] > 0.5


def test_without_backpressure_the_producer_runs_ahead(cluster: dict[str, object]) -> None:
    @ray.remote
    def stamps(n: int) -> Iterator[float]:
        for _ in range(n):
            yield time.monotonic()

    gen = stamps.remote(4)
    ray.get(next(gen))
    time.sleep(1.0)
    asked = time.monotonic()
    rest = [ray.get(ref) for ref in gen]
    assert rest[-1] < asked  # all made while the consumer slept


def test_dynamic_returns_one_ref_of_a_generator_of_refs(cluster: dict[str, object]) -> None:
    @ray.remote(num_returns="dynamic")
    def split(n: int) -> Iterator[int]:
        yield from range(n)

    ref = split.remote(3)
    assert isinstance(ref, ray.ObjectRef)
    inner = ray.get(ref)
    assert isinstance(inner, ray.DynamicObjectRefGenerator)
    assert [ray.get(r) for r in inner] == [0, 1, 2]

    @ray.remote
    def total(refs: Any) -> int:
        return sum(ray.get(list(refs)))

    assert ray.get(total.remote(ref)) == 3  # the value travels, its refs with it


def test_num_returns_n_takes_n_yielded_values(cluster: dict[str, object]) -> None:
    a, b = count_to.options(num_returns=2).remote(2)
    assert ray.get([a, b]) == [0, 1]
    with pytest.raises(ValueError, match="num_returns=3"):
        ray.get(count_to.options(num_returns=3).remote(2))
    ok, bad = fails_after.options(num_returns=2).remote(1)
    assert ray.get(ok) == 0
    with pytest.raises(KeyError):
        ray.get(bad)


def test_get_of_a_generator_returns_it_and_it_does_not_pickle(
        cluster: dict[str, object]) -> None:
    gen = count_to.remote(2)
    assert ray.get(gen) is gen  # as in Ray
    with pytest.raises(TypeError):
        ray.put(gen)
    assert ray.get(list(gen)) == [0, 1]


def test_actor_generator_method_streams(cluster: dict[str, object]) -> None:
    s = Streamer.remote()
    gen = s.numbers.remote(4)
    assert isinstance(gen, ray.ObjectRefGenerator)
    assert [ray.get(r) for r in gen] == [0, 1, 2, 3]
    refs = list(s.broken.remote())
    assert ray.get(refs[0]) == 7
    with pytest.raises(ValueError, match="method broke"):
        ray.get(refs[1])
    assert ray.get(s.plain.remote()) == 5
    one = s.numbers.options(num_returns=1).remote(1)  # a plain ref of the one value
    assert ray.get(one) == 0
    dyn = ray.get(s.numbers.options(num_returns="dynamic").remote(2))
    assert [ray.get(r) for r in dyn] == [0, 1]
    ray.kill(s)


def test_async_actor_generators(cluster: dict[str, object]) -> None:
    a = AsyncStreamer.remote()
    b = AsyncStreamer.remote()
    assert [ray.get(r) for r in a.numbers.remote(3)] == [0, 1, 2]
    assert ray.get(b.consume.remote(a, 4)) == [0, 1, 2, 3]  # async for inside an actor
    ray.kill(a)
    ray.kill(b)


def test_dropped_generator_frees_its_items(cluster: dict[str, object]) -> None:
    from jray._private import api

    core = api.client()
    gen = big_items.remote(3)
    first = next(gen)
    ray.get(gen.completed())
    key = gen.completed().id
    ids = [generators.item_id(key, i) for i in range(3)]
    del gen, first
    deadline = time.monotonic() + 10
    while any(oid in core.cache for oid in ids) and time.monotonic() < deadline:
        ray.get(ray.put(0))  # settles dropped refs
        time.sleep(0.05)
    assert not any(oid in core.cache for oid in ids)


def test_streaming_option_is_validated() -> None:
    with pytest.raises(ValueError, match="num_returns"):
        count_to.options(num_returns="sometimes")
    with pytest.raises(ValueError, match="_generator_backpressure_num_objects"):
        count_to.options(_generator_backpressure_num_objects=-5)


def test_dynamic_error_is_raised_by_its_last_ref(cluster: dict[str, object]) -> None:
    ref = fails_after.options(num_returns="dynamic").remote(1)
    first, last = ray.get(ref)  # the value itself reads fine
    assert ray.get(first) == 0
    with pytest.raises(KeyError, match="stream broke"):
        ray.get(last)


class Flaky(Exception):
    pass


@ray.remote(max_retries=1, retry_exceptions=[Flaky])
def flaky_stream(marker: str) -> Iterator[int]:
    """Yields 0, 1, 2; its first run fails with Flaky after yielding 0."""
    for i in range(3):
        yield i
        if not os.path.exists(marker):
            Path(marker).touch()
            raise Flaky("first run")


def test_streaming_retry_exceptions_reruns_and_skips_what_came(
        cluster: dict[str, object], tmp_path: Path) -> None:
    assert [ray.get(r) for r in flaky_stream.remote(str(tmp_path / "m1"))] == [0, 1, 2]
    refs = list(flaky_stream.options(retry_exceptions=False).remote(str(tmp_path / "m2")))
    assert ray.get(refs[0]) == 0
    with pytest.raises(Flaky):  # not retried: the error is the item after the last value
        ray.get(refs[1])
    dyn = ray.get(flaky_stream.options(num_returns="dynamic").remote(str(tmp_path / "m3")))
    assert ray.get(list(dyn)) == [0, 1, 2]


def test_wait_on_generators_and_refs(cluster: dict[str, object], tmp_path: Path) -> None:
    gate = tmp_path / "go"
    gen = gated.remote(str(gate))
    ready, rest = ray.wait([gen], timeout=30)  # ready: its first item exists
    assert ready == [gen] and rest == []
    assert ray.get(next(gen), timeout=30) == "first"
    ready, rest = ray.wait([gen], timeout=0.3)  # the second item does not exist yet
    assert ready == [] and rest == [gen]
    plain = ray.put(1)
    ready, rest = ray.wait([gen, plain], num_returns=1, timeout=30)
    assert ready == [plain] and rest == [gen]
    gate.touch()
    ready, rest = ray.wait([gen, plain], num_returns=2, timeout=30)
    assert ready == [gen, plain]
    assert ray.get(next(gen), timeout=30) == "second"
    ready, _ = ray.wait([gen], timeout=30)  # finished: ready (next raises StopIteration)
    assert ready == [gen]
    with pytest.raises(StopIteration):
        next(gen)
    with pytest.raises(ValueError, match="duplicates"):
        ray.wait([gen, gen])
