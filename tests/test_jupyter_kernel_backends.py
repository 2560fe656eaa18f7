"""The core magics in a real kernel, once per backend: jray's own cluster, and Ray.

One parametrized suite (``on_jray``, ``on_ray``): the same tests, the same
assertions, on each backend. The Ray run starts a real local Ray cluster
(``ray start --head``, 2 CPUs, no dashboard, in a temporary directory of its
own) and the kernel joins it with ``%jray init --backend ray --address``; the
cluster is stopped after the module and none of its processes may outlive it.
Without Ray installed the Ray run is skipped, naming what is missing.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass

import psutil
import pytest
from jupyter_kernel import Kernel, assert_no_jray_processes, no_leaks  # noqa: F401  (fixtures)
from ray_cluster import processes, ray_head, ray_missing, ray_views_missing, stop

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]



@dataclass
class Notebook:
    kernel: Kernel
    backend: str  # "jray" or "ray"
    init: str  # the %jray init line that (re)joins the cluster
    ray_dir: str = ""  # the Ray cluster's temporary directory


@pytest.fixture(scope="module", params=["on_jray", "on_ray"])
def nb(request: pytest.FixtureRequest) -> Iterator[Notebook]:
    backend = request.param.removeprefix("on_")
    with ExitStack() as stack:
        ray_dir = ""
        if backend == "ray":
            why = ray_missing()
            if why:
                pytest.skip(why)
            # token authentication, as Ray's own default: the kernel (started in the
            # block, with its environment) must find the token
            address, ray_dir = stack.enter_context(
                ray_head(num_cpus=2, dashboard=ray_views_missing() is None, token=True))
            init = f"%jray init --backend ray --address {address}"
        else:
            init = "%jray init --num-cpus 2"
        k = Kernel()
        try:
            k.execute("%load_ext jray")
            k.execute(init, timeout=120)
            yield Notebook(k, backend, init, ray_dir)
        finally:
            k.shutdown()
            assert_no_jray_processes()


def test_blocking_cell_binds_outputs_and_shows_last_value(nb: Notebook) -> None:
    k = nb.kernel
    k.execute("base = 20")
    ex = k.execute("%%remote\nimport os\ntotal = base + 1\ndef triple(x):\n    return 3 * x\n"
                   "class Box:\n    pass\ntriple(total)", timeout=90)
    assert ex.result_text() == "63"
    assert k.value("(total, triple(2), os.sep, Box.__name__)") == (21, 6, "/", "Box")
    assert k.value("[v for v in Out.values() if v == 63]") == []  # not in Out


def test_no_block_cells_form_a_dag_and_run_concurrently(nb: Notebook) -> None:
    k = nb.kernel
    # two workers up first (a Ray worker can take seconds to start on a busy machine)
    k.execute("%%remote --no-block\nimport time\ntime.sleep(4)\nwarm_a = 1")
    k.execute("%%remote\nwarm_b = 1", timeout=60)
    k.execute("%%remote\nwarm = [warm_a, warm_b]", timeout=60)
    t0 = time.monotonic()
    a = k.execute("%%remote --no-block\nimport time\na_ran = [time.time()]\ntime.sleep(2)\n"
                  "print('a done')\na_ran.append(time.time())\nleft = 1\nleft")
    b = k.execute("%%remote --no-block\nimport time\nb_ran = [time.time()]\ntime.sleep(2)\n"
                  "b_ran.append(time.time())\nright = 2")
    assert time.monotonic() - t0 < 1.5  # both returned at once
    k.execute("pair = [left, {'r': right}]")  # refs inside a container are inputs too
    c = k.execute("%%remote\nboth = pair[0] + pair[1]['r']\nboth", timeout=60)
    elapsed = time.monotonic() - t0
    assert c.result_text() == "3"
    if nb.backend == "jray":  # run one after the other they would take 4 s
        assert elapsed < 3.5, f"independent cells did not overlap: {elapsed:.2f}s"
    assert k.value("(type(left).__name__, both)") == ("ObjectRef", 3)
    # the two independent cells ran at the same time (on the 2 CPUs)
    k.execute("%%remote\nspans = [a_ran, b_ran]", timeout=30)  # refs in, values out
    (a0, a1), (b0, b1) = k.value("spans")
    assert max(a0, b0) < min(a1, b1), f"no overlap: a {a0:.2f}-{a1:.2f}, b {b0:.2f}-{b1:.2f}"
    # a --no-block cell's output and value appear under that cell, after it returned
    k.wait_for(a.msg_id, lambda m: m["msg_type"] == "stream"
               and "a done" in m["content"]["text"], 15)
    res = k.wait_for(a.msg_id, lambda m: m["msg_type"] == "execute_result", 15)
    assert res["content"]["data"]["text/plain"] == "1"
    assert res["content"]["execution_count"] == a.reply["content"]["execution_count"]
    assert not any("a done" in m["content"].get("text", "") for m in c.msgs + b.msgs)


def test_output_streams_under_the_cell_with_one_progress_bar(nb: Notebook) -> None:
    ex = nb.kernel.execute(
        "%%remote\nimport time\nfor i in range(3):\n    print('tick', i)\n    time.sleep(0.6)\n"
        "class Rich:\n    def _repr_html_(self):\n        return '<b>rich</b>'\n"
        "display(Rich())\nprint('oops', file=__import__('sys').stderr)", timeout=60)
    ticks = [m for m in ex.msgs if m["msg_type"] == "stream" and "tick 0" in m["content"]["text"]]
    assert ticks, ex.msgs
    assert (ex.reply["header"]["date"] - ticks[0]["header"]["date"]).total_seconds() > 0.5
    assert "tick 0\ntick 1\ntick 2\n" in ex.stream("stdout")
    assert "oops" in ex.stream("stderr")
    html = [m for m in ex.of_type("display_data") if "text/html" in m["content"]["data"]]
    assert html and html[0]["content"]["data"]["text/html"] == "<b>rich</b>"
    bars = [m for m in ex.of_type("comm_open")
            if m["content"]["data"]["state"].get("_model_name") == "IntProgressModel"]
    assert len(bars) == 1 and bars[0]["parent_header"]["msg_id"] == ex.msg_id


def test_remote_exception_shows_cell_traceback_and_keeps_namespace(nb: Notebook) -> None:
    k = nb.kernel
    k.execute("kept = 'old'")
    ex = k.execute("%%remote\nkept = 'new'\nfresh = 1\n1 / 0", allow_error=True, timeout=60)
    content = ex.reply["content"]
    assert content["ename"] == "ZeroDivisionError"
    tb = "\n".join(content["traceback"])
    assert "<remote-cell-" in tb and "line 4" in tb and "1 / 0" in tb
    assert "ray" not in tb.lower().replace("jray", "")  # no frame of the runtime's own
    assert k.value("(kept, 'fresh' in dir())") == ("old", False)


def test_engines_keep_state_and_push_pull(nb: Notebook) -> None:
    k = nb.kernel
    assert "started 2 engine(s)" in k.execute("%jray engines 2", timeout=90).stream()
    k.execute("%%remote --engine 0\ncounter = 10")
    assert k.execute("%%remote --engine 0\ncounter += 1\ncounter").result_text() == "11"
    out = k.execute("%%remote --engines all\nimport os\nprint(os.getpid())").stream("stdout")
    assert "[engine-0] " in out and "[engine-1] " in out
    k.execute("payload = [1, 2]\n%jray push 1 payload")
    assert k.execute("%%remote --engine 1\npayload").result_text() == "[1, 2]"
    k.execute("%jray pull 0 counter")
    assert k.value("counter") == 11
    listing = k.execute("%jray engines").stream()
    assert "jray-engine-0" in listing and "counter" in listing


def test_interrupt_cancels_an_engine_cell(nb: Notebook) -> None:
    k = nb.kernel
    k.execute("%jray engines 1", timeout=60)
    k.execute("%%remote --engine 0\nkept_on_engine = 'yes'")
    msg_id = k.kc.execute("%%remote --engine 0\nimport time\nprint('started')\n"
                          "time.sleep(30)\nnever_on_engine = 1")
    k.wait_for(msg_id, lambda m: m["msg_type"] == "stream"
               and "started" in m["content"]["text"], 30)
    t0 = time.monotonic()
    k.interrupt()
    msg = k.wait_for(msg_id, lambda m: m["msg_type"] == "stream"
                     and "interrupted" in m["content"]["text"], 15)
    assert "cancelled 1 task(s)" in msg["content"]["text"]
    k.settle(msg_id)
    assert time.monotonic() - t0 < 10
    # the engine stopped the cell (it did not finish the sleep) and kept its state
    ex = k.execute("%%remote --engine 0\n(kept_on_engine, 'never_on_engine' in dir())",
                   timeout=10)
    assert ex.result_text() == "('yes', False)"
    assert time.monotonic() - t0 < 15


def test_interrupt_cancels_the_cells_task(nb: Notebook) -> None:
    k = nb.kernel
    msg_id = k.kc.execute("%%remote\nimport time\nprint('started')\ntime.sleep(60)\nnever = 1")
    k.wait_for(msg_id, lambda m: m["msg_type"] == "stream"
               and "started" in m["content"]["text"], 30)
    queued = k.kc.execute("after_interrupt = 1")
    k.interrupt()
    msg = k.wait_for(msg_id, lambda m: m["msg_type"] == "stream"
                     and "cancelled" in m["content"]["text"], 15)
    assert "never" in msg["content"]["text"]
    err = k.wait_for(msg_id, lambda m: m["msg_type"] == "error", 15)
    assert err["content"]["ename"] == "KeyboardInterrupt"
    k.settle(msg_id)
    k.settle(queued)
    assert k.value("'after_interrupt' in dir()") is False  # the queued cell was aborted
    assert k.value("'never' in dir()") is False
    if nb.backend == "jray":
        summary = "__import__('jray').state.summary()['tasks']"
        assert k.value(f"{summary}.get('cancelled', 0) >= 1") is True
    # the cancelled task let go of its CPU: a cell needing both CPUs runs at once
    ex = k.execute("%%remote --num-cpus 2\nafter = 5\nafter", timeout=30)
    assert ex.result_text() == "5"


def test_status_names_the_backend_and_its_resources(nb: Notebook) -> None:
    data = nb.kernel.execute("%jray status").of_type("display_data")[0]["content"]["data"]
    assert "<table>" in data["text/html"]
    text = data["text/plain"]
    assert text.startswith(f"{nb.backend} cluster") and f"backend  {nb.backend}" in text
    for word in ("node", "CPU: ", "/ 2 used", "tasks", "engines"):
        assert word in text


VIEW_TASKS = ("[(r['label'], r['state'], r['cell'] is not None, len(r['inputs'])) for r in "
              "__import__('jray.jupyter.dashboard', fromlist=['_running'])._running().model"
              ".tasks.values()]")


def test_dashboard_shows_the_cells_tasks_with_their_cell_and_edges(nb: Notebook) -> None:
    if nb.backend == "ray" and ray_views_missing():
        pytest.skip(str(ray_views_missing()))
    k = nb.kernel
    shown = k.execute("%jray dashboard", timeout=60).of_type("display_data")
    assert "application/vnd.jupyter.widget-view+json" in shown[0]["content"]["data"]
    k.execute("%%remote --no-block\nview_a = 2")
    k.execute("%%remote\nview_b = view_a * 3\nview_b", timeout=60)
    deadline = time.monotonic() + 30  # the view polls Ray's state API (about every second)
    while True:
        tasks = k.value(VIEW_TASKS)  # the kernel's event loop runs the view between cells
        done = [t for t in tasks if t[2] and t[1] == "finished"]
        if len(done) >= 2 and any(t[3] == 1 for t in done) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert len(done) >= 2 and any(t[3] == 1 for t in done), tasks  # the edge a -> b


def test_shutdown_then_init_again(nb: Notebook) -> None:
    k = nb.kernel
    said = k.execute("%jray shutdown").stream()
    if nb.backend == "ray":  # a joined cluster is only left, never stopped
        assert "keeps running" in said
        names = {p.name() for p in processes(nb.ray_dir)}
        assert {"gcs_server", "raylet"} <= names, names
    else:
        assert "cluster shut down" in said
    assert "no cluster running" in k.execute("%jray status").stream()
    k.execute(nb.init, timeout=120)
    assert k.execute("%%remote\nagain = 7\nagain", timeout=60).result_text() == "7"


@pytest.mark.skipif(ray_missing() is not None, reason=str(ray_missing()))
def test_ray_without_address_starts_a_local_instance_and_stops_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    temp_dir = tempfile.mkdtemp(prefix="jrt-", dir="/tmp")  # Ray's session files go here
    monkeypatch.setenv("RAY_TMPDIR", temp_dir)
    k = Kernel()
    try:
        k.execute("%load_ext jray")
        said = k.execute("%jray init --backend ray --num-cpus 1", timeout=120).stream()
        assert "started a local ray cluster (1 CPU)" in said
        assert k.execute("%%remote\nv = 6\nv * 7", timeout=90).result_text() == "42"
        kernel_proc = psutil.Process(k.km.provisioner.pid)  # type: ignore[union-attr]
        started = kernel_proc.children(recursive=True)
        assert any(p.name() == "raylet" for p in started)
        assert "cluster shut down" in k.execute("%jray shutdown", timeout=60).stream()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(_running(p) for p in started):
            time.sleep(0.2)
        assert not [p.pid for p in started if _running(p)], "Ray outlived %jray shutdown"
        assert not processes(temp_dir)
    finally:
        k.shutdown()
        left = stop(temp_dir)  # (only if the test failed before Ray was stopped)
        shutil.rmtree(temp_dir, ignore_errors=True)
        assert not left, f"Ray processes outlived the kernel: {[p.pid for p in left]}"


def _running(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
