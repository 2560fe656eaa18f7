"""The ``jray`` command line: ``jray lab`` (JupyterLab on a folder of notebooks),
``jray demo`` (a task DAG in a terminal, for machines without Jupyter) and the
cluster commands ``jray start`` / ``jray status`` / ``jray stop`` (``cli_cluster``)."""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time


def _demo(ns: argparse.Namespace) -> int:
    import jray

    t0 = time.perf_counter()
    jray.init(num_cpus=ns.num_cpus)

    @jray.remote
    def load(i: int) -> list[int]:
        return list(range(i * 10, i * 10 + 10))

    @jray.remote
    def square_sum(xs: list[int]) -> int:
        return sum(x * x for x in xs)

    @jray.remote
    def combine(a: int, b: int) -> int:
        return a + b

    parts = [square_sum.remote(load.remote(i)) for i in range(8)]
    while len(parts) > 1:
        parts = [combine.remote(parts[i], parts[i + 1]) for i in range(0, len(parts), 2)]
    total = jray.get(parts[0], timeout=60)
    expected = sum(x * x for x in range(80))
    elapsed = time.perf_counter() - t0
    print(f"jray demo: a DAG of {8 + 8 + 7} tasks (load -> square_sum -> tree of combine)")
    print(f"result {total} (expected {expected}) in {elapsed:.2f} s including cluster start")
    print(f"cluster: {jray.cluster_resources()}")
    print("what ran (task, worker pid, run time):")
    for row in sorted(jray.state.list_tasks(), key=lambda r: r["start_time"] or 0):
        dt = (row["end_time"] or 0) - (row["start_time"] or 0)
        print(f"  {row['name']:<11} {row['state']:<9} pid {row['worker_pid']}  "
              f"{dt * 1e3:6.2f} ms  deps={len(row['depends_on'])}")
    jray.shutdown()
    return 0 if total == expected else 1


def _lab(ns: argparse.Namespace, extra: list[str]) -> int:
    """Replace this process with JupyterLab serving ``ns.directory``."""
    if importlib.util.find_spec("jupyterlab") is None:
        print("jray lab: JupyterLab is not installed; pip install 'jray[lab]'", file=sys.stderr)
        return 2
    if not os.path.isdir(ns.directory):
        print(f"jray lab: {ns.directory!r} is not a directory", file=sys.stderr)
        return 2
    cmd = [sys.executable, "-m", "jupyterlab", f"--ServerApp.root_dir={ns.directory}", *extra]
    if os.geteuid() == 0 and "--allow-root" not in extra:
        cmd.append("--allow-root")  # JupyterLab refuses root without it (containers, CI)
    sys.stdout.flush()
    os.execv(sys.executable, cmd)
    return 0  # not reached


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="jray", description="jray: parallel Python for Jupyter")
    sub = ap.add_subparsers(dest="cmd", required=True)
    demo = sub.add_parser("demo", help="start a local cluster, run a small task DAG, print it")
    demo.add_argument("--num-cpus", type=int, default=None)
    demo.set_defaults(fn=lambda ns, extra: _demo(ns))
    lab = sub.add_parser("lab", help="open JupyterLab on a folder of notebooks "
                         "(other options go to JupyterLab)")
    lab.add_argument("directory", nargs="?", default=".")
    lab.set_defaults(fn=_lab)
    from jray import cli_cluster

    cli_cluster.add_commands(sub)
    ns, extra = ap.parse_known_args(argv)
    if extra and ns.cmd != "lab":
        ap.error(f"unrecognized arguments: {' '.join(extra)}")
    code: int = ns.fn(ns, extra)
    return code


if __name__ == "__main__":
    sys.exit(main())
