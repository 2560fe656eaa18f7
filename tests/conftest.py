"""Shared fixtures: a local cluster per test module, and leak checks after each test."""

from __future__ import annotations

import glob
import os
import time
from collections.abc import Iterator

import pytest

import jray
from jray._private.cluster import STARTED
from jray.testing import jray_processes


def _leftovers() -> list[str]:
    """Segments, socket files and session directories of clusters this process started.

    Only this process's own sessions are looked at, so that other test runs on
    the same machine cannot make a test fail.
    """
    left: list[str] = []
    for cl in STARTED:
        left += glob.glob(f"/dev/shm/{glob.escape(cl.shm_prefix)}*")
        left += glob.glob(os.path.join(glob.escape(cl.session_dir), "*.sock"))
        if os.path.exists(cl.session_dir):
            left.append(cl.session_dir)
    return left


def assert_clean(before_shm: set[str] | None = None) -> None:
    """Wait (bounded) for jray processes, segments and sockets to go; fail if any remain."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (jray_processes() or _leftovers()):
        time.sleep(0.05)
    procs = jray_processes()
    assert not procs, f"jray processes outlived the test: {[p.cmdline() for p in procs]}"
    left = _leftovers()
    assert not left, f"files outlived the test (shared memory, sockets, session dir): {left}"


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """After a test that ran no cluster of its own, no jray process or file may remain."""
    yield
    if not jray.is_initialized():  # a module-scoped cluster is checked when it stops
        assert_clean()


@pytest.fixture(scope="module")
def cluster() -> Iterator[dict[str, object]]:
    """A 2-CPU local cluster shared by the tests of one module."""
    info = jray.init(num_cpus=2)
    try:
        yield info
    finally:
        jray.shutdown()
        assert_clean()
