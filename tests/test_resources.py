"""Resources: CPU exclusivity, fake GPUs with device ids, custom resources, infeasible tasks."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import jray
from jray.exceptions import GetTimeoutError, TaskCancelledError

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def gpu_cluster() -> Iterator[dict[str, Any]]:
    """2 CPUs, 2 declared (fake) GPUs and 2 units of a custom resource."""
    info = jray.init(num_cpus=2, num_gpus=2, resources={"accel": 2})
    try:
        yield info
    finally:
        jray.shutdown()


def _overlap(a: tuple[float, float], b: tuple[float, float]) -> float:
    return min(a[1], b[1]) - max(a[0], b[0])


@jray.remote
def _interval(seconds: float) -> tuple[float, float]:
    t0 = time.time()
    time.sleep(seconds)
    return t0, time.time()


def test_cluster_and_available_resources(gpu_cluster: dict[str, Any]) -> None:
    total = jray.cluster_resources()
    assert total == {"CPU": 2.0, "GPU": 2.0, "accel": 2.0}
    deadline = time.monotonic() + 10  # earlier tasks may still be releasing
    while jray.available_resources() != total and time.monotonic() < deadline:
        time.sleep(0.02)
    assert jray.available_resources() == total
    (node,) = jray.nodes()
    assert node["Alive"] and node["Resources"] == total
    assert node["NodeID"] == gpu_cluster["node_id"]


def test_available_resources_drop_while_a_task_runs(gpu_cluster: dict[str, Any],
                                                    tmp_path: Path) -> None:
    flag = tmp_path / "go"

    @jray.remote(num_gpus=1, resources={"accel": 1})
    def hold(path: str) -> None:
        deadline = time.monotonic() + 30
        while not os.path.exists(path) and time.monotonic() < deadline:
            time.sleep(0.01)

    ref = hold.remote(str(flag))
    deadline = time.monotonic() + 10
    avail = jray.available_resources()
    while avail.get("GPU") != 1.0 and time.monotonic() < deadline:
        time.sleep(0.02)
        avail = jray.available_resources()
    assert avail == {"CPU": 1.0, "GPU": 1.0, "accel": 1.0}
    flag.touch()
    jray.get(ref, timeout=30)


@pytest.mark.timeout(60)
def test_two_cpu_task_runs_alone(gpu_cluster: dict[str, Any]) -> None:
    big = _interval.options(num_cpus=2)
    refs = [_interval.remote(0.3), big.remote(0.3), _interval.remote(0.3), big.remote(0.3)]
    small1, big1, small2, big2 = jray.get(refs, timeout=50)
    for wide in (big1, big2):
        for other in (small1, small2, big1 if wide is big2 else big2):
            assert _overlap(wide, other) <= 0.01, (wide, other)
    # and two 1-CPU tasks do run at once on 2 CPUs
    a, b = jray.get([_interval.remote(0.5), _interval.remote(0.5)], timeout=50)
    assert _overlap(a, b) > 0.2


def test_gpu_task_sees_its_device_ids(gpu_cluster: dict[str, Any]) -> None:
    @jray.remote(num_gpus=1)
    def gpu_ids(seconds: float) -> tuple[list[int], str | None, float, float]:
        t0 = time.time()
        time.sleep(seconds)
        return jray.get_gpu_ids(), os.environ.get("CUDA_VISIBLE_DEVICES"), t0, time.time()

    (ids1, env1, *span1), (ids2, env2, *span2) = jray.get(
        [gpu_ids.remote(0.5), gpu_ids.remote(0.5)], timeout=30)
    assert len(ids1) == len(ids2) == 1 and ids1 != ids2
    assert {ids1[0], ids2[0]} <= {0, 1}
    assert env1 == str(ids1[0]) and env2 == str(ids2[0])
    assert _overlap((span1[0], span1[1]), (span2[0], span2[1])) > 0  # they did run at once
    assert jray.get_gpu_ids() == []  # the driver holds no GPU

    @jray.remote
    def no_gpu() -> tuple[list[int], str | None]:
        return jray.get_gpu_ids(), os.environ.get("CUDA_VISIBLE_DEVICES")

    ids, _ = jray.get(no_gpu.remote(), timeout=30)
    assert ids == []

    @jray.remote(num_gpus=2)
    def both() -> list[int]:
        return jray.get_gpu_ids()

    assert sorted(jray.get(both.remote(), timeout=30)) == [0, 1]


def test_custom_resource_limits_concurrency(gpu_cluster: dict[str, Any]) -> None:
    whole = _interval.options(resources={"accel": 2}, num_cpus=0)
    spans = jray.get([whole.remote(0.2) for _ in range(3)], timeout=30)
    for i, a in enumerate(spans):
        for b in spans[i + 1:]:
            assert _overlap(a, b) <= 0.01


def test_infeasible_task_warns_and_get_times_out(gpu_cluster: dict[str, Any]) -> None:
    @jray.remote(resources={"tpu": 1})
    def needs_tpu() -> int:
        return 1

    with pytest.warns(UserWarning, match=r"needs_tpu.*tpu"):
        ref = needs_tpu.remote()
        with pytest.raises(GetTimeoutError):
            jray.get(ref, timeout=0.5)
    with pytest.warns(UserWarning, match=r"wide.*CPU"):
        wide = _interval.options(num_cpus=4, name="wide").remote(0)
        with pytest.raises(GetTimeoutError):
            jray.get(wide, timeout=0.5)
    rows = {r["name"]: r for r in jray.state.list_tasks()}
    assert rows["needs_tpu"]["infeasible"] and rows["needs_tpu"]["state"] == "READY"
    for r in (ref, wide):
        jray.cancel(r)
        with pytest.raises(TaskCancelledError):
            jray.get(r, timeout=10)
    assert jray.get(_interval.remote(0), timeout=30)  # the cluster still works

