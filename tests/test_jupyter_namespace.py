"""Notebook semantics of ``%%remote`` cells in a real kernel: names, errors, hangs.

Imports, ``del``, star imports, ``global`` and ``with`` targets behave as in a
local cell; IPython syntax runs or is refused before submitting; tracebacks
show the user's code; cells that cannot be placed fail at once. One kernel
with a 2-CPU cluster serves the module (see ``test_jupyter`` for the rest).
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from jupyter_kernel import Kernel, assert_no_jray_processes, kernel, no_leaks  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
ANSI = re.compile(r"\x1b\[[0-9;]*m")
TASKS = "sum(__import__('jray').state.summary()['tasks'].values())"




def _tb(ex: object) -> str:
    return ANSI.sub("", "\n".join(ex.reply["content"]["traceback"]))  # type: ignore[attr-defined]


def test_imports_in_a_no_block_cell_bind_modules_not_refs(kernel: Kernel) -> None:
    ex = kernel.execute("%%remote --no-block\nimport numpy as np\nimport os.path\n"
                        "from json import dumps\nimport jray_no_such_module_here as nope\n"
                        "x = np.zeros(3)")
    assert "x now ObjectRef" in ex.stream("stdout")
    assert "np, os, dumps imported here" in ex.stream("stdout")
    assert "nope" in ex.stream("stderr") and "ModuleNotFoundError" in ex.stream("stderr")
    assert kernel.value("(np.zeros(2).tolist(), os.path.sep, dumps([1]), 'nope' in dir())") \
        == ([0.0, 0.0], "/", "[1]", False)
    assert kernel.value("type(x).__name__") == "ObjectRef"
    # the task failed remotely (no such module) but the kernel's names are intact
    assert kernel.execute("%%remote\nimport numpy as np\nimport math\ny = np.ones(2)\n"
                          "def twice(v):\n    return 2 * v\nclass K:\n    pass").ok
    assert kernel.value("(type(np).__name__, math.sqrt(4), y.tolist(), twice(2), K.__name__)") \
        == ("module", 2.0, [1.0, 1.0], 4, "K")


def test_del_star_import_global_and_with_behave_as_locally(kernel: Kernel) -> None:
    kernel.execute("doomed = 1\nkept_fh = 'mine'")
    ex = kernel.execute("%%remote\nfrom math import *\nroot = sqrt(16)\ndel doomed\n"
                        "counter = 0\ndef bump():\n    global counter\n    counter += 1\n"
                        "bump(); bump()\nwith open('/etc/hostname') as kept_fh:\n"
                        "    host = kept_fh.read()\nroot")
    assert ex.result_text() == "4.0"
    assert ex.stream() == ""  # the closed file is dropped quietly
    assert kernel.value("(root, 'doomed' in dir(), counter, kept_fh, pi > 3)") == \
        (4.0, False, 2, "mine", True)
    # a function defined in an earlier remote cell that bumps a notebook global
    assert kernel.execute("%%remote\nbump()\ncounter").result_text() == "3"
    assert kernel.value("counter") == 3


def test_ipython_syntax_runs_remotely_or_is_refused_before_submitting(kernel: Kernel) -> None:
    kernel.execute("word = 'remote'")
    ex = kernel.execute("%%remote\n!echo hello {word} $word\nlines = !printf 'a\\nb\\n'\n"
                        "here = %pwd\nimport os\npid = os.getpid()")
    assert ex.stream("stdout") == "hello remote remote\n"
    assert kernel.value("(list(lines), pid != __import__('os').getpid())") == (["a", "b"], True)
    before = kernel.value(TASKS)
    for cell, words in [("%%remote\nz = 1\n%matplotlib inline", ["line 3", "%matplotlib"]),
                        ("%%remote\nz = 1\nz?", ["line 3", "z?"])]:
        ex = kernel.execute(cell, allow_error=True)
        assert ex.reply["content"]["ename"] == "UsageError"
        for word in words:
            assert word in ex.reply["content"]["evalue"]
    assert kernel.value(TASKS) == before  # nothing was submitted
    ex = kernel.execute("%%remote\nz = 1\n!exit 3\n1 / 0", allow_error=True)
    tb = _tb(ex)
    assert "line 4" in tb and "1 / 0" in tb


def test_remote_errors_show_the_users_code_only(kernel: Kernel) -> None:
    kernel.execute("import jray\n@jray.remote\ndef fails(v):\n    raise ValueError(f'bad {v}')")
    ex = kernel.execute("r = fails.remote(1)\njray.get(r)", allow_error=True)
    tb = _tb(ex)
    assert "----> 2 jray.get(r)" in tb and "ValueError: bad 1" in tb
    for internal in ("api.py", "core.py", "serialization.py", "skipping hidden"):
        assert internal not in tb, tb
    tb = _tb(kernel.execute("jray.get('nope')", allow_error=True))  # raised in jray's api
    assert "----> 1 jray.get('nope')" in tb and "api.py" not in tb
    tb = _tb(kernel.execute("import threading\nfails.remote(threading.Lock())",
                            allow_error=True))  # cannot be pickled: raised at submission
    assert "----> 2 fails.remote(threading.Lock())" in tb
    assert "remote_function.py" not in tb and "core.py" not in tb and "lock" in tb
    # the switch shows everything
    kernel.execute("import os\nos.environ['JRAY_FULL_TRACEBACK'] = '1'")
    try:
        full = _tb(kernel.execute("jray.get(fails.remote(2))", allow_error=True))
        assert "api.py" in full and "serialization.py" in full
    finally:
        kernel.execute("del os.environ['JRAY_FULL_TRACEBACK']")


def test_cells_and_engines_that_cannot_be_placed_fail_at_once(kernel: Kernel) -> None:
    before = kernel.value(TASKS)
    t0 = time.monotonic()
    for cell, words in [("%%remote --num-gpus 1\nz = 1", ["--num-gpus", "GPU"]),
                        ("%%remote --num-cpus 64\nz = 1", ["--num-cpus", "64 CPU"]),
                        ("%%remote --resources '{\"tpu\": 1}'\nz = 1", ["tpu"])]:
        ex = kernel.execute(cell, allow_error=True, timeout=10)
        assert ex.reply["content"]["ename"] == "UsageError"
        for word in words:
            assert word in ex.reply["content"]["evalue"]
    ex = kernel.execute("%jray engines 4 --num-cpus 1", allow_error=True, timeout=10)
    assert ex.reply["content"]["ename"] == "UsageError"
    assert "4 engines need 4 CPU" in ex.reply["content"]["evalue"]
    assert time.monotonic() - t0 < 10
    assert kernel.value(TASKS) == before
    assert "no engines" in kernel.execute("%jray engines", timeout=10).stream()


def test_an_engine_that_cannot_start_in_time_is_not_registered(kernel: Kernel) -> None:
    kernel.execute("import jray.jupyter.engines as E\nE.START_TIMEOUT_S = 2")
    hog = kernel.execute("%%remote --no-block --num-cpus 2\nimport time\nprint('hogging')\n"
                         "time.sleep(8)\nhogged = 1")
    kernel.wait_for(hog.msg_id, lambda m: m["msg_type"] == "stream"
                    and "hogging" in m["content"]["text"], 30)
    try:
        ex = kernel.execute("%jray engines 1 --num-cpus 1", allow_error=True, timeout=20)
        assert ex.reply["content"]["ename"] == "UsageError"
        assert "engine-0 could not be placed within 2s" in ex.reply["content"]["evalue"]
        assert "no engines" in kernel.execute("%jray engines", timeout=5).stream()
    finally:
        kernel.execute("E.START_TIMEOUT_S = 30.0")
    # once the CPUs are free an engine starts, under the same name
    assert "started 1 engine(s): jray-engine-0" in kernel.execute(
        "%jray engines 1 --num-cpus 1", timeout=30).stream()
    assert kernel.execute("%%remote --engine 0\n21 * 2").result_text() == "42"


def test_interrupting_a_single_ref_get_cancels_its_task(kernel: Kernel,
                                                         tmp_path: Path) -> None:
    started = tmp_path / "started"
    kernel.execute(f"import jray, time\n@jray.remote\ndef sleepy():\n"
                   f"    open({str(started)!r}, 'w').close()\n    time.sleep(60)")
    msg_id = kernel.kc.execute("one = jray.get(sleepy.remote())")
    deadline = time.monotonic() + 30
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert started.exists()
    time.sleep(0.3)  # the kernel is waiting in the get by now
    kernel.interrupt()
    msg = kernel.wait_for(msg_id, lambda m: m["msg_type"] == "stream"
                          and "cancelled" in m["content"]["text"], 15)
    assert "cancelled 1 task(s)" in msg["content"]["text"]
    err = kernel.wait_for(msg_id, lambda m: m["msg_type"] == "error", 15)
    assert err["content"]["ename"] == "KeyboardInterrupt"
    tb = ANSI.sub("", "\n".join(err["content"]["traceback"]))
    assert "one = jray.get(sleepy.remote())" in tb and "zmq" not in tb and "core.py" not in tb
    kernel.settle(msg_id)
    cancelled = "__import__('jray').state.summary()['tasks'].get('cancelled', 0)"
    assert kernel.value(cancelled) >= 1


def test_shutdown_tells_running_no_block_cells(kernel: Kernel) -> None:
    ex = kernel.execute("%%remote --no-block\nimport time\ntime.sleep(30)\nlate = 1")
    kernel.execute("%jray shutdown")
    msg = kernel.wait_for(ex.msg_id, lambda m: m["msg_type"] == "stream"
                          and "stopped before it finished" in m["content"]["text"], 10)
    assert "%jray shutdown" in msg["content"]["text"]
    kernel.execute("%jray init --num-cpus 2")


def test_inputs_changed_in_place_come_back(kernel: Kernel) -> None:
    kernel.execute("import numpy\nlst = [1, 2, 3]\nd = {'a': 1}\nclass O:\n    attr = 1\n"
                   "o = O()\nsmall = numpy.zeros(3)\nbig = numpy.zeros(2_000_000)\n"
                   "shuffled = list(range(50))\nimport random\n"
                   "def scramble(v):\n    random.Random(0).shuffle(v)\n"
                   "untouched = [9]")
    ex = kernel.execute("%%remote\nlst.append(4)\nd['b'] = 2\no.attr = 99\nsmall[0] = 7\n"
                        "big[0] = 1\nbig += 1\nscramble(shuffled)\nprint(len(untouched))")
    assert ex.stream() == "1\n"
    assert kernel.value("(lst, d, o.attr, small.tolist(), float(big[0]), float(big[1]))") == \
        ([1, 2, 3, 4], {"a": 1, "b": 2}, 99, [7.0, 0.0, 0.0], 2.0, 1.0)
    assert kernel.value("shuffled != list(range(50)) and sorted(shuffled) == list(range(50))")
    # a --no-block cell cannot rebind what a call changed: it says so
    ex = kernel.execute("%%remote --no-block\nscramble(untouched_list)\ndone = 1",
                        allow_error=True)
    assert ex.reply["content"]["ename"] == "NameError"
    kernel.execute("untouched_list = list(range(20))")
    ex = kernel.execute("%%remote --no-block\nscramble(untouched_list)\ndone = 1")
    note = kernel.wait_for(ex.msg_id, lambda m: m["msg_type"] == "stream"
                           and "in place" in m["content"]["text"], 20)
    assert "untouched_list" in note["content"]["text"] and "--out" in note["content"]["text"]
    assert kernel.value("untouched_list") == list(range(20))


def test_outputs_are_ordinary_writable_values(kernel: Kernel) -> None:
    kernel.execute("%%remote\nimport numpy as np\nA = np.random.rand(1000, 1000)\n"
                   "parts = {'w': np.ones(1_000_000)}")
    kernel.execute("A[0, 0] = -1.0\nparts['w'][0] = 5")
    assert kernel.value("(float(A[0, 0]), float(parts['w'][0]))") == (-1.0, 5.0)
    kernel.execute("%%remote --zero-copy\nimport numpy as np\nZ = np.ones(1_000_000)")
    assert kernel.value("Z.flags.writeable") is False


def test_notebook_functions_see_notebook_globals_remotely(kernel: Kernel) -> None:
    kernel.execute("scale = 3\ndef g(v):\n    return v * scale\ntally = 0\n"
                   "def count():\n    global tally\n    tally += 1")
    assert kernel.execute("%%remote\ng(2)").result_text() == "6"
    kernel.execute("%%remote\ncount()\ncount()")
    assert kernel.value("tally") == 2


def test_refs_inside_containers_and_function_globals_are_resolved(kernel: Kernel) -> None:
    kernel.execute("%%remote --no-block\nimport time\ntime.sleep(0.5)\na1 = [1, 2, 3]")
    kernel.execute("%%remote --no-block\na2 = [4, 5]")
    kernel.execute("%%remote --no-block\nfactor = 10")
    kernel.execute("parts = [a1, a2]\nby_name = {'x': (a1,)}\n"
                   "def times(v):\n    return v * factor")
    assert kernel.value("type(factor).__name__") == "ObjectRef"
    ex = kernel.execute("%%remote\n(sum(len(p) for p in parts), len(by_name['x'][0]), times(2))")
    assert ex.result_text() == "(5, 3, 20)"
    # the notebook still holds the refs (nothing was rebound)
    assert kernel.value("[type(p).__name__ for p in parts]") == ["ObjectRef"] * 2


def test_rerunning_a_pending_no_block_cell_cancels_the_previous_run(kernel: Kernel) -> None:
    cell = "%%remote --no-block\nimport time\ntime.sleep(20)\nrerun = 1"
    first = kernel.execute(cell)
    second = kernel.execute(cell)
    assert "cancelled the previous run of this cell (rerun)" in second.stream("stderr")
    kernel.wait_for(first.msg_id, lambda m: m["msg_type"] == "stream"
                    and "cancelled: the cell was run again" in m["content"]["text"], 5)
    # the second run is the one the name refers to; it can be cancelled too
    kernel.execute("import jray\njray.cancel(rerun)\ntry:\n    jray.get(rerun, timeout=10)\n"
                   "except Exception as e:\n    rerun_error = type(e).__name__")
    assert kernel.value("rerun_error") == "TaskCancelledError"
