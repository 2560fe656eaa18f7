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


def test_names_bound_by_imports_carry_their_statement() -> None:
    info = analyze("import numpy as np\nimport os.path\nfrom os import path as p, sep\n"
                   "try:\n    import foo\nexcept ImportError:\n    foo = None\n"
                   "from . import rel\nx = np.zeros(3)")
    assert dict(info.imports) == {"np": "import numpy as np", "os": "import os.path",
                                  "p": "from os import path as p", "sep": "from os import sep"}
    assert "foo" in info.writes and "foo" not in dict(info.imports)  # bound otherwise too
    assert "rel" not in dict(info.imports)  # a relative import cannot run in the kernel
    assert info.first_name == "foo"


def test_star_imports_deletes_temporaries_and_global_writes() -> None:
    info = analyze("from math import *\nfrom os.path import *\nsqrt(16)")
    assert info.star_imports == ("math", "os.path")
    info = analyze("del x, y\nz = 1")
    assert info.deletes == ("x", "y") and info.reads == ("x", "y")
    info = analyze("with open(p) as fh:\n    t = fh.read()\nfor i in range(3):\n    pass\n"
                   "try:\n    pass\nexcept OSError as err:\n    pass\ni = 5")
    assert set(info.temporaries) == {"fh", "err"}  # i is also assigned plainly
    info = analyze("def bump():\n    global counter\n    counter += 1\n"
                   "def reset():\n    global other\n    other = 0\nbump()")
    assert info.writes == ("bump", "reset", "counter", "other")
    assert info.reads == ("counter",)  # += reads it; ``other = 0`` does not


def test_listing_is_what_tracebacks_show() -> None:
    body, _ = compile_cell("a = 1\nget_ipython().system('ls')\nb = 2\n", "<remote-cell-7>",
                           "a = 1\n!ls\nb = 2\n")
    with pytest.raises(ZeroDivisionError) as info:
        exec(body, {"get_ipython": lambda: 1 / 0})
    text = "".join(traceback.format_exception(info.value))
    assert 'File "<remote-cell-7>", line 2' in text and "!ls" in text
