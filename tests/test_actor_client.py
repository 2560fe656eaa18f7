"""The actor client over its ledger, with real processes: back-pressure and kill notices."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

import jray
from jray.exceptions import ActorDiedError, PendingCallsLimitExceeded

pytestmark = pytest.mark.integration
T = 30  # every get in this module is bounded


@jray.remote
class Gate:
    def wait_for(self, path: str) -> str:
        deadline = time.monotonic() + T
        while not os.path.exists(path):
            if time.monotonic() > deadline:
                raise TimeoutError(path)
            time.sleep(0.01)
        return path

    def ping(self) -> str:
        return "pong"


def test_max_pending_calls_raises_until_results_arrive(cluster: dict[str, object],
                                                      tmp_path: Path) -> None:
    gate = Gate.options(max_pending_calls=2).remote()
    door = str(tmp_path / "open")
    pending = [gate.wait_for.remote(door), gate.ping.remote()]
    with pytest.raises(PendingCallsLimitExceeded, match="max_pending_calls"):
        gate.ping.remote()
    Path(door).touch()
    assert jray.get(pending, timeout=T) == [door, "pong"]
    assert jray.get(gate.ping.remote(), timeout=T) == "pong"  # room again
    free = Gate.remote()  # no limit by default
    assert jray.get([free.ping.remote() for _ in range(50)], timeout=T) == ["pong"] * 50


def test_max_pending_calls_is_checked(cluster: dict[str, object]) -> None:
    for bad in (0, -2, "3", 1.5):
        with pytest.raises((ValueError, TypeError), match="max_pending_calls"):
            Gate.options(max_pending_calls=bad).remote()


def test_calls_on_a_killed_actor_say_what_ray_says(cluster: dict[str, object],
                                                   tmp_path: Path) -> None:
    gate = Gate.remote()
    assert jray.get(gate.ping.remote(), timeout=T) == "pong"
    stuck = gate.wait_for.remote(str(tmp_path / "never"))
    jray.kill(gate)
    for ref in (stuck, gate.ping.remote()):
        with pytest.raises(ActorDiedError) as info:
            jray.get(ref, timeout=T)
        text = str(info.value)
        assert text.startswith("The actor is dead because it was killed by `ray.kill`"), text
        assert "Gate" in text
