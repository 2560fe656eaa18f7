"""Cluster benchmarks: ``python -m benchmarks.cluster [--json OUT]``.

- ``three_node_tasks_async``: no-op tasks/s with a head and three node daemons
  (one CPU each) started by ``jray start`` on this machine, over TCP loopback
  (CurveZMQ), from a driver joined with ``init(address=)``; beside it the same
  workload on an embedded one-node cluster with three CPUs (``ipc://``);
- ``tcp_100MiB_transfer``: 100 MiB in 1 MiB frames through jray's TCP sockets
  (a CurveZMQ PUSH to a PULL, as a worker sends to an owner), GB/s with
  encryption on and off (``JRAY_TCP_PLAINTEXT=1``);
- ``pull_100MiB_*``: a node's pull of a 100 MiB object from another node's object
  server (the path objects take between machines), encryption on and off, and
  libsodium's XSalsa20-Poly1305 rate on one core (``benchmarks.cluster_transfer``);
- ``dead_node_detection`` and ``job_after_node_loss``: a node SIGKILLed while 30
  tasks of 0.2 s run; seconds until ``jray.nodes()`` shows it dead, and the
  job's time against the same job without the loss.

Each cluster lives in a private runtime directory and is stopped at the end.
The numbers are only comparable on a quiet machine (``/proc/loadavg`` is
recorded).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

import zmq

import jray
from benchmarks._tasks import noop as _noop_fn


def _cli(env: dict[str, str], *args: str) -> None:
    subprocess.run([sys.executable, "-m", "jray.cli", *args], env=env, check=True,
                   capture_output=True, timeout=120)


def _records(runtime: str) -> list[dict[str, Any]]:
    out = []
    d = os.path.join(runtime, "jray")
    for name in sorted(os.listdir(d)):
        if name.startswith("started-"):
            with open(os.path.join(d, name)) as f:
                out.append(json.load(f))
    return out


class TcpCluster:
    def __init__(self, nodes: int, cpus: int = 1) -> None:
        self.runtime = tempfile.mkdtemp(prefix="jray-bench-rt-")
        os.environ["XDG_RUNTIME_DIR"] = self.runtime
        self.env = dict(os.environ)
        with socketless_port() as port:
            self.port = port
        _cli(self.env, "start", "--head", "--port", str(self.port), "--num-cpus", str(cpus),
             "--object-store-memory", "256M")
        secret = os.path.join(self.runtime, "jray", "cluster.secret")
        for _ in range(nodes - 1):
            _cli(self.env, "start", "--address", f"127.0.0.1:{self.port}", "--secret-file",
                 secret, "--num-cpus", str(cpus), "--object-store-memory", "256M")
        jray.init(address="auto")

    def stop(self) -> None:
        import shutil

        jray.shutdown()
        _cli(self.env, "stop")
        shutil.rmtree(self.runtime, ignore_errors=True)


class socketless_port:
    def __enter__(self) -> int:
        import socket

        self.s = socket.socket()
        self.s.bind(("127.0.0.1", 0))
        return int(self.s.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        self.s.close()


def _throughput(n: int) -> float:
    jray.get([noop.remote() for _ in range(200)], timeout=120)  # warm-up
    t = time.perf_counter()
    jray.get([noop.remote() for _ in range(n)], timeout=300)
    return n / (time.perf_counter() - t)


def three_node(n: int) -> dict[str, Any]:
    cl = TcpCluster(3)
    try:
        tcp = _throughput(n)
    finally:
        cl.stop()
    jray.init(num_cpus=3)
    try:
        local = _throughput(n)
    finally:
        jray.shutdown()
    return {"three_node_tcp_tasks_per_s": round(tcp), "one_node_ipc_3cpu_tasks_per_s":
            round(local)}


def transfer(mib: int = 100) -> dict[str, Any]:
    from jray._private import transport
    from jray._private.net import auth

    auth.use_secret(os.urandom(32))
    os.environ["JRAY_NODE_IP"] = "127.0.0.1"
    out: dict[str, Any] = {}
    chunk = os.urandom(1 << 20)
    try:
        for label, plain in (("encrypted", ""), ("plaintext", "1")):
            os.environ["JRAY_TCP_PLAINTEXT"] = plain
            ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
            pull, addr = transport.bound_pull(ctx, "/nonexistent", "bench")
            push = transport.push(ctx, addr)
            push.send(b"warm")
            pull.recv()
            got = 0

            def reader(sock: zmq.Socket[bytes]) -> None:
                nonlocal got
                for _ in range(mib):
                    got += len(sock.recv(copy=False))

            th = threading.Thread(target=reader, args=(pull,))
            t = time.perf_counter()
            th.start()
            for _ in range(mib):
                push.send(chunk, copy=False)
            th.join()
            dt = time.perf_counter() - t
            assert got == mib << 20
            out[f"tcp_{mib}MiB_{label}_GB_per_s"] = round((mib << 20) / dt / 1e9, 3)
            push.close(0)
            pull.close(0)
            transport.term(ctx)
    finally:
        auth.use_secret(None)
        os.environ.pop("JRAY_TCP_PLAINTEXT", None)
        os.environ.pop("JRAY_NODE_IP", None)
    return out


noop = jray.remote(_noop_fn)


@jray.remote(max_retries=3)
def _sleepy(i: int) -> int:
    time.sleep(0.2)
    return i


def node_loss() -> dict[str, Any]:
    cl = TcpCluster(3)
    victim: dict[str, Any] = {"session_dir": "/nonexistent", "shm_prefix": "/nonexistent"}
    try:
        t = time.perf_counter()
        assert jray.get([_sleepy.remote(i) for i in range(30)], timeout=120) == list(range(30))
        clean = time.perf_counter() - t
        victim = next(r for r in _records(cl.runtime) if not r["is_head"])
        t = time.perf_counter()
        refs = [_sleepy.remote(i) for i in range(30)]
        time.sleep(0.5)
        killed = time.perf_counter()
        os.kill(victim["pids"]["node"], signal.SIGKILL)
        assert jray.get(refs, timeout=120) == list(range(30))
        job = time.perf_counter() - t
        while not any(n["NodeID"] == victim["node_id"] and not n["Alive"]
                      for n in jray.nodes()):
            time.sleep(0.02)
        detect = time.perf_counter() - killed
    finally:
        cl.stop()
        import glob
        import shutil

        shutil.rmtree(victim["session_dir"], ignore_errors=True)
        for seg in glob.glob(f"/dev/shm/{victim['shm_prefix']}*"):
            os.unlink(seg)
    return {"dead_node_detection_s": round(detect, 2), "job_30x0.2s_clean_s": round(clean, 2),
            "job_30x0.2s_after_node_loss_s": round(job, 2)}


def _loadavg() -> list[str]:
    with open("/proc/loadavg") as f:
        return f.read().split()[:3]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.cluster")
    ap.add_argument("--tasks", type=int, default=5000)
    ap.add_argument("--json", default=None)
    ns = ap.parse_args(argv)
    doc: dict[str, Any] = {"loadavg_start": _loadavg()}
    from benchmarks.cluster_transfer import pulls

    for part in (lambda: three_node(ns.tasks), transfer, pulls, node_loss):
        doc.update(part())
        print(json.dumps(doc), flush=True)
    doc["loadavg_end"] = _loadavg()
    for k, v in doc.items():
        print(f"{k:36} {v}")
    if ns.json:
        with open(ns.json, "w") as f:
            json.dump(doc, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
