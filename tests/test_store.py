"""The object store under memory pressure: capacity, spilling, restore, lost objects."""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator

import numpy as np
import pytest

import jray
from jray.exceptions import ObjectLostError, ObjectStoreFullError
from jray.testing import eventually

MiB = 1 << 20


def _shm_bytes(prefix: str) -> int:
    return sum(os.path.getsize(p) for p in glob.glob(f"/dev/shm/{prefix}*"))


def _spill_bytes(spill_dir: str) -> int:
    return sum(os.path.getsize(p) for p in glob.glob(f"{spill_dir}/jray-spill-*/*"))


def _store() -> dict[str, int]:
    return next(iter(jray.state.store_summary().values()))


@pytest.fixture()
def small_store(tmp_path: object) -> Iterator[dict[str, object]]:
    spill_dir = str(tmp_path)
    info = jray.init(num_cpus=2, object_store_memory=512 * MiB, spill_dir=spill_dir)
    info = {**info, "spill_dir": spill_dir,
            "prefix": "jray-" + str(info["session_dir"]).rsplit("/", 1)[-1].split("-")[1]}
    try:
        yield info
    finally:
        jray.shutdown()


@pytest.mark.timeout(300)
def test_4gib_through_a_512mib_store(small_store: dict[str, object]) -> None:
    prefix = str(small_store["prefix"])
    spill_dir = str(small_store["spill_dir"])
    n, size = 64, 64 * MiB  # 4 GiB in all
    refs = []
    for i in range(n):
        arr = np.full(size // 8, i, dtype=np.int64)
        arr[::4096] = np.arange(arr[::4096].size) + i
        refs.append(jray.put(arr))
        del arr
        assert _shm_bytes(prefix) <= 512 * MiB + size  # bounded by the capacity (+1 in flight)
    stats = _store()
    assert stats["spills"] >= n - 8 and stats["spilled_bytes"] >= (n - 8) * size
    assert _spill_bytes(spill_dir) >= (n - 8) * size
    for i, ref in enumerate(refs):  # every array comes back bit for bit
        got = jray.get(ref, timeout=60)
        assert got.shape == (size // 8,) and int(got[1]) == i
        np.testing.assert_array_equal(got[::4096], np.arange(got[::4096].size) + i)
        del got
    assert _store()["restores"] >= n - 8
    del refs, ref
    assert eventually(lambda: _shm_bytes(prefix) == 0 and _spill_bytes(spill_dir) == 0, timeout=15)
    assert eventually(lambda: _store()["used"] == 0 and _store()["spilled_bytes"] == 0, timeout=15)


def test_task_output_spilled_then_used_by_task(small_store: dict[str, object]) -> None:
    @jray.remote
    def make(i: int) -> np.ndarray:
        return np.full(48 * MiB // 8, i, dtype=np.int64)

    @jray.remote
    def first(a: np.ndarray) -> int:
        return int(a[0])

    refs = [make.remote(i) for i in range(16)]  # 768 MiB of results
    assert jray.get([first.remote(r) for r in refs], timeout=120) == list(range(16))
    assert _store()["spills"] > 0


def test_put_larger_than_store_raises(small_store: dict[str, object]) -> None:
    with pytest.raises(ObjectStoreFullError, match="larger than the whole object store"):
        jray.put(np.zeros(600 * MiB // 8))
    assert jray.get(jray.put(1)) == 1  # the cluster still works


def test_live_array_is_never_spilled(small_store: dict[str, object]) -> None:
    pinned = jray.get(jray.put(np.full(100 * MiB // 8, 7, dtype=np.int64)))
    keep = [jray.put(np.zeros(100 * MiB // 8)) for _ in range(8)]  # forces spilling
    assert int(pinned[123]) == 7 and not pinned.flags.writeable
    assert len(keep) == 8


def test_tree_reduce(small_store: dict[str, object]) -> None:
    from jray.util.tree_reduce import tree_reduce

    @jray.remote
    def leaf(i: int) -> np.ndarray:
        return np.full(4, i)

    leaves = [leaf.remote(i) for i in range(100)]
    total = tree_reduce(lambda a, b, c=0: a + b + c, leaves, fanout=3)
    assert int(jray.get(total, timeout=60)[0]) == sum(range(100))
    unordered = tree_reduce(lambda a, b: a + b, leaves, ordered=False)
    assert int(jray.get(unordered, timeout=60)[0]) == sum(range(100))
    with pytest.raises(ValueError, match="fanout"):
        tree_reduce(lambda a, b: a, leaves, fanout=1)
    with pytest.raises(TypeError, match=r"refs\[0\]"):
        tree_reduce(lambda a, b: a, [1, 2])  # type: ignore[list-item]


def test_lost_put_object_and_rebuilt_task_output(small_store: dict[str, object]) -> None:
    prefix = str(small_store["prefix"])
    ref = jray.put(np.ones(2 * MiB))
    for path in glob.glob(f"/dev/shm/{prefix}-{ref.hex()}"):
        os.unlink(path)
    with pytest.raises(ObjectLostError, match="put objects cannot be rebuilt"):
        jray.get(ref, timeout=30)

    @jray.remote
    def make() -> np.ndarray:
        return np.arange(2 * MiB, dtype=np.float64)

    out = make.remote()
    assert jray.get(out, timeout=30)[5] == 5.0
    for path in glob.glob(f"/dev/shm/{prefix}-{out.hex()}"):
        os.unlink(path)  # lose it: the head re-runs make() (lineage)
    again = jray.get(out, timeout=30)
    assert again[-1] == 2 * MiB - 1
    events = [r for r in jray.state.list_tasks() if r["name"] == "make"][0]["events"]
    assert "RECONSTRUCTING" in [e["state"] for e in events]

    @jray.remote(max_retries=0)
    def once() -> np.ndarray:
        return np.ones(2 * MiB)

    gone = once.remote()
    jray.get(gone, timeout=30)
    for path in glob.glob(f"/dev/shm/{prefix}-{gone.hex()}"):
        os.unlink(path)
    with pytest.raises(ObjectLostError, match="max_retries=0"):
        jray.get(gone, timeout=30)
