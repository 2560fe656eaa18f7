"""``init(log_to_driver=False)``: what tasks print is not shown by the driver (it goes
to the standard streams jray's processes were started with, unprefixed)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

import jray

pytestmark = pytest.mark.integration


@pytest.mark.timeout(120)
def test_task_output_stays_out_of_the_driver(capfd: pytest.CaptureFixture[str]) -> None:
    jray.init(num_cpus=1, log_to_driver=False)
    try:
        @jray.remote
        def chatty() -> int:
            print("out-line-from-the-task", flush=True)
            print("err-line-from-the-task", file=sys.stderr, flush=True)
            return 1

        capfd.readouterr()
        assert jray.get(chatty.remote(), timeout=60) == 1
        deadline = time.monotonic() + 10
        out = err = ""
        while "out-line" not in out and time.monotonic() < deadline:
            time.sleep(0.1)
            got = capfd.readouterr()
            out, err = out + got.out, err + got.err
        # written by the worker itself, on the streams it inherited: no driver prefix
        assert "out-line-from-the-task" in out and "(chatty pid=" not in out
        assert "(chatty pid=" not in err
    finally:
        jray.shutdown()


@pytest.mark.timeout(120)
def test_task_output_reaches_the_driver_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    jray.init(num_cpus=1)
    try:
        @jray.remote
        def chatty() -> int:
            print("shown-in-the-driver", flush=True)
            return 1

        assert jray.get(chatty.remote(), timeout=60) == 1
        deadline = time.monotonic() + 10
        out = ""
        while "shown-in-the-driver" not in out and time.monotonic() < deadline:
            time.sleep(0.1)
            out += capsys.readouterr().out
        assert "(chatty pid=" in out and "shown-in-the-driver" in out
    finally:
        jray.shutdown()


@pytest.mark.timeout(120)
def test_a_nested_tasks_output_shows_while_its_parent_computes(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The child's output goes through its parent's worker (so it lands after what the
    parent printed before submitting it); the parent computes without calling jray
    and must still pass it on, not when it next touches its socket."""
    release = tmp_path / "release"
    jray.init(num_cpus=2)
    try:
        @jray.remote
        def child() -> None:
            print("line-from-the-child", flush=True)

        @jray.remote
        def parent(path: str) -> str:
            print("parent-before", flush=True)
            child.remote()
            deadline = time.monotonic() + 30
            while not os.path.exists(path) and time.monotonic() < deadline:
                sum(range(10_000))  # computing: no jray call until the test says so
            return "released" if os.path.exists(path) else "never released"

        ref = parent.remote(str(release))
        seen = ""
        deadline = time.monotonic() + 20
        while "line-from-the-child" not in seen and time.monotonic() < deadline:
            time.sleep(0.05)
            seen += capsys.readouterr().out
        running = not jray.wait([ref], timeout=0)[0]
        release.touch()
        assert jray.get(ref, timeout=60) == "released"
        assert "line-from-the-child" in seen, seen
        assert running, "the child's line came only after its parent had ended"
        assert seen.index("parent-before") < seen.index("line-from-the-child"), seen
    finally:
        jray.shutdown()
