"""The futures of refs across a session's life: cancelled, failed at shutdown, renewed."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import jray
from jray._private import ref_futures
from jray.exceptions import ClusterError, InitError
from jray.testing import eventually

pytestmark = pytest.mark.integration


@jray.remote
def wait_for(path: str, value: Any = None) -> Any:
    deadline = time.monotonic() + 30
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.01)
    return value


def _waiter_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "jray-ref-futures"]


def test_pending_futures_fail_when_the_session_ends(tmp_path: Path) -> None:
    jray.init(num_cpus=1)
    try:
        ref = wait_for.remote(str(tmp_path / "never"))
        fut = ref.future()
        assert not fut.done()
    finally:
        jray.shutdown()
    err = fut.exception(timeout=10)
    assert isinstance(err, ClusterError) and "shutdown" in str(err)
    assert eventually(lambda: not _waiter_threads(), timeout=10), "the waiter thread lived on"
    with pytest.raises(InitError, match="session has ended"):
        ref.future()  # a ref that outlived its session does not start a new cluster
    assert not jray.is_initialized()


def test_a_cancelled_future_is_forgotten_and_a_new_session_gets_a_new_waiter(
        tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    jray.init(num_cpus=1)
    try:
        fut = wait_for.remote(str(gate), 1).future()
        assert fut.cancel()
        waiter = ref_futures._waiter
        assert waiter is not None
        assert eventually(lambda: not waiter.pending, timeout=10)
        gate.touch()
        assert asyncio.run(asyncio.wait_for(_await(wait_for.remote(str(gate), 2)), 30)) == 2
    finally:
        jray.shutdown()
    jray.init(num_cpus=1)
    try:
        assert asyncio.run(asyncio.wait_for(_await(jray.put("again")), 30)) == "again"
        assert ref_futures._waiter is not waiter
    finally:
        jray.shutdown()


async def _await(ref: Any) -> Any:
    return await ref
