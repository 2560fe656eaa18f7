"""A forked child, a malformed message, a stuck or dead head, refs of a cluster that
is gone (issue 10, items 4, 5, 6 and the head-death part of 9)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import zmq

import jray
from jray._private import core
from jray._private.api import _Session
from jray.exceptions import ClusterError, ObjectLostError
from jray.testing import eventually, jray_processes

pytestmark = pytest.mark.integration


def _run(tmp_path: Path, script: str, timeout: float = 120) -> dict[str, object]:
    path = tmp_path / "probe.py"
    path.write_text(textwrap.dedent(script))
    proc = subprocess.run([sys.executable, str(path)], capture_output=True, text=True,
                          timeout=timeout, cwd=os.getcwd())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


# --- item 4: fork after init ------------------------------------------------------------
FORK = """
    import json, os, sys, time
    import numpy as np
    import jray
    from jray.exceptions import InitError

    @jray.remote
    def add(x, y):
        return x + y

    info = jray.init(num_cpus=1)
    big = jray.put(np.arange(1 << 20))  # 8 MiB in shared memory
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child uses the API, then exits normally (atexit runs)
        os.close(r)
        t = time.monotonic()
        try:
            jray.get(big, timeout=5)
            err = ""
        except InitError as exc:
            err = str(exc)
        took = time.monotonic() - t
        jray.init(num_cpus=1)  # a cluster of its own
        own = jray.get(add.remote(2, 3), timeout=60)
        try:  # the parent's refs are not this cluster's
            jray.get(big, timeout=5)
            lost = ""
        except jray.exceptions.ObjectLostError as exc:
            lost = str(exc)
        jray.shutdown()
        os.write(w, json.dumps({"err": err, "took": took, "own": own, "lost": lost}).encode())
        os.close(w)
        sys.exit(0)
    os.close(w)
    _, status = os.waitpid(pid, 0)
    child = json.loads(os.read(r, 65536))
    alive = os.path.isdir(info["session_dir"])
    value = int(jray.get(big, timeout=30)[-1])
    task = jray.get(add.remote(1, 2), timeout=60)
    jray.shutdown()
    print(json.dumps({"child": child, "status": status, "session_dir_kept": alive,
                      "value": value, "task": task}))
"""


@pytest.mark.timeout(180)
def test_forked_child_neither_uses_nor_destroys_the_parents_session(tmp_path: Path) -> None:
    out = _run(tmp_path, FORK)
    child = out["child"]
    assert isinstance(child, dict)
    assert "forked" in child["err"] and "jray.init()" in child["err"], child
    assert child["took"] < 2 and child["own"] == 5, child
    assert "forked process" in child["lost"], child
    assert out["status"] == 0 and out["session_dir_kept"], out
    assert out["value"] == (1 << 20) - 1 and out["task"] == 3, out


# --- item 6: a ref of a cluster that was shut down ----------------------------------------
@pytest.mark.timeout(60)
def test_ref_of_a_shut_down_cluster_raises_instead_of_starting_one() -> None:
    jray.init(num_cpus=1)
    ref = jray.put(1)
    big = jray.put(np.ones(1 << 18))
    jray.shutdown()
    t = time.monotonic()
    for refs in (ref, [ref, big]):
        with pytest.raises(ObjectLostError, match="shut down"):
            jray.get(refs, timeout=10)  # type: ignore[arg-type]
    with pytest.raises(ObjectLostError, match="shut down"):
        jray.wait([big], timeout=10)
    assert time.monotonic() - t < 2
    assert not jray.is_initialized()  # no cluster was started for it
    jray.init(num_cpus=1)  # a new cluster still refuses the old refs
    try:
        with pytest.raises(ObjectLostError, match="shut down"):
            jray.get(ref, timeout=10)
        assert jray.get(jray.put(7), timeout=10) == 7
    finally:
        jray.shutdown()


# --- item 5: malformed messages, bounded waits, exit with the parent ----------------------
def _head_log() -> str:
    cl = _Session.cluster
    assert cl is not None
    with open(os.path.join(cl.session_dir, "head.log")) as f:
        return f.read()


@pytest.mark.timeout(120)
def test_malformed_messages_are_dropped_and_counted() -> None:
    info = jray.init(num_cpus=1)
    ctx = zmq.Context()
    try:
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(str(info["address"]))
        sock.send_multipart([b"first", b"second"])  # two parts: used to desynchronise
        sock.send(b"not a pickle at all")
        sock.send_multipart([b"a", b"b", b"c"])

        @jray.remote
        def add(x: int, y: int) -> int:
            return x + y

        assert jray.get([add.remote(i, 1) for i in range(20)], timeout=30) == list(
            range(1, 21))
        arr = np.arange(1 << 18, dtype=np.int64)  # 2 MiB: reserves room in the store
        assert np.array_equal(jray.get(jray.put(arr), timeout=30), arr)
        assert eventually(lambda: "3 parts, not 2 (1 so far)" in _head_log(), 10), _head_log()
        sock.close(0)
    finally:
        ctx.term()
        jray.shutdown()


@pytest.mark.timeout(120)
def test_reserve_waits_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    jray.init(num_cpus=1)
    cl = _Session.cluster
    assert cl is not None
    head = cl.procs["head"]
    try:
        jray.get(jray.put(1), timeout=30)
        monkeypatch.setattr(core, "RESERVE_TIMEOUT_S", 1.0)
        os.kill(head.pid, signal.SIGSTOP)  # a head that answers nothing
        t = time.monotonic()
        with pytest.raises(ClusterError, match="did not grant room"):
            jray.put(np.ones(1 << 18))
        assert time.monotonic() - t < 5
    finally:
        os.kill(head.pid, signal.SIGCONT)
    try:
        arr = np.ones(1 << 18)
        assert np.array_equal(jray.get(jray.put(arr), timeout=30), arr)
        assert eventually(
            lambda: next(iter(jray.state.store_summary().values()))["reserved"] == 0, 10), \
            jray.state.store_summary()
    finally:
        jray.shutdown()


KILLED_DRIVER = """
    import json, time
    import zmq
    import jray
    info = jray.init(num_cpus=1)
    sock = zmq.Context().socket(zmq.DEALER)
    sock.connect(info["address"])
    sock.send_multipart([b"first", b"second"])
    @jray.remote
    def one():
        return 1

    jray.get(one.remote(), timeout=30)
    print(json.dumps(info), flush=True)
    time.sleep(120)
"""


@pytest.mark.timeout(120)
def test_cluster_exits_with_a_killed_driver_after_a_malformed_message(tmp_path: Path) -> None:
    path = tmp_path / "driver.py"
    path.write_text(textwrap.dedent(KILLED_DRIVER))
    proc = subprocess.Popen([sys.executable, str(path)], stdout=subprocess.PIPE, text=True,
                            cwd=os.getcwd())
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        kids = jray_processes(psutil.Process(proc.pid))
        assert len(kids) >= 3  # head, node daemon, a worker
    finally:
        proc.kill()
        proc.wait(30)
    assert eventually(lambda: not any(k.is_running() and k.status() != psutil.STATUS_ZOMBIE
                                      for k in kids), 10), [k.cmdline() for k in kids]
    assert eventually(lambda: not os.path.exists(str(info["session_dir"])), 10)


# --- item 9: the head dies ----------------------------------------------------------------
@pytest.mark.timeout(120)
def test_node_and_workers_exit_when_the_head_dies() -> None:
    jray.init(num_cpus=2)
    try:
        cl = _Session.cluster
        assert cl is not None
        jray.get(jray.put(1), timeout=30)
        head = cl.procs["head"]
        assert eventually(lambda: len(jray_processes()) >= 4, 30)  # head, node, 2 workers
        others = [p for p in jray_processes() if p.pid != head.pid]
        os.kill(head.pid, signal.SIGKILL)
        t = time.monotonic()
        assert eventually(lambda: not jray_processes(), 10), [p.cmdline() for p in others]
        assert time.monotonic() - t < 5
    finally:
        jray.shutdown()


STUCK = """
    import os, sys, time
    from jray._private import transport
    mode = sys.argv[1]
    if mode == "told":  # told to stop, but the main loop never gets there
        transport.exit_watchdog(None, lambda: True, grace_s=0.5)
        time.sleep(60)
    r, w = os.pipe()
    if os.fork() == 0:  # the daemon: its parent dies while it is stuck
        parent = os.getppid()
        transport.exit_watchdog(parent, lambda: False, grace_s=0.5)
        os.write(w, str(os.getpid()).encode())
        time.sleep(60)
        os._exit(0)
    print(os.read(r, 32).decode(), flush=True)
    os._exit(0)
"""


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", ["told", "orphaned"])
def test_watchdog_ends_a_daemon_whose_loop_is_stuck(tmp_path: Path, mode: str) -> None:
    path = tmp_path / "stuck.py"
    path.write_text(textwrap.dedent(STUCK))
    t = time.monotonic()
    proc = subprocess.run([sys.executable, str(path), mode], capture_output=True, text=True,
                          timeout=30, cwd=os.getcwd())
    if mode == "told":
        assert proc.returncode == 3, proc.stderr
        assert time.monotonic() - t < 10
        return
    pid = int(proc.stdout.strip())

    def gone() -> bool:
        try:
            return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    assert eventually(gone, 10)
