"""The Jupyter layer in a real kernel: ipykernel started by jupyter_client's KernelManager.

One kernel (with a 2-CPU cluster) serves most tests of the module; tests that
unload the extension or restart the kernel start their own. Leak checks: the
jray processes live under the kernel, so they are checked when a kernel
shuts down, not after each test (``no_leaks`` is overridden here).
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator

import pytest
from jupyter_kernel import Executed, Kernel, Msg, assert_gone, assert_no_jray_processes

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """The kernel owns the cluster: checked at kernel shutdown (see ``kernel``)."""
    yield


@pytest.fixture(scope="module")
def kernel() -> Iterator[Kernel]:
    k = Kernel()
    try:
        k.execute("%load_ext jray")
        k.execute("%jray init --num-cpus 2")
        yield k
    finally:
        k.shutdown()
        assert_no_jray_processes()


def test_load_twice_and_rerun_init_cell(kernel: Kernel) -> None:
    kernel.execute("%load_ext jray")
    again = kernel.execute("%jray init --num-cpus 2")
    assert "already running" in again.stream()
    assert "2 CPU" in again.stream()


def test_blocking_cell_binds_outputs_and_shows_last_value(kernel: Kernel) -> None:
    kernel.execute("base = 20")
    ex = kernel.execute(
        "%%remote\nimport os\ntotal = base + 1\ndef triple(x):\n    return 3 * x\n"
        "class Box:\n    pass\ntriple(total)"
    )
    assert ex.result_text() == "63"
    assert kernel.value("(total, triple(2), os.sep, Box.__name__)") == (21, 6, "/", "Box")
    # the shown value is not kept in IPython's output history
    assert kernel.value("[v for v in Out.values() if v == 63]") == []


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


def test_no_block_cells_form_a_dag_and_run_concurrently(kernel: Kernel) -> None:
    t0 = time.monotonic()
    a = kernel.execute("%%remote --no-block\nimport time\ntime.sleep(1.5)\nprint('a done')\n"
                       "left = 1\nleft")
    b = kernel.execute("%%remote --no-block\nimport time\ntime.sleep(1.5)\nright = 2")
    assert time.monotonic() - t0 < 1.0  # both returned at once
    c = kernel.execute("%%remote\nboth = left + right\nboth")
    elapsed = time.monotonic() - t0
    assert c.result_text() == "3"
    assert elapsed < 2.5, f"independent cells did not overlap: {elapsed:.2f}s"
    assert kernel.value("(type(left).__name__, both)") == ("ObjectRef", 3)
    # a --no-block cell's output and value appear under that cell, after it returned
    kernel.wait_for(a.msg_id, lambda m: m["msg_type"] == "stream"
                    and "a done" in m["content"]["text"], 10)
    res = kernel.wait_for(a.msg_id, lambda m: m["msg_type"] == "execute_result", 10)
    assert res["content"]["data"]["text/plain"] == "1"
    # Out[n] carries the number of the cell's own In[n]
    assert res["content"]["execution_count"] == a.reply["content"]["execution_count"]
    (c_res,) = c.of_type("execute_result")
    assert c_res["content"]["execution_count"] == c.reply["content"]["execution_count"]
    assert not any("a done" in m["content"].get("text", "") for m in c.msgs + b.msgs)


def test_output_streams_while_the_task_runs(kernel: Kernel) -> None:
    ex = kernel.execute(
        "%%remote\nimport time\nfor i in range(3):\n    print('tick', i)\n    time.sleep(0.5)\n"
        "class Rich:\n    def _repr_html_(self):\n        return '<b>rich</b>'\n"
        "display(Rich())\nprint('oops', file=__import__('sys').stderr)"
    )
    ticks = [m for m in ex.msgs if m["msg_type"] == "stream" and "tick 0" in m["content"]["text"]]
    assert ticks, ex.msgs
    reply_at = ex.reply["header"]["date"]
    assert (reply_at - ticks[0]["header"]["date"]).total_seconds() > 0.5
    assert "tick 0\ntick 1\ntick 2\n" in ex.stream("stdout")
    assert "oops" in ex.stream("stderr")
    html = [m for m in ex.of_type("display_data") if "text/html" in m["content"]["data"]]
    assert html and html[0]["content"]["data"]["text/html"] == "<b>rich</b>"
    # a wait over a second shows a progress bar widget
    assert any(m["content"]["data"]["state"].get("_model_name") == "IntProgressModel"
               for m in ex.of_type("comm_open"))


def test_remote_exception_shows_cell_traceback_and_keeps_namespace(kernel: Kernel) -> None:
    kernel.execute("kept = 'old'")
    ex = kernel.execute("%%remote\nkept = 'new'\nfresh = 1\n1 / 0", allow_error=True)
    content = ex.reply["content"]
    assert content["ename"] == "ZeroDivisionError"
    tb = "\n".join(content["traceback"])
    assert "<remote-cell-" in tb and "line 4" in tb and "1 / 0" in tb
    assert kernel.value("(kept, 'fresh' in dir())") == ("old", False)


def test_engines_keep_state_and_push_pull(kernel: Kernel) -> None:
    assert "started 2 engine(s)" in kernel.execute("%jray engines 2").stream()
    kernel.execute("%%remote --engine 0\ncounter = 10")
    assert kernel.execute("%%remote --engine 0\ncounter += 1\ncounter").result_text() == "11"
    ex = kernel.execute("%%remote --engines all\nimport os\nprint(os.getpid())")
    out = ex.stream("stdout")
    assert "[engine-0] " in out and "[engine-1] " in out
    kernel.execute("payload = [1, 2]\n%jray push 1 payload")
    assert kernel.execute("%%remote --engine 1\npayload").result_text() == "[1, 2]"
    kernel.execute("%jray pull 0 counter")
    assert kernel.value("counter") == 11
    listing = kernel.execute("%jray engines").stream()
    assert "jray-engine-0" in listing and "counter" in listing


def test_interrupt_cancels_an_engine_cell(kernel: Kernel) -> None:
    kernel.execute("%jray engines 1")
    kernel.execute("%%remote --engine 0\nkept_on_engine = 'yes'")
    msg_id = kernel.kc.execute("%%remote --engine 0\nimport time\nprint('started')\n"
                               "time.sleep(30)\nnever_on_engine = 1")
    kernel.wait_for(msg_id, lambda m: m["msg_type"] == "stream"
                    and "started" in m["content"]["text"], 30)
    t0 = time.monotonic()
    kernel.interrupt()
    kernel.wait_for(msg_id, lambda m: m["msg_type"] == "stream"
                    and "cancelled" in m["content"]["text"], 15)
    kernel.settle(msg_id)
    assert time.monotonic() - t0 < 10
    # the engine stopped the cell (it did not finish the sleep) and kept its state
    ex = kernel.execute("%%remote --engine 0\n(kept_on_engine, 'never_on_engine' in dir())",
                        timeout=10)
    assert ex.result_text() == "('yes', False)"
    assert time.monotonic() - t0 < 15


def test_status_renders_html_and_text(kernel: Kernel) -> None:
    ex = kernel.execute("%jray status")
    data = ex.of_type("display_data")[0]["content"]["data"]
    assert "<table>" in data["text/html"]
    for word in ("node", "CPU", "tasks", "object store"):
        assert word in data["text/plain"]


def test_interrupt_cancels_the_cells_task(kernel: Kernel) -> None:
    msg_id = kernel.kc.execute("%%remote\nimport time\nprint('started')\ntime.sleep(60)\n"
                               "never = 1")
    kernel.wait_for(msg_id, lambda m: m["msg_type"] == "stream"
                    and "started" in m["content"]["text"], 30)
    queued = kernel.kc.execute("after_interrupt = 1")
    kernel.interrupt()
    msg = kernel.wait_for(msg_id, lambda m: m["msg_type"] == "stream"
                          and "cancelled" in m["content"]["text"], 15)
    assert "never" in msg["content"]["text"]
    err = kernel.wait_for(msg_id, lambda m: m["msg_type"] == "error", 15)
    assert err["content"]["ename"] == "KeyboardInterrupt"
    kernel.settle(msg_id)
    kernel.settle(queued)
    assert kernel.value("'after_interrupt' in dir()") is False  # the queued cell was aborted
    assert kernel.value("'never' in dir()") is False
    summary = "__import__('jray').state.summary()['tasks']"
    assert kernel.value(f"{summary}.get('cancelled', 0) >= 1") is True
    # kernel and cluster still work
    assert kernel.execute("%%remote\nafter = 5\nafter").result_text() == "5"


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
