"""A ``%%remote`` cell's output and that of the tasks it starts, in a real kernel: one stream,
in the order the lines were printed, also on fresh workers (their first connections)."""

from __future__ import annotations

import pytest
from jupyter_kernel import Kernel, kernel, no_leaks  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

ROUNDS = 4

CELL = """%%remote{opts}
import jray

@jray.remote
def grandchild(i):
    print(f"grandchild {{i}}")
    return i

@jray.remote
def child(i):
    print(f"child {{i}} before")
    got = jray.get(grandchild.remote(i))
    print(f"child {{i}} after", flush=True)
    return got

for i in range({rounds}):
    print(f"cell {{i}} before")
    assert jray.get(child.remote(i)) == i
    print(f"cell {{i}} after")
"""


def _expected(rounds: int) -> list[str]:
    lines = []
    for i in range(rounds):
        lines += [f"cell {i} before", f"child {i} before", f"grandchild {i}",
                  f"child {i} after", f"cell {i} after"]
    return lines


def _lines(text: str) -> list[str]:
    """The printed lines without the ``(name pid=N)`` prefix tasks' lines carry."""
    out = []
    for line in text.splitlines():
        if line.startswith("(") and ") " in line:
            name, _, rest = line.partition(") ")
            assert name.split()[0] in ("(child", "(grandchild"), line
            line = rest
        out.append(line)
    return out


def _stream(kernel: Kernel, msg_id: str) -> str:
    """A ``--no-block`` cell's stdout, less the magic's own line saying what it submitted."""
    text = "".join(m["content"]["text"] for m in kernel.by_parent[msg_id]
                   if m["msg_type"] == "stream" and m["content"]["name"] == "stdout")
    return "".join(ln for ln in text.splitlines(True) if not ln.startswith("jray: "))


def test_nested_output_in_order_on_fresh_and_warm_workers(kernel: Kernel) -> None:
    for cluster in range(3):  # each init: fresh workers, first connections everywhere
        if cluster:
            kernel.execute("%jray shutdown")
            kernel.execute("%jray init --num-cpus 2")
        for _ in range(4):
            ex = kernel.execute(CELL.format(opts="", rounds=ROUNDS))
            assert _lines(ex.stream("stdout")) == _expected(ROUNDS), ex.stream()
            assert ex.stream("stderr") == ""


def test_nested_output_in_order_in_a_no_block_cell(kernel: Kernel) -> None:
    msg_id = kernel.execute(CELL.format(opts=" --no-block", rounds=ROUNDS)).msg_id
    want = _expected(ROUNDS)
    kernel.wait_for(msg_id, lambda m: len(_lines(_stream(kernel, msg_id))) >= len(want), 60)
    assert _lines(_stream(kernel, msg_id)) == want
