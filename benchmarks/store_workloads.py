"""Object-store workloads (issue 4), written once against :class:`benchmarks.peers.Peer`.

- ``task_arg_100MiB_round_trip``: a 100 MiB array passed *by value* to a task
  that returns it; seconds from submit to the array back in the driver.
- ``small_objects_100k``: put 100,000 small objects, drop the refs; objects/s,
  with the driver's resident-memory growth in the detail (flat memory is the aim).

Spilling throughput needs a deliberately small store, so it has its own script:
``python -m benchmarks.spill``.
"""

from __future__ import annotations

import time

from benchmarks._tasks import identity
from benchmarks.peers import Peer
from benchmarks.workloads import MIB, Measurement, Sizes, Workload, _array


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def task_arg_100MiB_round_trip(peer: Peer, sizes: Sizes) -> Measurement:  # noqa: N802
    arr = _array(sizes.array_bytes)
    peer.get(peer.submit(identity, arr))  # warm-up (maps, imports numpy in workers)
    times = []
    for _ in range(sizes.get_repeats):
        start = time.perf_counter()
        back = peer.get(peer.submit(identity, arr))
        times.append(time.perf_counter() - start)
        if back.nbytes != arr.nbytes:
            raise AssertionError("the array came back with a different size")
        del back
    best = sorted(times)[len(times) // 2]
    return Measurement(best, f"median of {len(times)}: f.remote({arr.nbytes // MIB} MiB array) "
                             "returning it, then get")


def small_objects_100k(peer: Peer, sizes: Sizes) -> Measurement:
    n = sizes.put_calls * 10
    # A slow peer (~1,000 puts/s) would spend minutes here: bound it like the
    # other loops, with a longer budget since the count is the point.
    budget_s = sizes.budget_s * 4
    rss0 = _rss()
    done = 0
    start = time.perf_counter()
    deadline = start + budget_s
    for i in range(n):
        ref = peer.put(i)
        del ref
        done += 1
        if not done % 100 and time.perf_counter() > deadline:
            break
    elapsed = time.perf_counter() - start
    time.sleep(0.5)
    grew = (_rss() - rss0) / MIB
    cut = "" if done == n else f" (time budget {budget_s:g}s hit)"
    return Measurement(done / elapsed, f"{done} put+drop in {elapsed:.3f}s{cut}; "
                                       f"driver RSS grew {grew:.1f} MiB")


STORE_WORKLOADS: tuple[Workload, ...] = (
    Workload(
        name="task_arg_100MiB_round_trip",
        unit="s",
        higher_is_better=False,
        run=task_arg_100MiB_round_trip,
        describe="a 100 MiB array passed by value to a task that returns it, then got",
    ),
    Workload(
        name="small_objects_100k",
        unit="objects/s",
        higher_is_better=True,
        run=small_objects_100k,
        describe="100,000 put(i) with the refs dropped at once (memory should stay flat)",
    ),
)
