"""The Jupyter layer in a real kernel: ipykernel started by jupyter_client's KernelManager.

One kernel (with a 2-CPU cluster) serves most tests of the module; tests that
unload the extension or restart the kernel start their own. The core magics
(blocking and ``--no-block`` cells, output, errors, engines, interrupts, status)
are tested on every backend in ``test_jupyter_kernel_backends``. Leak checks: the
jray processes live under the kernel, so they are checked when a kernel
shuts down, not after each test (``no_leaks`` is overridden here).
"""

from __future__ import annotations

import base64
import time

import pytest
from jupyter_kernel import (  # noqa: F401  (fixtures)
    Executed,
    Kernel,
    Msg,
    assert_gone,
    assert_no_jray_processes,
    kernel,
    no_leaks,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]




def test_load_twice_and_rerun_init_cell(kernel: Kernel) -> None:
    kernel.execute("%load_ext jray")
    again = kernel.execute("%jray init --num-cpus 2")
    assert "already running" in again.stream()
    assert "2 CPU" in again.stream()


def test_bad_options_fail_the_cell_with_a_usage_error(kernel: Kernel) -> None:
    for line, named in [("%%remote --no-blok\nx = 1", "--no-blok"),
                        ("%%remote --num-cpus abc\nx = 1", "--num-cpus"),
                        ("%%remote --resources '{bad'\nx = 1", "--resources"),
                        ("%%remote --engines some\nx = 1", "--engines"),
                        ("%%remote --retries -1\nx = 1", "--retries"),
                        ("%jray frob", "frob"),
                        ("%jray engines -3", "-3")]:
        ex = kernel.execute(line, allow_error=True)
        assert ex.reply["content"]["ename"] == "UsageError", line
        assert named in ex.reply["content"]["evalue"], line
    assert kernel.value("'x' in dir()") is False  # no body ran
    # an error reply aborts the cells queued behind it, as "Run All" needs
    first = kernel.kc.execute("%%remote --no-blok\nx = 1")
    queued = kernel.kc.execute("after_bad_option = 1")
    replies = {}
    deadline = time.monotonic() + 30
    while len(replies) < 2 and time.monotonic() < deadline:
        msg = kernel.kc.get_shell_msg(timeout=10)
        replies[msg["parent_header"]["msg_id"]] = msg["content"]["status"]
    assert replies == {first: "error", queued: "aborted"}
    kernel.settle(queued)
    assert kernel.value("'after_bad_option' in dir()") is False


def test_missing_name_raises_name_error_before_submitting(kernel: Kernel) -> None:
    tasks = "sum(__import__('jray').state.summary()['tasks'].values())"
    before = kernel.value(tasks)
    ex = kernel.execute("%%remote\ny = not_defined_anywhere + 1", allow_error=True)
    assert ex.reply["content"]["ename"] == "NameError"
    assert "not_defined_anywhere" in ex.reply["content"]["evalue"]
    assert kernel.value("'y' in dir()") is False
    assert kernel.value(tasks) == before  # nothing was submitted


def test_unpicklable_variable_is_named(kernel: Kernel) -> None:
    kernel.execute("import threading\nthe_lock = threading.Lock()")
    ex = kernel.execute("%%remote\nz = the_lock", allow_error=True)
    assert "the_lock" in ex.reply["content"]["evalue"]
    assert "pickle" in ex.reply["content"]["evalue"]


def test_remote_before_init_starts_a_cluster() -> None:
    k = Kernel()
    try:
        k.execute("%load_ext jray")
        ex = k.execute("%%remote\nv = 2\nv * 21")
        assert "started a local cluster" in ex.stream()
        assert ex.result_text() == "42"
        k.execute("%jray shutdown")
        k.execute("%jray init --num-cpus 1")
        assert k.execute("%%remote\nv + 1").result_text() == "3"
    finally:
        k.shutdown()


def test_unload_and_restart_leave_no_thread_or_process() -> None:
    k = Kernel()
    try:
        threads = "sorted(t.name for t in __import__('threading').enumerate())"
        before = k.value(threads)
        k.execute("%load_ext jray\n%jray init --num-cpus 1")
        assert k.execute("%%remote\nr = 1\nr").result_text() == "1"
        procs = k.jray_processes()
        assert procs
        observer = "__import__('jray').get.__globals__['wait_observer'] is None"
        assert k.value(observer) is False
        k.execute("%unload_ext jray")
        assert k.value(threads) == before
        assert k.value(observer) is True  # the jray.get hook is gone too
        assert k.execute("%jray status", allow_error=True).reply["content"]["ename"] == \
            "UsageError"
        assert_gone(procs)
        k.execute("%load_ext jray\n%jray init --num-cpus 1")
        assert k.execute("%%remote --no-block\nimport time\ntime.sleep(5)\nr = 2").ok
        k.restart()
        assert k.execute("1 + 1").result_text() == "2"
    finally:
        k.shutdown()


def test_options_override_inference_and_label_the_task(kernel: Kernel) -> None:
    kernel.execute("seed = 3")
    kernel.execute("%%remote --in seed --out picked --name chooser --num-cpus 1 --retries 1\n"
                   "picked = seed * 2\nscratch = 1")
    assert kernel.value("(picked, 'scratch' in dir())") == (6, False)
    names = "[t['name'] for t in __import__('jray').state.list_tasks()]"
    assert "chooser" in kernel.value(names)


NAP = ("import jray, time\n@jray.remote\ndef nap(s, i=0):\n    time.sleep(s)\n"
       "    return i")


def _bars(ex: Executed) -> list[Msg]:
    return [m for m in ex.of_type("comm_open")
            if m["content"]["data"]["state"].get("_model_name") == "IntProgressModel"]


def test_get_of_many_refs_shows_one_progress_bar(kernel: Kernel) -> None:
    kernel.execute(NAP)
    ex = kernel.execute("jray.get([nap.remote(0.8, i) for i in range(4)])")
    assert ex.result_text() == "[0, 1, 2, 3]"
    (bar,) = _bars(ex)
    assert bar["parent_header"]["msg_id"] == ex.msg_id  # under this cell
    assert bar["content"]["data"]["state"]["max"] == 4
    comm = bar["content"]["comm_id"]
    states = [m["content"]["data"]["state"] for m in ex.of_type("comm_msg")
              if m["content"]["comm_id"] == comm]
    assert [s["value"] for s in states if "value" in s][-1] == 4
    assert [s["bar_style"] for s in states if "bar_style" in s][-1] == "success"
    # quick gets, one-ref gets and gets on other threads show none
    assert not _bars(kernel.execute("jray.get([nap.remote(0, i) for i in range(3)])"))
    assert not _bars(kernel.execute("jray.get(nap.remote(1.3))"))
    ex = kernel.execute("import threading\nbox = []\nth = threading.Thread(target=lambda: "
                        "box.append(jray.get([nap.remote(1.3), nap.remote(1.3, 1)])))\n"
                        "th.start()\nth.join(30)\nbox")
    assert ex.result_text() == "[[0, 1]]" and not _bars(ex)
    # a timeout still holds while the bar's wait runs
    ex = kernel.execute("jray.get([nap.remote(1.5), nap.remote(1.5, 1)], timeout=0.3)",
                        timeout=10, allow_error=True)
    assert ex.reply["content"]["ename"] == "GetTimeoutError"


def test_interrupt_during_get_cancels_its_tasks(kernel: Kernel) -> None:
    kernel.execute(NAP)
    cancelled = "__import__('jray').state.summary()['tasks'].get('cancelled', 0)"
    before = kernel.value(cancelled)
    msg_id = kernel.kc.execute("refs = [nap.remote(60, i) for i in range(3)]\n"
                               "got = jray.get(refs)")
    kernel.wait_for(msg_id, lambda m: m["msg_type"] == "comm_open", 30)  # waiting, bar shown
    t0 = time.monotonic()
    kernel.interrupt()
    msg = kernel.wait_for(msg_id, lambda m: m["msg_type"] == "stream"
                          and "cancelled" in m["content"]["text"], 15)
    assert "cancelled 3 task(s)" in msg["content"]["text"]
    err = kernel.wait_for(msg_id, lambda m: m["msg_type"] == "error", 5)
    assert err["content"]["ename"] == "KeyboardInterrupt"
    kernel.settle(msg_id)
    assert time.monotonic() - t0 < 10
    assert kernel.value("'got' in dir()") is False
    assert kernel.value(cancelled) >= before + 3
    kernel.execute("errs = []\nfor r in refs:\n    try:\n        jray.get(r, timeout=10)\n"
                   "    except Exception as e:\n        errs.append(type(e).__name__)")
    assert kernel.value("errs") == ["TaskCancelledError"] * 3
    # kernel and cluster still work: both CPUs are free again
    ex = kernel.execute("jray.get([nap.remote(0, i) for i in range(2)])", timeout=15)
    assert ex.result_text() == "[0, 1]"


def test_remote_matplotlib_figures_appear_under_the_cell(kernel: Kernel) -> None:
    ex = kernel.execute("%%remote\nimport matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\n"
                        "plt.show()\nprint('shown')")
    pngs = [m for m in ex.of_type("display_data") if "image/png" in m["content"]["data"]]
    assert len(pngs) == 1, ex.msgs
    assert pngs[0]["parent_header"]["msg_id"] == ex.msg_id
    assert base64.b64decode(pngs[0]["content"]["data"]["image/png"])[:4] == b"\x89PNG"
    assert ex.stream() == "shown\n"  # no "Figure(...)" text, no warning
    # a figure as the last value is the cell's result, shown once as an image
    ex = kernel.execute("%%remote --out ''\nimport matplotlib.pyplot as plt\n"
                        "fig, ax = plt.subplots()\nax.bar([1, 2], [3, 4])\nfig")
    (res,) = ex.of_type("execute_result")
    assert "image/png" in res["content"]["data"]
    assert "Figure" in res["content"]["data"]["text/plain"]
    assert not [m for m in ex.of_type("display_data") if "image/png" in m["content"]["data"]]
    # no figure is left open in the workers
    opened = "%%remote --out ''\nimport matplotlib.pyplot as plt\nplt.get_fignums()"
    assert all(kernel.execute(opened).result_text() == "[]" for _ in range(3))
