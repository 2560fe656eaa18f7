"""The workloads, written once against :class:`benchmarks.peers.Peer`.

Names follow Ray's ``ray microbenchmark``. Each workload is a function
``(peer, sizes) -> Measurement``; :data:`WORKLOADS` lists them in run order.
``init_to_first_result`` must run first: it is the one that calls
``peer.init``. Count-based loops are also time-bounded by ``sizes.budget_s``
so a slow peer still finishes; the rate is computed over what actually ran.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from benchmarks._tasks import add, inc, leaf, noop
from benchmarks.peers import Peer

MIB = 1024 * 1024


@dataclass(frozen=True)
class Sizes:
    """How big each workload is; ``full()`` and ``quick()`` are the presets.

    ``num_cpus`` is the worker-process count given to every peer's init.
    """

    sync_tasks: int
    async_tasks: int
    put_calls: int
    get_calls: int
    array_bytes: int
    put_repeats: int
    get_repeats: int
    chain: int
    leaves: int
    budget_s: float
    warmup: int
    num_cpus: int = 2

    @staticmethod
    def full() -> Sizes:
        return Sizes(
            sync_tasks=2000,
            async_tasks=10_000,
            put_calls=10_000,
            get_calls=10_000,
            array_bytes=100 * MIB,
            put_repeats=5,
            get_repeats=5,
            chain=500,
            leaves=1024,
            budget_s=20.0,
            warmup=20,
        )

    @staticmethod
    def quick() -> Sizes:
        return Sizes(
            sync_tasks=200,
            async_tasks=1000,
            put_calls=1000,
            get_calls=1000,
            array_bytes=10 * MIB,
            put_repeats=3,
            get_repeats=3,
            chain=100,
            leaves=128,
            budget_s=5.0,
            warmup=5,
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Measurement:
    """One workload's result on one peer; ``detail`` says what was measured."""

    value: float
    detail: str


@dataclass(frozen=True)
class Workload:
    """A workload's name, unit, orientation and body."""

    name: str
    unit: str
    higher_is_better: bool
    run: Callable[[Peer, Sizes], Measurement]
    describe: str


def _timed_loop(op: Callable[[], object], n: int, budget_s: float) -> tuple[int, float]:
    """Call ``op`` up to ``n`` times or until ``budget_s`` passes; (calls, seconds)."""
    done = 0
    start = time.perf_counter()
    deadline = start + budget_s
    while done < n:
        op()
        done += 1
        # Checking the clock every call costs ~50 ns; negligible next to a task.
        if time.perf_counter() > deadline:
            break
    return done, time.perf_counter() - start


def _rate(op: Callable[[], object], n: int, sizes: Sizes, what: str) -> Measurement:
    for _ in range(min(sizes.warmup, n)):
        op()
    done, elapsed = _timed_loop(op, n, sizes.budget_s)
    cut = "" if done == n else f" (time budget {sizes.budget_s:g}s hit)"
    return Measurement(done / elapsed, f"{done} {what} in {elapsed:.3f}s{cut}")


def _array(nbytes: int) -> Any:
    """An int64 numpy array of ``nbytes`` real, touched bytes (not lazily-zeroed pages)."""
    import numpy as np  # imported here so the task-only workloads run without numpy

    return np.arange(nbytes // 8, dtype=np.int64)


def init_to_first_result(peer: Peer, sizes: Sizes) -> Measurement:
    start = time.perf_counter()
    peer.init(sizes.num_cpus)
    peer.get(peer.submit(noop))
    elapsed = time.perf_counter() - start
    return Measurement(elapsed, f"init(num_cpus={sizes.num_cpus}) + first no-op task")


def single_client_tasks_sync(peer: Peer, sizes: Sizes) -> Measurement:
    return _rate(lambda: peer.get(peer.submit(noop)), sizes.sync_tasks, sizes, "submit+get")


def single_client_tasks_async(peer: Peer, sizes: Sizes) -> Measurement:
    peer.get_many([peer.submit(noop) for _ in range(min(sizes.warmup * 10, sizes.async_tasks))])
    n = sizes.async_tasks
    start = time.perf_counter()
    refs = [peer.submit(noop) for _ in range(n)]
    submitted = time.perf_counter() - start
    peer.get_many(refs)
    elapsed = time.perf_counter() - start
    return Measurement(n / elapsed, f"{n} tasks in {elapsed:.3f}s (submit {submitted:.3f}s)")


def single_client_tasks_async_watched(peer: Peer, sizes: Sizes) -> Measurement:
    """``single_client_tasks_async`` while a live-view subscriber (another process,
    applying every delta to a ``ViewModel`` every 200 ms, as the views do) watches."""
    from benchmarks.watcher import Watcher

    with Watcher(peer.event_stream_address()) as watcher:
        m = single_client_tasks_async(peer, sizes)
        time.sleep(0.5)  # let it take the last deltas
    seen = watcher.result()
    return Measurement(m.value, f"{m.detail}; the subscriber saw {seen['tasks_seen']} "
                                f"tasks in {seen['items']} deltas, using "
                                f"{seen.get('take_cpu_s', 0):.3f} s CPU to receive them and "
                                f"{seen.get('apply_cpu_s', 0):.3f} s to apply them")


def single_client_put_calls(peer: Peer, sizes: Sizes) -> Measurement:
    return _rate(lambda: peer.put(0), sizes.put_calls, sizes, "put(0)")


def single_client_get_calls(peer: Peer, sizes: Sizes) -> Measurement:
    ref = peer.put(0)
    return _rate(lambda: peer.get(ref), sizes.get_calls, sizes, "get(small)")


def single_client_put_gigabytes(peer: Peer, sizes: Sizes) -> Measurement:
    arr = _array(sizes.array_bytes)
    peer.put(arr)  # warm-up; the ref is dropped at once
    total = 0.0
    for _ in range(sizes.put_repeats):
        start = time.perf_counter()
        ref = peer.put(arr)
        total += time.perf_counter() - start
        del ref
    gb = arr.nbytes * sizes.put_repeats / 1e9
    mib = arr.nbytes // MIB
    return Measurement(gb / total, f"{sizes.put_repeats} x put({mib} MiB) in {total:.3f}s")


def get_100MiB(peer: Peer, sizes: Sizes) -> Measurement:  # noqa: N802 (Ray's name)
    arr = _array(sizes.array_bytes)
    ref = peer.put(arr)
    del arr
    first = peer.get(ref)  # warm-up: the first get may map or fetch the object
    if first.nbytes != sizes.array_bytes:
        raise AssertionError(f"got {first.nbytes} bytes, expected {sizes.array_bytes}")
    del first
    times: list[float] = []
    for _ in range(sizes.get_repeats):
        start = time.perf_counter()
        value = peer.get(ref)
        times.append(time.perf_counter() - start)
        del value
    mib = sizes.array_bytes // MIB
    ms = statistics.median(times) * 1000.0
    return Measurement(ms, f"median of {sizes.get_repeats} gets of a {mib} MiB array")


def chain_500(peer: Peer, sizes: Sizes) -> Measurement:
    start = time.perf_counter()
    x: Any = peer.submit(inc, 0)
    for _ in range(sizes.chain - 1):
        x = peer.submit(inc, x)
    result = peer.get(x)
    elapsed = time.perf_counter() - start
    if result != sizes.chain:
        raise AssertionError(f"chain returned {result}, expected {sizes.chain}")
    return Measurement(elapsed, f"{sizes.chain} dependent tasks")


def tree_reduce_1024(peer: Peer, sizes: Sizes) -> Measurement:
    start = time.perf_counter()
    level: list[Any] = [peer.submit(leaf, i) for i in range(sizes.leaves)]
    while len(level) > 1:
        paired = [peer.submit(add, level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    result = peer.get(level[0])
    elapsed = time.perf_counter() - start
    expected = sizes.leaves * (sizes.leaves - 1) // 2
    if result != expected:
        raise AssertionError(f"tree reduce returned {result}, expected {expected}")
    return Measurement(elapsed, f"{sizes.leaves} leaves, {sizes.leaves - 1} add tasks")


WORKLOADS: tuple[Workload, ...] = (
    Workload(
        name="init_to_first_result",
        unit="s",
        higher_is_better=False,
        run=init_to_first_result,
        describe="seconds from init() (cluster start included) to the first task's result",
    ),
    Workload(
        name="single_client_tasks_sync",
        unit="tasks/s",
        higher_is_better=True,
        run=single_client_tasks_sync,
        describe="submit one no-op task, get it, repeat",
    ),
    Workload(
        name="single_client_tasks_async",
        unit="tasks/s",
        higher_is_better=True,
        run=single_client_tasks_async,
        describe="submit N no-op tasks, then get them all",
    ),
    Workload(
        name="single_client_tasks_async_watched",
        unit="tasks/s",
        higher_is_better=True,
        run=single_client_tasks_async_watched,
        describe="the same, with one live-view subscriber attached (jray only)",
    ),
    Workload(
        name="single_client_put_calls",
        unit="calls/s",
        higher_is_better=True,
        run=single_client_put_calls,
        describe="put(0) in a loop, refs dropped",
    ),
    Workload(
        name="single_client_get_calls",
        unit="calls/s",
        higher_is_better=True,
        run=single_client_get_calls,
        describe="get() of one small stored object in a loop",
    ),
    Workload(
        name="single_client_put_gigabytes",
        unit="GB/s",
        higher_is_better=True,
        run=single_client_put_gigabytes,
        describe="put() of a 100 MiB int64 array, refs dropped between puts (GB = 1e9 bytes)",
    ),
    Workload(
        name="get_100MiB",
        unit="ms",
        higher_is_better=False,
        run=get_100MiB,
        describe="get() of a stored 100 MiB array (median; zero-copy where supported)",
    ),
    Workload(
        name="chain_500",
        unit="s",
        higher_is_better=False,
        run=chain_500,
        describe="x = f.remote(x) 500 times, then get(x)",
    ),
    Workload(
        name="tree_reduce_1024",
        unit="s",
        higher_is_better=False,
        run=tree_reduce_1024,
        describe="1,024 leaf tasks summed by a binary tree of add tasks, then get(root)",
    ),
)

WORKLOAD_NAMES: tuple[str, ...] = tuple(w.name for w in WORKLOADS)

# The object-store workloads live in their own module; appended here so the
# runner sees one list.
from benchmarks.actor_workloads import ACTOR_WORKLOADS  # noqa: E402
from benchmarks.head_workloads import HEAD_WORKLOADS  # noqa: E402
from benchmarks.nested_workloads import NESTED_WORKLOADS  # noqa: E402
from benchmarks.store_workloads import STORE_WORKLOADS  # noqa: E402

WORKLOADS = WORKLOADS + NESTED_WORKLOADS + STORE_WORKLOADS + ACTOR_WORKLOADS + HEAD_WORKLOADS
WORKLOAD_NAMES = tuple(w.name for w in WORKLOADS)
