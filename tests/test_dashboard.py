"""``jray.dashboard()`` / ``%jray dashboard`` in a real kernel, the front end played by
the test: it opens the widget's comm conversation with ``hello`` and reads the
``full`` and ``patch`` messages the kernel pushes from its event loop."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from jupyter_kernel import Kernel, Msg, assert_no_jray_processes, jray_kernel, no_leaks  # noqa: F401  (fixtures)

pytestmark = pytest.mark.integration



@pytest.fixture(scope="module")
def kernel() -> Iterator[Kernel]:
    with jray_kernel("import jray") as k:
        yield k


def _widget_msgs(k: Kernel, comm_id: str, timeout: float, pred: Any) -> list[dict[str, Any]]:
    """Custom widget messages on ``comm_id`` until ``pred(all so far)`` (bounded)."""
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    seen: dict[str, int] = {}
    while True:
        for parent, msgs in list(k.by_parent.items()):
            for m in msgs[seen.get(parent, 0):]:
                c = m["content"]
                if (m["msg_type"] == "comm_msg" and c.get("comm_id") == comm_id
                        and c["data"].get("method") == "custom"):
                    got.append(c["data"]["content"])
            seen[parent] = len(msgs)
        if pred(got):
            return got
        left = deadline - time.monotonic()
        assert left > 0, f"no matching widget messages within {timeout}s; got {got[-3:]}"
        k._pull(min(left, 0.2))


def _hello(k: Kernel, comm_id: str) -> None:
    msg: Msg = k.kc.session.msg("comm_msg", {"comm_id": comm_id, "data": {
        "method": "custom", "content": {"type": "hello"}}})
    k.kc.shell_channel.send(msg)


def _tasks(msgs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    tasks: dict[str, dict[str, Any]] = {}
    for m in msgs:
        if m["type"] == "full":
            tasks = {t["id"]: dict(t) for t in m["tasks"]}
        elif m["type"] == "patch":
            for t in m["new"]:
                tasks[t["id"]] = dict(t)
            for tid, state, pid, node, start, end in m["changed"]:
                if tid in tasks:
                    tasks[tid].update(state=state, pid=pid, node=node, start=start, end=end)
    return tasks


def test_dashboard_pushes_the_dag_store_and_tracebacks(kernel: Kernel) -> None:
    k = kernel
    ex = k.execute("%jray dashboard")
    (view,) = [m for m in ex.msgs if m["msg_type"] == "display_data"]
    comm_id = view["content"]["data"]["application/vnd.jupyter.widget-view+json"]["model_id"]
    _hello(k, comm_id)
    first = _widget_msgs(k, comm_id, 30, lambda got: any(m["type"] == "full" for m in got))
    assert first[-1]["type"] == "full"
    k.execute("@jray.remote\ndef sq(x):\n    return x * x\n\n"
              "@jray.remote\ndef add(*xs):\n    return sum(xs)\n\n"
              "@jray.remote(max_retries=0)\ndef bad():\n    raise ValueError('bad on purpose')")
    sub = k.execute("parts = [sq.remote(i) for i in range(3)]\ntotal = add.remote(*parts)\n"
                    "oops = bad.remote()\nbig = jray.put(bytes(3_000_000))")
    n = sub.reply["content"]["execution_count"]

    def settled(got: list[dict[str, Any]]) -> bool:
        ts = _tasks(got)
        by = {t["label"]: t for t in ts.values()}
        return (by.get("add", {}).get("state") == "finished"
                and by.get("bad", {}).get("state") == "failed"
                and any(t["state"] == "failed" for t in ts.values())
                and any("ValueError" in text for m in got
                        for text in m.get("tracebacks", {}).values()))

    got = _widget_msgs(k, comm_id, 60, settled)
    ts = _tasks(got)
    by = {t["label"]: t for t in ts.values()}
    sq_ids = {t["id"] for t in ts.values() if t["label"] == "sq"}
    assert set(by["add"]["inputs"]) == sq_ids and len(sq_ids) == 3
    assert by["add"]["cell"][1] == n and by["add"]["group"] == f"In [{n}] add"
    assert k.value("__import__('jray')._private.core.task_tag") == (None, n + 1)
    tb = next(text for m in got for tid, text in m.get("tracebacks", {}).items()
              if tid == by["bad"]["id"])
    assert "ValueError: bad on purpose" in tb and "in bad" in tb and "Traceback" in tb

    def holds_big(got: list[dict[str, Any]]) -> bool:
        return any("big" in o.get("vars", []) for m in got[-1:] for o in m.get("objects", []))

    k.execute("_ = sq.remote(9)")  # one more change, so another patch goes out
    last = _widget_msgs(k, comm_id, 30, holds_big)[-1]
    assert any(o["size"] >= 3_000_000 and o["vars"] == ["big"] and o["where"] == "shared_memory"
               and o["node"] for o in last["objects"])
    assert last["store"] and all("capacity" in s for s in last["store"].values())


def test_dashboard_keeps_updating_while_a_cell_blocks(kernel: Kernel) -> None:
    """A cell blocked in ``jray.get`` holds the kernel's shell; the view's patches must
    still arrive (from the pump's thread) before that cell's reply."""
    k = kernel
    ex = k.execute("jray.dashboard()")  # the cell's value: an execute_result
    (view,) = [m for m in ex.msgs if m["msg_type"] == "execute_result"]
    comm_id = view["content"]["data"]["application/vnd.jupyter.widget-view+json"]["model_id"]
    _hello(k, comm_id)
    _widget_msgs(k, comm_id, 30, lambda got: any(m["type"] == "full" for m in got))
    k.execute("import time\n\n@jray.remote\ndef nap(s):\n    time.sleep(s)\n    return s\n\n"
              "@jray.remote\ndef quick(i):\n    return i")
    blocked = k.kc.execute("q = [quick.remote(i) for i in range(4)]\njray.get(nap.remote(8.0))")

    def live_while_blocked(got: list[dict[str, Any]]) -> bool:
        ts = _tasks(got).values()
        return (sum(t["label"] == "quick" and t["state"] == "finished" for t in ts) == 4
                and any(t["label"] == "nap" and t["state"] == "running" for t in ts))

    _widget_msgs(k, comm_id, 30, live_while_blocked)
    replied = [m for m in k.by_parent[blocked] if m["msg_type"] == "status"
               and m["content"]["execution_state"] == "idle"]
    assert not replied, "the view's updates came only after the blocked cell ended"
    k.settle(blocked, 60)
    assert k.value("jray.get(q)") == [0, 1, 2, 3]


def test_dashboard_refuses_a_bad_height(kernel: Kernel) -> None:
    ex = kernel.execute("jray.dashboard(height='tall')", allow_error=True)
    assert not ex.ok and "jray.dashboard: height" in ex.reply["content"]["evalue"]


class _GoneSink:
    """A view that closes before the pump's first tick."""

    joined = True

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def send(self, content: dict[str, Any]) -> None:
        self.sent.append(content)

    def alive(self) -> bool:
        return False


def test_the_pump_thread_ends_with_its_last_view() -> None:
    from jray.jupyter.dashboard import Pump

    pump = Pump()
    pump.add(_GoneSink())
    thread = pump.thread
    assert thread is not None and thread.daemon and thread.name == "jray-views-pump"
    thread.join(10)
    assert not thread.is_alive() and pump.thread is None and pump.ticks == 1
    pump.stop()  # nothing left to stop: returns at once
