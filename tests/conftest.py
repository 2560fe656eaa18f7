"""Shared fixtures: a local cluster per test module, and leak checks after each test."""

from __future__ import annotations

import glob
import os
import time
from collections.abc import Iterator

import psutil
import pytest

import jray


def _jray_children() -> list[psutil.Process]:
    out = []
    for p in psutil.Process().children(recursive=True):
        try:
            if any("jray._private" in part for part in p.cmdline()):
                out.append(p)
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            pass
    return out


def _jray_shm() -> list[str]:
    return glob.glob("/dev/shm/jray-*")


def assert_clean(before_shm: set[str] | None = None) -> None:
    """Wait (bounded) for jray processes, segments and sockets to go; fail if any remain."""
    before_shm = before_shm or set()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (_jray_children() or set(_jray_shm()) - before_shm):
        time.sleep(0.05)
    procs = _jray_children()
    assert not procs, f"jray processes outlived the test: {[p.cmdline() for p in procs]}"
    left = set(_jray_shm()) - before_shm
    assert not left, f"shared-memory segments outlived the test: {sorted(left)}"
    socks = glob.glob(os.path.join(os.environ.get("TMPDIR", "/tmp"), "jray-*", "*.sock"))
    assert not socks, f"socket files outlived the test: {socks}"


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """After a test that ran no cluster of its own, no jray process or file may remain."""
    before_shm = set(_jray_shm())
    yield
    if not jray.is_initialized():  # a module-scoped cluster is checked when it stops
        assert_clean(before_shm)


@pytest.fixture(scope="module")
def cluster() -> Iterator[dict[str, object]]:
    """A 2-CPU local cluster shared by the tests of one module."""
    info = jray.init(num_cpus=2)
    try:
        yield info
    finally:
        jray.shutdown()
        assert_clean()
