"""``max_calls``: a worker exits after running a function that many times (Ray's
default for GPU tasks is 1), releasing what it held; no task is lost with it."""

from __future__ import annotations

import collections
import os
from collections.abc import Iterator

import psutil
import pytest

import jray
from jray.testing import eventually

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def gpu_node() -> Iterator[None]:
    jray.init(num_cpus=1, num_gpus=1)  # one worker at a time: calls share it
    try:
        yield
    finally:
        jray.shutdown()


@jray.remote(max_calls=2)
def _pid(_: int = 0) -> int:
    return os.getpid()


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_the_worker_exits_after_max_calls(gpu_node: None) -> None:
    first, second = jray.get(_pid.remote(), timeout=60), jray.get(_pid.remote(), timeout=60)
    assert first == second  # the second call still runs on the same worker
    assert eventually(lambda: _gone(first), timeout=30)
    assert jray.get(_pid.remote(), timeout=60) != first


def test_many_tasks_over_retiring_workers_all_finish(gpu_node: None) -> None:
    @jray.remote(max_calls=3, max_retries=0)  # a lost task would fail
    def limited(_: int) -> int:
        return os.getpid()

    pids = jray.get([limited.remote(i) for i in range(40)], timeout=120)
    assert max(collections.Counter(pids).values()) <= 3


def test_gpu_tasks_release_the_gpu_each_call(gpu_node: None) -> None:
    @jray.remote(num_cpus=0)
    def inner() -> int:
        return 0

    @jray.remote(num_gpus=1, max_retries=0)  # max_calls defaults to 1 for GPU tasks
    def on_gpu() -> tuple[int, list[object]]:
        return os.getpid(), [inner.remote()]

    pids = [jray.get(on_gpu.remote(), timeout=60)[0] for _ in range(4)]
    assert len(set(pids)) == 4  # a fresh worker each time, and the GPU came back each time

    @jray.remote(num_gpus=1, max_calls=0)  # 0: no limit
    def unlimited() -> int:
        return os.getpid()

    first = jray.get(unlimited.remote(), timeout=60)
    assert jray.get(unlimited.remote(), timeout=60) == first


def test_max_calls_is_validated() -> None:
    with pytest.raises(ValueError, match="max_calls"):
        jray.remote(max_calls=-1)(lambda: 0)
    with pytest.raises(TypeError, match="max_calls"):
        jray.remote(max_calls="2")(lambda: 0)
    with pytest.raises(ValueError, match="not supported in '.options"):
        _pid.options(max_calls=1)  # as in Ray: only where the function is declared
