"""IPython syntax in remote cells, notebook tracebacks and namespace binding, without a kernel."""

from __future__ import annotations

import os
import sys
import traceback
from typing import Any

import pytest
from IPython.core.error import UsageError

import jray
from jray._private.debug import HIDE, full_traceback
from jray.jupyter import bind, syntax, tracebacks
from jray.jupyter.cell import analyze
from jray.jupyter.remote_cell import ModuleValue, Unbound, _output
from jray.jupyter.remote_shell import get_ipython


def test_transform_keeps_line_numbers() -> None:
    cell = "\n\nx = 1\n!echo hi\nfiles = !ls\n%pwd\n"
    out = syntax.to_python(cell)
    lines = out.splitlines()
    assert lines[2] == "x = 1"
    assert lines[3] == "get_ipython().system('echo hi')"
    assert lines[4] == "files = get_ipython().getoutput('ls')"
    assert "run_line_magic('pwd'" in lines[5]
    assert syntax.to_python("\ny = 2\n") == "\ny = 2\n"  # no IPython syntax: unchanged
    assert syntax.to_python("\n    a = 1\n    b = a\n") == "\na = 1\nb = a\n"  # dedented
    assert syntax.to_python("\n>>> c = 3\n") == "\nc = 3\n"  # a pasted prompt


@pytest.mark.parametrize(("cell", "words"), [
    ("\nx = 1\n%matplotlib inline", ["line 3", "%matplotlib", "%matplotlib inline"]),
    ("\nx = 1\nx?", ["line 3", "'?' help", "x?"]),
    ("\n%%bash\necho hi", ["line 2", "%%bash"]),
    ("\nimport os\nget_ipython().user_ns", ["line 3", "get_ipython().user_ns"]),
    ("\n%env A=1", ["%env"]),
])
def test_kernel_only_constructs_are_refused_with_their_line(cell: str,
                                                            words: list[str]) -> None:
    with pytest.raises(UsageError) as info:
        syntax.check(syntax.to_python(cell), cell)
    for word in words:
        assert word in str(info.value)


def test_shell_commands_and_remote_magics_pass_and_name_their_variables() -> None:
    cell = "\nn = 3\n!echo {n + k} $path\nout = !ls {folder}\n%pwd\n%env HOME\n%sx echo $who"
    commands = syntax.check(syntax.to_python(cell), cell)
    assert syntax.command_names(commands) == ["path", "n", "k", "folder", "who"]


def test_remote_shell_runs_commands_with_the_callers_names(capsys: Any) -> None:
    ns: dict[str, Any] = {"get_ipython": get_ipython, "n": 21}
    exec("get_ipython().system('echo half of {n * 2} $n')\n"
         "lines = get_ipython().getoutput('printf \"a\\\\nb\\\\n\"')\n"
         "where = get_ipython().run_line_magic('pwd', '')\n"
         "failed = get_ipython().system('exit 3')\n", ns)
    assert capsys.readouterr().out == "half of 42 21\n"
    assert list(ns["lines"]) == ["a", "b"]
    assert ns["where"] == os.getcwd()
    assert ns["_exit_code"] == 3


def test_trim_cuts_jray_frames_after_the_call_site(monkeypatch: pytest.MonkeyPatch) -> None:
    def call_site() -> None:
        jray.get([], timeout=-1)  # refused before any cluster is needed

    with pytest.raises(ValueError) as info:
        call_site()
    tb = info.value.__traceback__
    names = [f.name for f in traceback.extract_tb(tb)]
    assert names[-2:] == ["get", "_check_timeout"]  # raised inside jray's api
    monkeypatch.setenv("JRAY_FULL_TRACEBACK", "1")
    assert full_traceback() and not HIDE
    assert [f.name for f in traceback.extract_tb(tracebacks.trim(tb))] == names
    monkeypatch.delenv("JRAY_FULL_TRACEBACK")
    assert not jray.is_initialized()
    assert not full_traceback() and HIDE
    trimmed = [f.name for f in traceback.extract_tb(tracebacks.trim(tb))]
    assert trimmed[-1] == "call_site" and "get" not in trimmed


def test_trim_keeps_user_code_called_from_jray() -> None:
    frames: list[Any] = []

    def user_callback() -> None:
        frames.append(sys._getframe())
        raise ValueError("from the user's own code")

    def jray_like() -> None:
        __tracebackhide__ = True  # noqa: F841
        user_callback()

    jray_like.__code__ = jray_like.__code__.replace(
        co_filename=os.path.join(os.path.dirname(jray.__file__), "fake.py"))
    with pytest.raises(ValueError) as info:
        jray_like()
    names = [f.name for f in traceback.extract_tb(tracebacks.trim(info.value.__traceback__))]
    assert names[-2:] == ["jray_like", "user_callback"]


def test_import_here_binds_what_the_kernel_can_import() -> None:
    values, notes = bind.import_here([("np", "import json as np"),
                                      ("p", "from os import path as p"),
                                      ("gone", "import no_such_module_anywhere")])
    assert values["np"].__name__ == "json" and values["p"] is os.path
    assert len(notes) == 1 and "gone" in notes[0] and "ModuleNotFoundError" in notes[0]
    assert bind.star_names(["math"])["sqrt"] is __import__("math").sqrt  # type: ignore[index]
    assert bind.star_names(["math", "no_such_module_anywhere"]) is None


def test_apply_binds_deletes_and_drops_as_local_execution_would() -> None:
    info = analyze("del old\nwith open(p) as fh:\n    pass\nlock = 1\nmod = 1\nv = 1")
    ns: dict[str, Any] = {"old": 1, "fh": "kept", "lock": "kept"}
    unpicklable = "its value cannot be pickled (TypeError: no)"
    notes = bind.apply(ns, ["old", "fh", "lock", "mod", "v"],
                       [Unbound("old", bind.NOT_BOUND), Unbound("fh", unpicklable),
                        Unbound("lock", unpicklable), ModuleValue("json"), 5], info, False)
    assert "old" not in ns and ns["fh"] == "kept" and ns["lock"] == "kept"
    assert ns["mod"] is __import__("json") and ns["v"] == 5
    assert notes == ["jray: not brought back (cannot be pickled; --out NAME says why): lock"]
    notes = bind.apply(ns, ["fh"], [Unbound("fh", unpicklable)], info, True)
    assert notes == [f"jray: fh not bound: {unpicklable}"]


def test_modules_travel_as_their_names() -> None:
    assert _output({"m": os}, "m") == ModuleValue("os")
    assert isinstance(_output({}, "m"), Unbound)


def test_container_walks_are_bounded() -> None:
    import numpy as np

    from jray.jupyter.remote_cell import MAX_SCAN, nested_refs, resolve, writable

    loop: list[Any] = []
    loop.append(loop)  # a self-referencing list must not recurse forever
    assert writable(loop) is loop and nested_refs(loop) == [] and resolve(loop, {b"x": 1})
    ro = np.zeros(3)
    ro.flags.writeable = False
    out = writable({"a": [ro], "n": 1})
    assert out["a"][0].flags.writeable and out["n"] == 1
    big = [ro] * (MAX_SCAN + 1)
    assert writable(big) is big  # too long to look into every cell
