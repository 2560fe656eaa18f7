"""GPU ids when the node was started with its own ``CUDA_VISIBLE_DEVICES`` (as in Ray,
a task's ids index that list, which may hold device UUIDs)."""

from __future__ import annotations

import os

import pytest

import jray

pytestmark = pytest.mark.integration


@pytest.mark.timeout(120)
def test_gpu_ids_index_the_preset_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "uuid-a,uuid-b")
    jray.init(num_cpus=1, num_gpus=2)
    try:
        @jray.remote(num_gpus=1)
        def one() -> tuple[list[object], str | None, list[str]]:
            ids = jray.get_runtime_context().get_accelerator_ids()["GPU"]
            return jray.get_gpu_ids(), os.environ.get("CUDA_VISIBLE_DEVICES"), ids

        @jray.remote(num_gpus=2)
        def both() -> list[object]:
            return jray.get_gpu_ids()

        @jray.remote
        def none() -> list[object]:
            return jray.get_gpu_ids()

        ids, env, acc = jray.get(one.remote(), timeout=60)
        assert len(ids) == 1 and ids[0] in ("uuid-a", "uuid-b")
        assert env == ids[0] and acc == ids
        assert sorted(jray.get(both.remote(), timeout=60)) == ["uuid-a", "uuid-b"]
        assert jray.get(none.remote(), timeout=60) == []
    finally:
        jray.shutdown()


@pytest.mark.timeout(120)
def test_neuron_cores_get_device_ids_like_gpus() -> None:
    jray.init(num_cpus=2, num_gpus=1, resources={"neuron_cores": 2})
    try:
        @jray.remote(resources={"neuron_cores": 1}, num_cpus=0)
        def one(seconds: float) -> tuple[list[str], str | None, list[str]]:
            import time

            time.sleep(seconds)  # both run at once: each holds its own core
            ids = jray.get_runtime_context().get_accelerator_ids()
            return ids["neuron_cores"], os.environ.get("NEURON_RT_VISIBLE_CORES"), ids["GPU"]

        a, b = jray.get([one.remote(0.5), one.remote(0.5)], timeout=60)
        assert {a[0][0], b[0][0]} == {"0", "1"} and len(a[0]) == len(b[0]) == 1
        assert a[1] == a[0][0] and a[2] == []  # shown in its variable; no GPU held

        @jray.remote(resources={"neuron_cores": 2}, num_gpus=1)
        def both() -> dict[str, list[str]]:
            return jray.get_runtime_context().get_accelerator_ids()

        ids = jray.get(both.remote(), timeout=60)
        assert sorted(ids["neuron_cores"]) == ["0", "1"] and ids["GPU"] == ["0"]
        assert ids["TPU"] == []
        assert jray.get_runtime_context().get_accelerator_ids()["neuron_cores"] == []
    finally:
        jray.shutdown()


@pytest.mark.timeout(120)
def test_tasks_and_actors_holding_no_gpu_see_none() -> None:
    """As in Ray: on a node with GPUs, what asks for none sees CUDA_VISIBLE_DEVICES
    empty (a framework then finds no device), and a GPU task sees its own."""
    jray.init(num_cpus=2, num_gpus=2)
    try:
        @jray.remote
        def env() -> str | None:
            return os.environ.get("CUDA_VISIBLE_DEVICES")

        @jray.remote(num_gpus=1)
        def gpu_env() -> str | None:
            return os.environ.get("CUDA_VISIBLE_DEVICES")

        @jray.remote
        class Plain:
            def env(self) -> str | None:
                return os.environ.get("CUDA_VISIBLE_DEVICES")

        assert jray.get([env.remote() for _ in range(4)], timeout=60) == [""] * 4
        assert jray.get(gpu_env.remote(), timeout=60) in ("0", "1")
        assert jray.get([env.remote() for _ in range(4)], timeout=60) == [""] * 4
        assert jray.get(Plain.remote().env.remote(), timeout=60) == ""  # type: ignore[attr-defined]
    finally:
        jray.shutdown()
    jray.init(num_cpus=1)  # a node without GPUs leaves the variable alone
    try:
        @jray.remote
        def env_here() -> str | None:
            return os.environ.get("CUDA_VISIBLE_DEVICES")

        assert jray.get(env_here.remote(), timeout=60) == os.environ.get("CUDA_VISIBLE_DEVICES")
    finally:
        jray.shutdown()
