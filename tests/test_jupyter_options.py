"""Magic arguments without a kernel: every bad option is a UsageError naming it."""

from __future__ import annotations

import pytest
from IPython.core.error import UsageError

from jray.jupyter import options


@pytest.mark.parametrize(("parser", "line", "named"), [
    ("cell", "--no-blok", "--no-blok"),
    ("cell", "--num-cpus abc", "--num-cpus"),
    ("cell", "--num-gpus -1", "--num-gpus"),
    ("cell", "--resources '{bad'", "--resources"),
    ("cell", "--resources '[1]'", "--resources"),
    ("cell", "--resources '{\"accel\": -2}'", "accel"),
    ("cell", "--resources '{\"CPU\": 2}'", "--num-cpus"),
    ("cell", "--engines some", "--engines"),
    ("cell", "--retries -1", "--retries"),
    ("cell", "--retries 1.5", "--retries"),
    ("cell", "--engine 0 --engines all", "--engines"),
    ("cell", "--name 'unclosed", "cannot split"),
    ("line", "frob", "frob"),
    ("line", "engines -3", "-3"),
    ("line", "engines 0", "N"),
    ("line", "init --num-cpus 0", "--num-cpus"),
    ("line", "init --object-store-memory lots", "--object-store-memory"),
    ("line", "push 0", "names"),
])
def test_bad_arguments_raise_usage_error_naming_the_option(parser: str, line: str,
                                                          named: str) -> None:
    p = options.cell_parser() if parser == "cell" else options.line_parser()
    with pytest.raises(UsageError) as info:
        options.parse(p, line)
    assert named in str(info.value)
    assert "_run_cell" not in str(info.value)


def test_good_arguments_parse() -> None:
    a = options.parse(options.cell_parser(), "--num-cpus 0.5 --resources '{\"accel\": 1}' "
                                             "--no-block --retries 2 --out x,y")
    assert (a.num_cpus, a.resources, a.no_block, a.retries) == (0.5, {"accel": 1}, True, 2)
    assert options.names(a.outputs, "%%remote --out") == ("x", "y")
    assert options.demand(a, 1.0) == {"CPU": 0.5, "accel": 1.0}
    e = options.parse(options.line_parser(), "engines 3 --num-gpus 1")
    assert (e.n, e.num_gpus) == (3, 1.0)
    assert options.parse(options.line_parser(), "init --object-store-memory 2G") \
        .object_store_memory == 2 << 30
    with pytest.raises(UsageError, match="%%remote --out: '1x' is not a variable name"):
        options.names("a, 1x", "%%remote --out")


NODES = [{"Alive": True, "Resources": {"CPU": 2.0, "accel": 1.0}},
         {"Alive": True, "Resources": {"CPU": 4.0}},
         {"Alive": False, "Resources": {"CPU": 64.0, "GPU": 8.0}}]


def test_placeable_demands_pass() -> None:
    options.check_placeable("%%remote", {"CPU": 4.0}, NODES)
    options.check_placeable("%%remote", {"CPU": 2.0, "accel": 1.0}, NODES)
    options.check_placeable("%jray engines", {"CPU": 1.0}, NODES, count=6)


@pytest.mark.parametrize(("need", "count", "words"), [
    ({"GPU": 1.0}, 1, ["--num-gpus", "needs 1 GPU", "no node has any GPU", "6 CPU"]),
    ({"CPU": 64.0}, 1, ["--num-cpus", "needs 64 CPU", "largest node has 4"]),
    ({"tpu": 1.0}, 1, ["--resources", "tpu"]),
    ({"CPU": 1.0}, 7, ["7 engines need 7 CPU", "the cluster has 6"]),
])
def test_unplaceable_demands_name_the_resource(need: dict[str, float], count: int,
                                               words: list[str]) -> None:
    with pytest.raises(UsageError) as info:
        options.check_placeable("%%remote", need, NODES, count=count)
    for word in words:
        assert word in str(info.value)
