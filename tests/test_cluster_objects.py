"""Objects between machines: a node in its own mount namespace with a private
``/dev/shm`` (its store is out of reach of the other node, as on another machine)
joins a TCP cluster on loopback. Large arrays made on one node are read by tasks
on the other: the reading node pulls each object once, straight from the node
holding it, however many of its tasks need it, and results come back correct;
spilled objects are pulled from the spill file, and copies make room first.

Needs root, ``unshare`` and ``mount`` (skipped, saying which is missing, otherwise).
The namespace goes with its last process; every process is checked gone.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_cluster_tcp import JRAY, Cluster, _alive, tcp  # noqa: F401  (a fixture)

import jray
from jray.testing import eventually

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]
MISSING = [name for name in ("unshare", "mount") if shutil.which(name) is None]
if os.geteuid() != 0:
    MISSING.append("root (for a private /dev/shm)")


class Remote:
    """A node daemon (``jray start --address --block``) whose ``/dev/shm`` is its own."""

    def __init__(self, cl: Cluster, runtime: Path, hidden: Path, cpus: int = 4) -> None:
        runtime.mkdir(mode=0o700)
        env = {**cl.env, "XDG_RUNTIME_DIR": str(runtime)}
        env.pop("JRAY_SPILL_DIR", None)
        # its own /dev/shm, and the other node's spill directory out of its sight
        script = ('mount -t tmpfs -o size=512m,mode=1777 jray-test /dev/shm && '
                  'mount -t tmpfs -o size=1m,mode=0700 jray-test "$0" && exec "$@"')
        self.proc = subprocess.Popen(
            ["unshare", "-m", "--propagation", "private", "sh", "-c", script, str(hidden),
             *JRAY,
             "start", "--address", cl.address, "--secret-file", cl.secret, "--num-cpus",
             str(cpus), "--resources", '{"far": 100}', "--object-store-memory", "256M",
             "--block"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True)
        self.dir = runtime / "jray"

    def record(self) -> dict[str, Any] | None:
        import glob
        import json

        paths = glob.glob(str(self.dir / "started-*.json"))
        if not paths:
            return None
        with open(paths[0]) as f:
            rec: dict[str, Any] = json.load(f)
        return rec

    def stop(self) -> None:
        rec = self.record()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            out, _ = self.proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            out, _ = self.proc.communicate(timeout=10)
        print(f"--- remote node output\n{out.decode(errors='replace')[-3000:]}")
        if rec is not None:
            pids = list(rec["pids"].values())
            assert eventually(lambda: not any(_alive(p) for p in pids), 15), \
                f"processes of the remote node outlived it: {pids}"
            shutil.rmtree(rec["session_dir"], ignore_errors=True)


@pytest.fixture
def far(tcp: Cluster, tmp_path: Path) -> Iterator[tuple[Cluster, dict[str, Any]]]:  # noqa: F811
    if MISSING:
        pytest.skip(f"needs {', '.join(MISSING)}")
    spill = tmp_path / "near-spill"  # (spill files of the head's node)
    spill.mkdir(mode=0o700)
    tcp.env["JRAY_SPILL_DIR"] = str(spill)
    tcp.head(cpus=2)
    remote = Remote(tcp, tmp_path / "far", spill)
    try:
        # joined, and its jray start recorded what it started (it writes that after)
        assert eventually(lambda: len(tcp.status()["nodes"]) == 2
                          and remote.record() is not None, 60), \
            "the node with its own /dev/shm did not join"
        rec = remote.record()
        assert rec is not None
        jray.init(address=tcp.address, _secret_file=tcp.secret)
        yield tcp, rec
    finally:
        jray.shutdown()
        remote.stop()


@jray.remote(resources={"far": 1})
def _where_and_sum(x: np.ndarray) -> tuple[str, float, int]:
    import time

    time.sleep(0.2)  # the four readers overlap
    return jray.get_runtime_context().get_node_id(), float(x.sum()), x.nbytes


@jray.remote(resources={"far": 1})
def _make(n: int, fill: int) -> np.ndarray:
    return np.full(n, fill, dtype=np.uint8)


@jray.remote
def _total(x: np.ndarray) -> int:
    return int(x.sum(dtype=np.int64))


def test_arrays_made_here_are_pulled_once_by_the_far_node(
        far: tuple[Cluster, dict[str, Any]]) -> None:
    cl, rec = far
    far_id = rec["node_id"]
    arrays = [np.arange(1 << 17, dtype=np.float64), np.arange(50 << 17, dtype=np.float64)]
    refs = []
    for arr in arrays:  # 1 MiB, then 50 MiB
        ref = jray.put(arr)
        refs.append(ref)
        results = jray.get([_where_and_sum.remote(ref) for _ in range(4)], timeout=120)
        assert {r[0] for r in results} == {far_id}
        assert [r[1:] for r in results] == [(float(arr.sum()), arr.nbytes)] * 4
    st = jray.state.store_summary()[far_id]
    assert len(_copies_on(rec)) == 2
    assert st["pulls"] == 2, st  # once per object, not once per task
    assert st["pulled_bytes"] >= sum(a.nbytes for a in arrays)
    assert st["copies"] == 2 and st["copy_bytes"] >= sum(a.nbytes for a in arrays)
    assert f"store {far_id}: " in (text := cl.run("status")), text
    assert "2 copies of other machines' objects (2 pulls, 51.0 MiB)" in text, text
    del refs, ref  # collected: the far node's copies go too
    assert eventually(lambda: jray.state.store_summary()[far_id]["copies"] == 0, 10)
    assert eventually(lambda: not _copies_on(rec), 10), "the copies' segments stayed"


def _copies_on(rec: dict[str, Any]) -> list[str]:
    """The copy segments in the far node's own /dev/shm (seen through its /proc root)."""
    shm_dir = f"/proc/{rec['pids']['node']}/root/dev/shm"
    return [n for n in os.listdir(shm_dir) if n.startswith(rec["shm_prefix"] + "x")]


def test_results_made_on_the_far_node_come_back(far: tuple[Cluster, dict[str, Any]]) -> None:
    cl, rec = far
    far_id = rec["node_id"]
    near_id = next(n["NodeID"] for n in cl.status()["nodes"] if n["NodeID"] != far_id)
    for n, fill in ((1 << 20, 3), (50 << 20, 5)):
        ref = _make.remote(n, fill)
        got = jray.get(ref, timeout=120)
        assert got.shape == (n,) and int(got[0]) == fill and int(got[-1]) == fill
        assert int(got.sum(dtype=np.int64)) == n * fill
        # a task on the head's machine reads it too: that node already holds the copy
        assert jray.get(_total.options(resources={}).remote(ref), timeout=60) == n * fill
        del got, ref
    st = jray.state.store_summary()[near_id]
    assert st["pulls"] == 2, st
    assert eventually(lambda: jray.state.store_summary()[near_id]["copies"] == 0, 10), \
        "copies of collected objects stayed"


def test_spilled_sources_and_evicted_copies(far: tuple[Cluster, dict[str, Any]]) -> None:
    cl, rec = far
    far_id = rec["node_id"]
    near_id = next(n["NodeID"] for n in cl.status()["nodes"] if n["NodeID"] != far_id)
    n = 40 << 20
    x1 = jray.put(np.full(n, 1, dtype=np.uint8))
    x2 = jray.put(np.full(n, 2, dtype=np.uint8))  # the near store holds 64 MiB: x1 spills
    assert jray.state.store_summary()[near_id]["spills"] >= 1
    results = jray.get([_where_and_sum.remote(x) for x in (x1, x2)], timeout=120)
    assert [r[1] for r in results] == [float(n), float(2 * n)]
    assert jray.state.store_summary()[far_id]["copies"] == 2
    # 200 MiB made on the far node (256 MiB store, 80 MiB of copies): the copies go first
    big = _make.remote(200 << 20, 9)
    assert jray.get(_total.options(resources={"far": 1}).remote(big), timeout=120) == \
        9 * (200 << 20)
    st = jray.state.store_summary()[far_id]
    assert st["copies_evicted"] >= 1 and st["spills"] == 0, st
    del big  # (collected before the re-reads, so that they need no room)
    assert eventually(lambda: jray.state.store_summary()[far_id]["used"] <= 80 << 20, 15)
    again = jray.get([_where_and_sum.remote(x) for x in (x1, x2)], timeout=120)
    assert [r[1] for r in again] == [float(n), float(2 * n)]
    assert jray.state.store_summary()[far_id]["pulls"] == 2 + st["copies_evicted"]


def test_an_actor_on_the_far_node_reads_and_returns_large_arrays(
        far: tuple[Cluster, dict[str, Any]]) -> None:
    _, rec = far

    @jray.remote(resources={"far": 1})
    class FarSummer:  # defined here: pickled by value (the nodes cannot import tests/)
        def where_and_sum(self, x: np.ndarray) -> tuple[str, float]:
            return jray.get_runtime_context().get_node_id(), float(x.sum())

        def make(self, n: int) -> np.ndarray:
            return np.full(n, 2, dtype=np.uint8)

    actor = FarSummer.remote()
    arr = np.arange(5 << 17, dtype=np.float64)  # 5 MiB, made here
    ref = jray.put(arr)
    assert jray.get([actor.where_and_sum.remote(ref) for _ in range(3)], timeout=120) == \
        [(rec["node_id"], float(arr.sum()))] * 3
    got = jray.get(actor.make.remote(8 << 20), timeout=120)  # 8 MiB, made there
    assert got.nbytes == 8 << 20 and int(got.sum(dtype=np.int64)) == 2 * (8 << 20)
    assert jray.state.store_summary()[rec["node_id"]]["pulls"] == 1
    jray.kill(actor)
