"""Tasks that submit tasks (issue 16): the one-at-a-time and chain workloads, run
from inside a task rather than from the driver.

A task's own tasks are where a head on the hot path costs most: each nested
submission is a round trip through the scheduler unless the submitting worker
leases workers itself. The figure is what the submitting task sees (its own
clock), so the outer task's start-up is not counted. Peers whose tasks cannot
submit tasks through the same API (dask, ``concurrent.futures``) are ``n/a``.
"""

from __future__ import annotations

from benchmarks._tasks import nested_chain, nested_one_at_a_time
from benchmarks.peers import Peer
from benchmarks.workloads import Measurement, Sizes, Workload


def nested_tasks_sync(peer: Peer, sizes: Sizes) -> Measurement:
    module = peer.nested_module()
    rate = float(peer.get(peer.submit(nested_one_at_a_time, module, sizes.sync_tasks)))
    return Measurement(rate, f"{sizes.sync_tasks} submit+get inside one task")


def nested_chain_500(peer: Peer, sizes: Sizes) -> Measurement:
    module = peer.nested_module()
    seconds = float(peer.get(peer.submit(nested_chain, module, sizes.chain)))
    return Measurement(seconds, f"{sizes.chain} dependent tasks submitted inside one task")


NESTED_WORKLOADS: tuple[Workload, ...] = (
    Workload(
        name="nested_tasks_sync",
        unit="tasks/s",
        higher_is_better=True,
        run=nested_tasks_sync,
        describe="inside a task: submit one no-op task, get it, repeat",
    ),
    Workload(
        name="nested_chain_500",
        unit="s",
        higher_is_better=False,
        run=nested_chain_500,
        describe="inside a task: x = f.remote(x) 500 times, then get(x)",
    ),
)
