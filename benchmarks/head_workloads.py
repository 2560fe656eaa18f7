"""The head's CPU time per task (issue 16): what bounds one head's scheduling rate.

The head process's CPU counters (the run time of all its threads in
``/proc/<pid>/task/*/schedstat``, in ns; else user + system from psutil) are read
before and after a workload; their difference over the task count is the head's
CPU cost of one task, and 1 / that cost is the most tasks per second one head
could schedule if it did nothing else (the bound a cluster of many drivers and
nodes meets). Only jray has a head process to read (``Unsupported`` elsewhere).

- ``head_cpu_per_task_async``: over ``single_client_tasks_async``;
- ``head_cpu_per_task_sync``: over one-at-a-time tasks (submit, get, repeat).
"""

from __future__ import annotations

import time

from benchmarks._tasks import noop
from benchmarks.peers import Peer
from benchmarks.workloads import Measurement, Sizes, Workload


def _measure(peer: Peer, sizes: Sizes, sync: bool) -> Measurement:
    n = sizes.sync_tasks if sync else sizes.async_tasks
    peer.get_many([peer.submit(noop) for _ in range(min(sizes.warmup * 10, n))])
    time.sleep(0.2)  # the warm-up's reports reach the head before the counters are read
    before = peer.head_cpu_seconds()
    start = time.perf_counter()
    if sync:
        for _ in range(n):
            peer.get(peer.submit(noop))
    else:
        peer.get_many([peer.submit(noop) for _ in range(n)])
    elapsed = time.perf_counter() - start
    time.sleep(0.2)  # and this run's batched reports too (leased tasks' records)
    used = peer.head_cpu_seconds() - before
    per_task_us = used / n * 1e6
    bound = n / used if used > 0 else float("inf")
    return Measurement(per_task_us, f"head CPU {used * 1000:.1f} ms for {n} tasks in "
                                    f"{elapsed:.3f}s: bound {bound:,.0f} tasks/s per head")


def head_cpu_per_task_async(peer: Peer, sizes: Sizes) -> Measurement:
    return _measure(peer, sizes, sync=False)


def head_cpu_per_task_sync(peer: Peer, sizes: Sizes) -> Measurement:
    return _measure(peer, sizes, sync=True)


HEAD_WORKLOADS: tuple[Workload, ...] = (
    Workload(
        name="head_cpu_per_task_async",
        unit="us/task",
        higher_is_better=False,
        run=head_cpu_per_task_async,
        describe="head process CPU time per task over the async workload (jray only); "
                 "the detail gives the bound 1/cost in tasks/s",
    ),
    Workload(
        name="head_cpu_per_task_sync",
        unit="us/task",
        higher_is_better=False,
        run=head_cpu_per_task_sync,
        describe="the same over one-at-a-time tasks (submit, get, repeat)",
    ),
)
