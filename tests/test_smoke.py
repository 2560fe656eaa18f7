"""End-to-end smoke test: init, a task DAG, put/get, shutdown."""

from __future__ import annotations

import numpy as np

import jray


def test_task_dag_and_objects(cluster: dict[str, object]) -> None:
    @jray.remote
    def inc(x: int) -> int:
        return x + 1

    ref = inc.remote(0)
    for _ in range(20):
        ref = inc.remote(ref)
    assert jray.get(ref, timeout=30) == 21
    assert jray.get([inc.remote(i) for i in range(100)], timeout=30) == list(range(1, 101))
    arr = np.arange(1_000_000, dtype=np.float64)
    out = jray.get(jray.put(arr), timeout=30)
    assert not out.flags.writeable
    np.testing.assert_array_equal(out, arr)
