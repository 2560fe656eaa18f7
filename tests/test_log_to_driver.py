"""``init(log_to_driver=False)``: what tasks print is not shown by the driver (it goes
to the standard streams jray's processes were started with, unprefixed)."""

from __future__ import annotations

import sys
import time

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
