"""A result is ready for its owner when its task ends, even when the worker goes on
with a long task that the head queued behind it (a fast function's slow call)."""

from __future__ import annotations

import time

import pytest

import jray

pytestmark = pytest.mark.integration


@pytest.mark.timeout(120)
def test_wait_sees_a_result_before_the_next_queued_task_ends() -> None:
    jray.init(num_cpus=1)  # one worker: the head queues the second call behind the first
    try:
        @jray.remote
        def pause(seconds: float) -> float:
            time.sleep(seconds)
            return seconds

        jray.get([pause.remote(0) for _ in range(8)], timeout=60)  # known to be fast now
        for _ in range(3):
            quick, slow = pause.remote(0), pause.remote(3)
            t0 = time.monotonic()
            ready, rest = jray.wait([quick, slow], num_returns=2, timeout=2.0)
            assert ready == [quick] and rest == [slow], time.monotonic() - t0
            assert jray.get(slow, timeout=60) == 3
    finally:
        jray.shutdown()
