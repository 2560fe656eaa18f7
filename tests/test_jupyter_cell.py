"""The Jupyter layer without a kernel: cell analysis, compilation, import hygiene."""

from __future__ import annotations

import subprocess
import sys
import traceback

import pytest

from jray.jupyter.cell import analyze, compile_cell, default_label


@pytest.mark.parametrize(("source", "reads", "writes"), [
    ("x = a + 1\ny = x * b", ("a", "b"), ("x", "y")),
    ("t += 1", ("t",), ("t",)),
    ("import numpy as np\nfrom os import path as p\nimport a.b", (), ("np", "p", "a")),
    ("def f(q):\n    return q + g\nclass C:\n    z = h", ("g", "h"), ("f", "C")),
    ("[k for k in m]", ("m",), ()),
    ("@dec\ndef f(a=dflt):\n    pass", ("dec", "dflt"), ("f",)),
    ("with open(p) as fh:\n    pass", ("open", "p"), ("fh",)),
    ("if (w := v):\n    pass", ("v",), ("w",)),
    ("try:\n    pass\nexcept E as err:\n    pass", ("E",), ("err",)),
    ("def outer():\n    loc = 1\n    def inner():\n        return loc\n    return inner",
     (), ("outer",)),
])
def test_reads_and_writes(source: str, reads: tuple[str, ...], writes: tuple[str, ...]) -> None:
    info = analyze(source)
    assert info.reads == reads
    assert info.writes == writes


def test_last_expression_and_semicolon() -> None:
    assert analyze("x = 1\nx").last_expr
    assert not analyze("x = 1").last_expr
    assert analyze("x = 1\nx;").quiet
    assert not analyze("x = 1\nx").quiet


def test_default_label_skips_imports() -> None:
    src = "import time\ntime.sleep(1)\nresult = 2"
    assert default_label(src, analyze(src)) == "result"
    assert default_label("print('hi')", analyze("print('hi')")) == "print('hi')"


def test_compiled_cell_traceback_has_cell_lines() -> None:
    body, tail = compile_cell("a = 1\nb = 2\nc = 1 / 0\n", "<remote-cell-99>")
    assert tail is None
    ns: dict[str, object] = {}
    with pytest.raises(ZeroDivisionError) as info:
        exec(body, ns)
    text = "".join(traceback.format_exception(info.value))
    assert 'File "<remote-cell-99>", line 3' in text and "c = 1 / 0" in text
    body, tail = compile_cell("a = 4\na * 2", "<remote-cell-100>")
    exec(body, ns)
    assert tail is not None and eval(tail, ns) == 8


def test_importing_jray_registers_nothing() -> None:
    code = ("import sys, jray\n"
            "assert 'IPython' not in sys.modules and 'jray.jupyter' not in sys.modules\n"
            "assert callable(jray.load_ipython_extension)\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
