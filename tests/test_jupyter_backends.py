"""The magics' logic on the synchronous fake backend: no kernel, no processes.

An in-process IPython shell with the extension loaded runs ``%%remote`` cells
whose tasks the fake backend runs at once in this process (arguments and
results through cloudpickle, as on a worker). What is checked here is the
notebook layer's own logic: inference, binding, the ref DAG, error display,
engines, options passed to the backend, backend switching.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

import jray.jupyter
from jray.jupyter import backends
from jray.jupyter.backends.fake import FakeBackend, FakeRef


@pytest.fixture
def shell() -> Iterator[Any]:
    sh = InteractiveShell.instance()
    sh.run_line_magic("load_ext", "jray")
    jray.jupyter.init(backend="fake")
    try:
        yield sh
    finally:
        sh.run_line_magic("jray", "shutdown")
        sh.extension_manager.unload_extension("jray")
        for name in [n for n in sh.user_ns if not n.startswith("_") and n not in
                     ("In", "Out", "get_ipython", "exit", "quit", "open")]:
            del sh.user_ns[name]


def _fake(sh: Any) -> FakeBackend:
    backend = jray.jupyter._MAGICS[id(sh)].backend
    assert isinstance(backend, FakeBackend)
    return backend


def test_blocking_cell_binds_outputs_and_shows_the_last_value(
        shell: Any, capsys: pytest.CaptureFixture[str]) -> None:
    shell.user_ns["base"] = 20
    res = shell.run_cell("%%remote\nimport os\ntotal = base + 1\nprint('hi')\n"
                         "def triple(x):\n    return 3 * x\ntriple(total)")
    assert res.error_in_exec is None
    out = capsys.readouterr().out
    assert "hi\n" in out and "63" in out  # the output, then the last value
    ns = shell.user_ns
    assert (ns["total"], ns["triple"](2), ns["os"].sep) == (21, 6, "/")
    assert ns["base"] == 20 and "print" not in ns


def test_no_block_outputs_are_refs_and_a_later_cell_depends_on_them(
        shell: Any, capsys: pytest.CaptureFixture[str]) -> None:
    shell.run_cell("%%remote --no-block --name load\nleft = [1, 2]\nright = 3")
    assert isinstance(shell.user_ns["left"], FakeRef)
    assert "left, right now ObjectRef(s)" in capsys.readouterr().out
    # refs as top-level inputs and inside a container both arrive as values
    shell.user_ns["pair"] = {"r": shell.user_ns["right"]}
    shell.run_cell("%%remote\nboth = sum(left) + pair['r']\nboth")
    assert shell.user_ns["both"] == 6
    shell.run_line_magic("jray", "result load")  # the --no-block cell had no last value
    assert _fake(shell).submitted[0]["name"] == "load"


def test_a_remote_error_shows_the_cells_line_and_keeps_the_namespace(shell: Any) -> None:
    shell.user_ns["kept"] = "old"
    res = shell.run_cell("%%remote\nkept = 'new'\nfresh = 1\n1 / 0")
    assert isinstance(res.error_in_exec, ZeroDivisionError)
    lines = res.error_in_exec._render_traceback_()  # what IPython shows for it
    text = "\n".join(lines)
    assert "<remote-cell-" in text and "line 4" in text and "1 / 0" in text
    assert shell.user_ns["kept"] == "old" and "fresh" not in shell.user_ns


def test_missing_name_fails_before_anything_is_submitted(shell: Any) -> None:
    res = shell.run_cell("%%remote\ny = not_defined_anywhere + 1")
    assert isinstance(res.error_in_exec, NameError)
    assert "not_defined_anywhere" in str(res.error_in_exec)
    assert _fake(shell).submitted == []


def test_unpicklable_input_is_named(shell: Any) -> None:
    import threading

    shell.user_ns["the_lock"] = threading.Lock()
    res = shell.run_cell("%%remote\nz = the_lock")
    assert isinstance(res.error_in_exec, TypeError)
    assert "the_lock" in str(res.error_in_exec) and "pickle" in str(res.error_in_exec)


def test_options_reach_the_backend(shell: Any) -> None:
    shell.run_cell("%%remote --num-cpus 1 --retries 2 --retry-exceptions --name sq\nv = 1")
    (opts,) = _fake(shell).submitted
    assert opts == {"name": "sq", "max_retries": 2, "retry_exceptions": True,
                    "num_cpus": 1, "num_returns": 2}
    res = shell.run_cell("%%remote --num-cpus 8\nv = 1")  # the fake node has 2 CPUs
    assert isinstance(res.error_in_exec, UsageError) and "8 CPU" in str(res.error_in_exec)


def test_an_interrupted_wait_cancels_the_cells_task_and_fails_the_cell(
        shell: Any, capsys: pytest.CaptureFixture[str]) -> None:
    fake = _fake(shell)
    fake.interrupt_next_wait = True
    res = shell.run_cell("%%remote --name slow\nnever = 1")
    assert isinstance(res.error_in_exec, KeyboardInterrupt)
    assert "cancelled: slow" in str(res.error_in_exec)
    assert "never" not in shell.user_ns  # the interrupted cell binds nothing
    (ref,) = fake.cancelled  # the cell's last-value ref: its task
    assert "cancelled 1 task(s): slow" in capsys.readouterr().err


def test_running_a_no_block_cell_again_cancels_its_unfinished_run(
        shell: Any, capsys: pytest.CaptureFixture[str]) -> None:
    cell = "%%remote --no-block\nfirst = 1"
    shell.run_cell(cell)
    old = shell.user_ns["first"]
    shell.run_cell(cell)  # no kernel timer here: the first run is still pending
    captured = capsys.readouterr()
    assert "cancelled the previous run of this cell (first)" in captured.err
    fake = _fake(shell)
    assert len(fake.cancelled) == 1 and fake.cancelled[0] is not old  # its last-value ref
    assert shell.user_ns["first"] is not old  # the name now refers to the new run


def test_engines_keep_state_push_and_pull(shell: Any,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    shell.run_line_magic("jray", "engines 2")
    shell.run_cell("%%remote --engine 0\ncounter = 10")
    shell.run_cell("%%remote --engine 0\ncounter += 1")
    shell.run_cell("%%remote --engines all\nprint('here')")
    out = capsys.readouterr().out
    assert "[engine-0] here" in out and "[engine-1] here" in out
    shell.user_ns["payload"] = [1, 2]
    shell.run_line_magic("jray", "push all payload")
    shell.run_cell("%%remote --engine 1\npayload.append(3)")
    shell.run_line_magic("jray", "pull all payload")  # a list per name, in engine order
    assert shell.user_ns["payload"] == [[1, 2], [1, 2, 3]]
    shell.run_line_magic("jray", "pull 0 counter")
    assert shell.user_ns["counter"] == 11
    shell.run_line_magic("jray", "engines")
    assert "jray-engine-0" in capsys.readouterr().out


def test_pull_of_a_missing_name_says_which_engine(shell: Any) -> None:
    shell.run_line_magic("jray", "engines 1")
    with pytest.raises(NameError, match="nothing_here.*engine jray-engine-0"):
        shell.run_line_magic("jray", "pull 0 nothing_here")


def test_status_names_the_backend(shell: Any, capsys: pytest.CaptureFixture[str]) -> None:
    shell.run_cell("%%remote\nq = 1")
    shell.run_line_magic("jray", "status")
    out = capsys.readouterr().out
    assert "fake cluster" in out and "backend  fake" in out and "finished: 1" in out


def test_switching_backend_while_running_is_refused(shell: Any) -> None:
    with pytest.raises(UsageError, match="--backend jray: a fake cluster is running"):
        jray.jupyter.init(backend="jray")
    with pytest.raises(ValueError, match="backend 'nope'"):
        backends.make("nope")


def test_dashboard_says_the_fake_backend_has_no_views(shell: Any) -> None:
    with pytest.raises(UsageError, match="not available on the fake backend"):
        shell.run_line_magic("jray", "dashboard")


def test_ray_backend_without_ray_names_the_extra(shell: Any,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    shell.run_line_magic("jray", "shutdown")
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    monkeypatch.delitem(sys.modules, "jray.jupyter.backends.ray_backend", raising=False)
    with pytest.raises(UsageError, match=r"jray\[ray\]"):
        shell.run_line_magic("jray", "init --backend ray")


def test_nothing_in_the_notebook_layer_imports_ray_but_its_backend() -> None:
    import pathlib
    import re

    root = pathlib.Path(jray.jupyter.__file__).parent
    offenders = [str(p.relative_to(root)) for p in root.rglob("*.py")
                 if p.name != "ray_backend.py"
                 and re.search(r"^\s*(import ray\b|from ray\b)", p.read_text(), re.M)]
    assert offenders == []
