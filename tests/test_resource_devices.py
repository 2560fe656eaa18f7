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
