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


#: Ray's memory resources, reported by every node beside CPU, GPU and custom ones
MEMORY_KEYS = ("memory", "object_store_memory")


def _without_memory(res: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in res.items() if k not in MEMORY_KEYS}


def test_cluster_and_available_resources(gpu_cluster: dict[str, Any]) -> None:
    total = jray.cluster_resources()
    assert _without_memory(total) == {"CPU": 2.0, "GPU": 2.0, "accel": 2.0}
    assert total["memory"] > 0
    assert total["object_store_memory"] == float(gpu_cluster["object_store_memory"])
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
    assert _without_memory(avail) == {"CPU": 1.0, "GPU": 1.0, "accel": 1.0}
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



def _settled_available(want: dict[str, float]) -> dict[str, float]:
    deadline = time.monotonic() + 10  # finished tasks may still be releasing
    avail = jray.available_resources()
    while avail != want and time.monotonic() < deadline:
        time.sleep(0.02)
        avail = jray.available_resources()
    return avail


def test_memory_option_is_held_while_the_task_runs(gpu_cluster: dict[str, Any]) -> None:
    @jray.remote(memory=100 * 2**20)
    def seen() -> float:
        return jray.available_resources()["memory"]

    total = jray.cluster_resources()["memory"]

    def seen_alone(fn: Any, held: int) -> float:
        # an idle lease of an earlier task counts as held until the head hears that
        # task ended (it hears of leased tasks in batches): ask again, a bounded number
        # of times, until only this task holds memory
        for _ in range(20):
            got = float(jray.get(fn.remote(), timeout=30))
            if got == total - held:
                break
            time.sleep(0.1)
        return got

    assert seen_alone(seen, 100 * 2**20) == total - 100 * 2**20
    assert seen_alone(seen.options(memory=10 * 2**20), 10 * 2**20) == total - 10 * 2**20
    with pytest.raises(ValueError, match="memory="):
        _interval.options(resources={"memory": 1})


def test_exhausted_resources_are_left_out(gpu_cluster: dict[str, Any]) -> None:
    @jray.remote(num_cpus=2, num_gpus=2, resources={"accel": 2})
    def everything() -> dict[str, float]:
        return jray.available_resources()

    assert _without_memory(jray.get(everything.remote(), timeout=30)) == {}


def test_fractions_taken_and_given_back_leave_no_drift(gpu_cluster: dict[str, Any]) -> None:
    total = jray.cluster_resources()
    assert _settled_available(total) == total
    rng = __import__("random").Random(7)
    refs = []
    for _ in range(20):
        cpu, gpu, accel = (rng.randint(1, 9999) / 10000 for _ in range(3))
        refs.append(_interval.options(num_cpus=cpu, num_gpus=gpu,
                                      resources={"accel": accel}).remote(0))
    jray.get(refs, timeout=60)
    assert _settled_available(total) == total


def test_assigned_resources_and_accelerator_ids(gpu_cluster: dict[str, Any]) -> None:
    @jray.remote
    def assigned() -> tuple[dict[str, float], dict[str, list[str]], list[Any]]:
        ctx = jray.get_runtime_context()
        return ctx.get_assigned_resources(), ctx.get_accelerator_ids(), jray.get_gpu_ids()

    res, acc, ids = jray.get(assigned.remote(), timeout=30)
    assert res == {"CPU": 1.0} and acc["GPU"] == [] and ids == []
    res, acc, ids = jray.get(assigned.options(
        num_cpus=0.5, num_gpus=1, resources={"accel": 0.25}).remote(), timeout=30)
    assert res == {"CPU": 0.5, "GPU": 1.0, "accel": 0.25}
    assert len(ids) == 1 and acc["GPU"] == [str(ids[0])]
    assert jray.get_runtime_context().get_assigned_resources() == {}  # the driver


@jray.remote
class _Holder:
    def assigned(self) -> dict[str, float]:
        return jray.get_runtime_context().get_assigned_resources()


def test_actor_assigned_resources(gpu_cluster: dict[str, Any]) -> None:
    light = _Holder.remote()  # holds no CPU while it lives (as in Ray)
    heavy = _Holder.options(num_cpus=1, resources={"accel": 1}).remote()
    assert jray.get(light.assigned.remote(), timeout=30) == {}
    assert jray.get(heavy.assigned.remote(), timeout=30) == {"CPU": 1.0, "accel": 1.0}
    for a in (light, heavy):
        jray.kill(a)
