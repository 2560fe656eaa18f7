"""A real ipykernel driven through jupyter_client, for the Jupyter layer's tests.

Every wait is bounded. ``Kernel.execute`` returns the reply and the iopub
messages of that request (up to its ``idle`` status); messages that arrive
later for an earlier request (``--no-block`` output) are kept per request and
read with ``Kernel.wait_for``.
"""

from __future__ import annotations

import contextlib
import queue
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psutil
import pytest
from jupyter_client.manager import start_new_kernel

from jray.testing import jray_processes, living

Msg = dict[str, Any]


@dataclass
class Executed:
    msg_id: str
    reply: Msg
    msgs: list[Msg]

    @property
    def ok(self) -> bool:
        return bool(self.reply["content"]["status"] == "ok")

    def stream(self, name: str | None = None) -> str:
        return "".join(m["content"]["text"] for m in self.msgs if m["msg_type"] == "stream"
                       and (name is None or m["content"]["name"] == name))

    def of_type(self, msg_type: str) -> list[Msg]:
        return [m for m in self.msgs if m["msg_type"] == msg_type]

    def result_text(self) -> str:
        return "".join(m["content"]["data"].get("text/plain", "")
                       for m in self.of_type("execute_result"))


class Kernel:
    def __init__(self) -> None:
        self.km, self.kc = start_new_kernel(kernel_name="python3", startup_timeout=60)
        self.by_parent: dict[str, list[Msg]] = defaultdict(list)

    def _pull(self, timeout: float) -> Msg | None:
        try:
            msg: Msg = self.kc.get_iopub_msg(timeout=max(0.01, timeout))
        except queue.Empty:
            return None
        self.by_parent[msg["parent_header"].get("msg_id", "")].append(msg)
        return msg

    def execute(self, code: str, timeout: float = 60, allow_error: bool = False) -> Executed:
        msg_id = self.kc.execute(code)
        deadline = time.monotonic() + timeout
        reply: Msg | None = None
        while reply is None:
            left = deadline - time.monotonic()
            assert left > 0, f"no execute_reply within {timeout}s for:\n{code}"
            try:
                msg = self.kc.get_shell_msg(timeout=min(left, 1.0))
            except queue.Empty:
                continue
            if msg["parent_header"].get("msg_id") == msg_id:
                reply = msg
        self.wait_for(msg_id, lambda m: m["msg_type"] == "status"
                      and m["content"]["execution_state"] == "idle",
                      max(1.0, deadline - time.monotonic()))
        ex = Executed(msg_id, reply, list(self.by_parent[msg_id]))
        if not allow_error:
            assert ex.ok, f"cell failed:\n{code}\n{reply['content']}\n{ex.stream()}"
        return ex

    def wait_for(self, msg_id: str, pred: Callable[[Msg], bool], timeout: float) -> Msg:
        """The first message for request ``msg_id`` matching ``pred`` (bounded wait)."""
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            msgs = self.by_parent[msg_id]
            for m in msgs[seen:]:
                if pred(m):
                    return m
            seen = len(msgs)
            left = deadline - time.monotonic()
            assert left > 0, f"no matching message within {timeout}s; got {msgs}"
            self._pull(min(left, 0.5))

    def settle(self, msg_id: str, timeout: float = 15) -> None:
        """Wait until request ``msg_id`` is done; after an error reply, also until the
        kernel has stopped aborting the requests queued behind it (a short window)."""
        self.wait_for(msg_id, lambda m: m["msg_type"] == "status"
                      and m["content"]["execution_state"] == "idle", timeout)
        time.sleep(0.2)

    def value(self, expr: str) -> Any:
        """Evaluate ``expr`` in the kernel; its repr's literal value."""
        import ast

        ex = self.execute(f"print(repr({expr}))")
        return ast.literal_eval(ex.stream("stdout").strip())

    def interrupt(self) -> None:
        self.km.interrupt_kernel()

    def jray_processes(self) -> list[psutil.Process]:
        """The jray processes running under this kernel now."""
        return jray_processes(psutil.Process(self.km.provisioner.pid))  # type: ignore[union-attr]

    def restart(self) -> None:
        """Restart the kernel; the old kernel's jray processes must be gone."""
        procs = self.jray_processes()
        self.km.restart_kernel(now=False)
        assert_gone(procs)
        self.kc.wait_for_ready(timeout=60)

    def shutdown(self) -> None:
        """Shut the kernel down; its jray processes must be gone."""
        procs = self.jray_processes()
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=False)
        assert_gone(procs)


def assert_gone(procs: list[psutil.Process], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while living(procs) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = living(procs)
    assert not left, f"jray processes outlived their kernel: {[p.pid for p in left]}"



def assert_no_jray_processes(timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while jray_processes() and time.monotonic() < deadline:
        time.sleep(0.1)
    left = jray_processes()
    assert not left, f"jray processes outlived the kernel: {[p.cmdline() for p in left]}"


# --- fixtures, for the modules that import them ------------------------------------
@contextlib.contextmanager
def jray_kernel(*setup: str) -> Iterator[Kernel]:
    """A kernel with the extension loaded and a 2-CPU cluster, then ``setup``'s cells;
    shut down after, leaving no jray process behind."""
    k = Kernel()
    try:
        for code in ("%load_ext jray", "%jray init --num-cpus 2", *setup):
            k.execute(code)
        yield k
    finally:
        k.shutdown()
        assert_no_jray_processes()


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """Replaces the conftest's check in kernel modules: the kernel owns its cluster,
    checked when the module's kernel shuts down (``jray_kernel``)."""
    yield


@pytest.fixture(scope="module")
def kernel() -> Iterator[Kernel]:
    """One kernel (``jray_kernel``) shared by the tests of a module."""
    with jray_kernel() as k:
        yield k
