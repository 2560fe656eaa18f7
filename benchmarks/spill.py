"""Spill and restore throughput with a small store, jray beside Ray (same code).

``python -m benchmarks.spill [--peers jray,ray] [--total-mib 2048]``

Each peer gets ``object_store_memory=512 MiB`` and keeps refs to ``total``
MiB of distinct 64 MiB arrays, so most of them must be spilled; then every
array is read back and checked. Reports MB/s for the put phase (which spills)
and the get phase (which restores), each peer in a fresh subprocess.
"""

from __future__ import annotations

import argparse
import importlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

MIB = 1 << 20


def run_one(name: str, total_mib: int) -> dict[str, Any]:
    import numpy as np

    mod = importlib.import_module(name)
    opts: dict[str, object] = {"num_cpus": 2, "object_store_memory": 512 * MIB}
    spill_dir = None
    if name == "ray":
        opts["include_dashboard"] = False
    else:
        spill_dir = tempfile.mkdtemp(prefix="jray-bench-spill-")
        opts["spill_dir"] = spill_dir
    mod.init(**opts)
    n = total_mib // 64
    refs = []
    start = time.perf_counter()
    for i in range(n):
        refs.append(mod.put(np.full(64 * MIB // 8, i, dtype=np.int64)))
    put_s = time.perf_counter() - start
    start = time.perf_counter()
    for i, ref in enumerate(refs):
        arr = mod.get(ref)
        if int(arr[-1]) != i:
            raise AssertionError(f"array {i} came back wrong")
        del arr
    get_s = time.perf_counter() - start
    mod.shutdown()
    if spill_dir is not None:
        shutil.rmtree(spill_dir, ignore_errors=True)
    total = n * 64 * MIB / 1e6
    return {
        "put_spilling_MBps": total / put_s,
        "get_restoring_MBps": total / get_s,
        "version": getattr(mod, "__version__", "?"),
    }


def _loadavg() -> str:
    try:
        with open("/proc/loadavg", encoding="ascii") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--peers", default="jray,ray")
    ap.add_argument("--total-mib", type=int, default=2048)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ns = ap.parse_args()
    if ns.child:
        print(json.dumps(run_one(ns.child, ns.total_mib)))
        return
    results: dict[str, dict[str, Any]] = {}
    loads: dict[str, tuple[str, str]] = {}
    for peer in ns.peers.split(","):
        load_start = _loadavg()
        proc = subprocess.run(
            [sys.executable, "-m", "benchmarks.spill", "--child", peer,
             "--total-mib", str(ns.total_mib)],
            capture_output=True, text=True, timeout=600,
        )
        if proc.returncode != 0:
            print(f"{peer}: failed\n{proc.stderr[-2000:]}")
            continue
        results[peer] = json.loads(proc.stdout.strip().splitlines()[-1])
        loads[peer] = (load_start, _loadavg())
    print(f"{ns.total_mib} MiB in 64 MiB arrays through a 512 MiB store")
    print(f"{'peer':<6} {'version':>8} {'put (spilling) MB/s':>20} {'get (restoring) MB/s':>21}"
          "  load avg start -> end")
    for peer, r in results.items():
        print(f"{peer:<6} {r['version']:>8} {r['put_spilling_MBps']:>20,.0f} "
              f"{r['get_restoring_MBps']:>21,.0f}  {loads[peer][0]} -> {loads[peer][1]}")


if __name__ == "__main__":
    main()
