"""Actor workloads (issue 3), named and shaped like Ray's ``ray microbenchmark``.

- ``1_1_actor_calls_sync``: one caller, one actor: call, get, repeat.
- ``1_1_actor_calls_async``: 10,000 calls to one actor, then get them all.
- ``1_1_actor_calls_concurrent``: the same on an actor with ``max_concurrency=16``.
- ``1_1_async_actor_calls_async``: the same on an actor with an ``async def`` method.
- ``n_n_actor_calls_async``: 4 tasks, each calling ``num_cpus // 2`` actors
  round-robin 5,000 times and getting the results (actor calls from workers).
- ``generator_items_streamed``: one generator task yields 10,000 small values;
  the driver takes each ref as it becomes ready and gets it (items/s).

Actors are started and warmed up (one call) before the clock starts.
"""

from __future__ import annotations

import time
from typing import Any

from benchmarks._tasks import Actor, AsyncActor, call_actors, count_items
from benchmarks.peers import Peer
from benchmarks.workloads import Measurement, Sizes, Workload, _rate

N_N_TASKS = 4


def _ready(peer: Peer, handles: list[Any]) -> None:
    peer.get_many([peer.call(h, "small_value") for h in handles])


def _batch(peer: Peer, sizes: Sizes, cls: type, **options: Any) -> Measurement:
    a = peer.actor(cls, **options)
    _ready(peer, [a])
    peer.get_many([peer.call(a, "small_value") for _ in range(min(sizes.warmup * 10,
                                                                   sizes.async_tasks))])
    n = sizes.async_tasks
    start = time.perf_counter()
    refs = [peer.call(a, "small_value") for _ in range(n)]
    submitted = time.perf_counter() - start
    peer.get_many(refs)
    elapsed = time.perf_counter() - start
    return Measurement(n / elapsed, f"{n} calls in {elapsed:.3f}s (submit {submitted:.3f}s)")


def actor_calls_sync(peer: Peer, sizes: Sizes) -> Measurement:
    a = peer.actor(Actor)
    _ready(peer, [a])
    return _rate(lambda: peer.get(peer.call(a, "small_value")), sizes.sync_tasks, sizes,
                 "call+get")


def actor_calls_async(peer: Peer, sizes: Sizes) -> Measurement:
    return _batch(peer, sizes, Actor)


def actor_calls_concurrent(peer: Peer, sizes: Sizes) -> Measurement:
    return _batch(peer, sizes, Actor, max_concurrency=16)


def async_actor_calls_async(peer: Peer, sizes: Sizes) -> Measurement:
    return _batch(peer, sizes, AsyncActor)


def n_n_actor_calls_async(peer: Peer, sizes: Sizes) -> Measurement:
    actors = [peer.actor(Actor) for _ in range(max(1, sizes.num_cpus // 2))]
    _ready(peer, actors)
    per_task = sizes.async_tasks // 2
    peer.get(peer.submit(call_actors, actors, 10, peer.name))  # warm-up: workers up
    start = time.perf_counter()
    peer.get_many([peer.submit(call_actors, actors, per_task, peer.name)
                   for _ in range(N_N_TASKS)])
    elapsed = time.perf_counter() - start
    total = per_task * N_N_TASKS
    return Measurement(total / elapsed, f"{N_N_TASKS} tasks x {per_task} calls to "
                                        f"{len(actors)} actor(s) in {elapsed:.3f}s")


def generator_items_streamed(peer: Peer, sizes: Sizes) -> Measurement:
    for ref in peer.stream(count_items, 10):  # warm-up: a worker up, the code shipped
        peer.get(ref)
    n = sizes.async_tasks
    start = time.perf_counter()
    total = 0
    for ref in peer.stream(count_items, n):
        total += peer.get(ref)
    elapsed = time.perf_counter() - start
    if total != n * (n - 1) // 2:
        raise AssertionError(f"the generator's items summed to {total}")
    return Measurement(n / elapsed, f"{n} items in {elapsed:.3f}s")


ACTOR_WORKLOADS: tuple[Workload, ...] = (
    Workload(
        name="1_1_actor_calls_sync",
        unit="calls/s",
        higher_is_better=True,
        run=actor_calls_sync,
        describe="call a no-op actor method, get the result, repeat",
    ),
    Workload(
        name="1_1_actor_calls_async",
        unit="calls/s",
        higher_is_better=True,
        run=actor_calls_async,
        describe="10,000 calls to one actor, then get them all",
    ),
    Workload(
        name="1_1_actor_calls_concurrent",
        unit="calls/s",
        higher_is_better=True,
        run=actor_calls_concurrent,
        describe="10,000 calls to one actor with max_concurrency=16, then get them all",
    ),
    Workload(
        name="1_1_async_actor_calls_async",
        unit="calls/s",
        higher_is_better=True,
        run=async_actor_calls_async,
        describe="10,000 calls to an async def method of one actor, then get them all",
    ),
    Workload(
        name="n_n_actor_calls_async",
        unit="calls/s",
        higher_is_better=True,
        run=n_n_actor_calls_async,
        describe="4 tasks each call num_cpus/2 actors 5,000 times, then get their results",
    ),
    Workload(
        name="generator_items_streamed",
        unit="items/s",
        higher_is_better=True,
        run=generator_items_streamed,
        describe="one generator task yields 10,000 values; take and get each as it is ready",
    ),
)
