"""Clusters over TCP loopback: ``jray start`` / ``status`` / ``stop`` as real
processes, several node daemons, a driver joining with ``init(address=)``, a
node SIGKILLed while a job runs, the head killed under a waiting driver, and
peers without the secret. Every process and file a test starts is checked gone."""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

import jray
from jray._private.net import auth, connect, curve, roles
from jray.exceptions import ClusterError, InitError
from jray.testing import eventually

pytestmark = pytest.mark.integration
JRAY = [sys.executable, "-m", "jray.cli"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class Cluster:
    """The ``jray`` command in a private runtime directory, and what it started."""

    def __init__(self, runtime: Path) -> None:
        self.env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime)}
        self.dir = runtime / "jray"
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.secret = str(self.dir / "cluster.secret")
        self.seen: dict[str, dict[str, Any]] = {}

    def run(self, *args: str, check: bool = True, timeout: float = 60) -> str:
        proc = subprocess.run([*JRAY, *args], env=self.env, capture_output=True, text=True,
                              timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"jray {' '.join(args)} failed ({proc.returncode}):\n"
                                 f"{proc.stdout}{proc.stderr}")
        self.records()
        return proc.stdout + proc.stderr

    def head(self, cpus: int = 1) -> str:
        return self.run("start", "--head", "--port", str(self.port), "--num-cpus", str(cpus),
                        "--object-store-memory", "64M")

    def join(self, cpus: int = 1) -> dict[str, Any]:
        before = set(self.seen)
        self.run("start", "--address", self.address, "--secret-file", self.secret,
                 "--num-cpus", str(cpus), "--object-store-memory", "64M")
        (new,) = set(self.seen) - before
        return self.seen[new]

    def records(self) -> list[dict[str, Any]]:
        out = []
        for path in glob.glob(str(self.dir / "started-*.json")):
            with open(path) as f:
                rec = json.load(f)
            self.seen[path] = rec
            out.append(rec)
        return out

    def status(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.run("status", "--json"))
        return doc

    def stop(self) -> None:
        for rec in self.seen.values():  # shown when the test fails
            for log in glob.glob(os.path.join(rec["session_dir"], "*.log")):
                print(f"--- {log}\n{Path(log).read_text()[-3000:]}")
        self.run("stop", check=False)
        pids = [pid for rec in self.seen.values() for pid in rec["pids"].values()]
        assert eventually(lambda: not any(_alive(p) for p in pids), 15), \
            f"processes outlived jray stop: {[p for p in pids if _alive(p)]}"
        for rec in self.seen.values():  # a SIGKILLed node cannot clean up after itself
            shutil.rmtree(rec["session_dir"], ignore_errors=True)
            for seg in glob.glob(f"/dev/shm/{rec['shm_prefix']}*"):
                os.unlink(seg)
        for spill in glob.glob(os.path.join(os.environ.get("JRAY_SPILL_DIR", "/tmp"),
                                            "jray-spill-*")):
            if any(os.path.basename(rec["session_dir"]).split("-")[1] in spill
                   for rec in self.seen.values()):
                shutil.rmtree(spill, ignore_errors=True)
        left = [rec["session_dir"] for rec in self.seen.values()
                if os.path.exists(rec["session_dir"])]
        assert not left


@pytest.fixture
def tcp(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
        ) -> Iterator[Cluster]:
    runtime = tmp_path_factory.mktemp("rt")
    os.chmod(runtime, 0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    monkeypatch.delenv("JRAY_NODE_IP", raising=False)
    cl = Cluster(runtime)
    try:
        yield cl
    finally:
        jray.shutdown()
        os.environ.pop("JRAY_NODE_IP", None)
        cl.stop()


@jray.remote(max_retries=3)
def _slow_double(x: int) -> tuple[int, str]:
    time.sleep(0.4)
    return x * 2, os.environ.get("JRAY_NODE_IP", "")


def test_start_join_status_and_a_joined_driver(tcp: Cluster) -> None:
    out = tcp.head()
    assert f"jray start --address {tcp.address} --secret-file {tcp.secret}" in out
    assert f'jray.init(address="{tcp.address}")' in out
    assert os.stat(tcp.secret).st_mode & 0o777 == 0o600
    secret = Path(tcp.secret).read_bytes()
    assert secret.hex() not in out and len(secret) == 32
    tcp.join()
    tcp.join()
    doc = tcp.status()
    assert len(doc["nodes"]) == 3 and all(n["Alive"] for n in doc["nodes"])
    assert doc["cluster_resources"]["CPU"] == 3
    info = jray.init(address="auto")
    assert info["connected"] and info["address"] == tcp.address
    results = jray.get([_slow_double.remote(i) for i in range(9)], timeout=60)
    assert [r[0] for r in results] == [2 * i for i in range(9)]
    assert {r[1] for r in results} == {"127.0.0.1"}  # workers of TCP nodes
    @jray.remote
    class Counter:  # defined here: pickled by value (the nodes cannot import tests/)
        def __init__(self) -> None:
            self.n = 0

        def add(self, k: int) -> int:
            self.n += k
            return self.n

    counters = [Counter.remote() for _ in range(3)]  # their call sockets are TCP too
    assert [jray.get(c.add.remote(5), timeout=30) for c in counters] == [5, 5, 5]
    assert [jray.get(c.add.remote(1), timeout=30) for c in counters] == [6, 6, 6]
    text = tcp.run("status")
    assert "finished 9" in text and text.count("alive") == 3
    jray.shutdown()  # a joined driver leaves; the cluster stays
    assert len(tcp.status()["nodes"]) == 3
    info = jray.init(address=tcp.address, _secret_file=tcp.secret)
    assert jray.get(_slow_double.remote(21), timeout=30)[0] == 42


def test_a_killed_node_is_detected_and_its_tasks_rerun(tcp: Cluster) -> None:
    tcp.head()
    victim = tcp.join()
    tcp.join()
    jray.init(address="auto")
    refs = [_slow_double.remote(i) for i in range(12)]
    time.sleep(0.6)  # some tasks run on the victim now
    killed = time.monotonic()
    os.kill(victim["pids"]["node"], signal.SIGKILL)
    assert [r[0] for r in jray.get(refs, timeout=60)] == [2 * i for i in range(12)]

    def dead() -> bool:
        return any(n["NodeID"] == victim["node_id"] and not n["Alive"]
                   for n in jray.nodes())

    assert eventually(dead, 10)
    detect = time.monotonic() - killed
    assert detect < 5.0, f"a dead node took {detect:.1f} s to notice"
    events = jray.state.list_events()
    assert any(e[2] == "node_lost" and e[3] == victim["node_id"] for e in events)


def test_a_tasks_nested_tasks_run_on_its_node(tcp: Cluster) -> None:
    tcp.head()  # one idle CPU on the head's node, first in the head's order
    tcp.run("start", "--address", tcp.address, "--secret-file", tcp.secret, "--num-cpus", "2",
            "--resources", '{"B": 1}', "--object-store-memory", "64M")
    jray.init(address="auto")

    @jray.remote
    def child() -> str:
        time.sleep(0.01)
        return jray.get_runtime_context().get_node_id()

    @jray.remote(resources={"B": 1})
    def parent() -> tuple[str, list[str], list[str]]:
        here = jray.get_runtime_context().get_node_id()
        one_at_a_time = [jray.get(child.remote(), timeout=30) for _ in range(50)]
        burst = jray.get([child.remote() for _ in range(4)], timeout=30)
        return here, one_at_a_time, burst

    here, one_at_a_time, burst = jray.get(parent.remote(), timeout=60)
    # B has a CPU free beside the parent's: its nested tasks (leased, one at a time) run
    # there, as a node scheduler places them, not on the first node with room (the
    # first ones may go elsewhere while B starts a worker for them)
    assert set(one_at_a_time[-10:]) == {here}, one_at_a_time
    assert here in burst  # a burst fills B first, then spills over (or waits for B)


_LEAVER = textwrap.dedent("""
    import json, sys, time
    import numpy as np
    import jray
    jray.init(address=sys.argv[1], _secret_file=sys.argv[2])

    @jray.remote
    class Box:
        def ping(self):
            return "pong"

    @jray.remote
    def leaver_sleeps():
        time.sleep(120)

    mine = Box.remote()
    kept = Box.options(name="kept", lifetime="detached").remote()
    assert jray.get([mine.ping.remote(), kept.ping.remote()], timeout=60) == ["pong"] * 2
    big = jray.put(np.ones(1 << 18))  # 2 MiB, in shared memory
    running = [leaver_sleeps.remote() for _ in range(4)]  # some run, some queue
    time.sleep(1.0)
    print(json.dumps({"big": big.hex()}), flush=True)
    # the script ends: its atexit shutdown leaves the cluster
""")


def test_a_leaving_driver_ends_what_it_owned(tcp: Cluster) -> None:
    tcp.head(cpus=2)
    tcp.join()
    out = subprocess.run([sys.executable, "-c", _LEAVER, tcp.address, tcp.secret],
                         env=tcp.env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    big = json.loads(out.stdout.strip().splitlines()[-1])["big"]
    jray.init(address=tcp.address, _secret_file=tcp.secret)

    def ended() -> bool:
        actors = {r["name"]: r["state"] for r in jray.state.list_actors()}
        tasks = jray.state.list_tasks(label="leaver_sleeps")
        objects = {o["object_id"] for o in jray.state.list_objects()}
        return (actors == {None: "DEAD", "kept": "ALIVE"} and len(tasks) == 4
                and all(t["state"] == "CANCELLED" for t in tasks) and big not in objects)

    assert eventually(ended, 15), (jray.state.list_actors(),
                                   jray.state.list_tasks(label="leaver_sleeps"))
    left = [e for e in jray.state.list_events() if e[2] == "driver_left"]
    assert len(left) == 1 and left[0][4]["actors_killed"] == 1
    assert left[0][4]["why"] == "said goodbye"
    assert left[0][4]["tasks_cancelled"] == 4 and left[0][4]["objects_freed"] >= 1
    # the cluster runs on: the detached actor answers, new tasks run on both nodes' CPUs
    kept = jray.get_actor("kept")
    assert jray.get(kept.ping.remote(), timeout=30) == "pong"
    assert [r[0] for r in jray.get([_slow_double.remote(i) for i in range(3)], timeout=60)] \
        == [0, 2, 4]
    assert sum(1 for n in jray.nodes() if n["Alive"]) == 2
    jray.kill(kept)


def test_a_killed_driver_is_ended_by_silence(tcp: Cluster) -> None:
    tcp.head(cpus=2)
    leaver = subprocess.Popen([sys.executable, "-c", _LEAVER.replace(
        "# the script ends", "time.sleep(600)  # until killed"), tcp.address, tcp.secret],
        env=tcp.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert leaver.stdout is not None
        line = leaver.stdout.readline()
        assert line.startswith("{"), leaver.communicate(timeout=10)
        jray.init(address=tcp.address, _secret_file=tcp.secret)
        assert {r["name"] for r in jray.state.list_actors(state="ALIVE")} == {None, "kept"}
        killed = time.monotonic()
        leaver.kill()  # no goodbye: the head notices the silence
        leaver.wait(10)

        def ended() -> bool:
            return [e for e in jray.state.list_events() if e[2] == "driver_left"] != []

        assert eventually(ended, 20)
        took = time.monotonic() - killed
        (ev,) = [e for e in jray.state.list_events() if e[2] == "driver_left"]
        assert ev[4]["why"].startswith("silent") and ev[4]["actors_killed"] == 1
        assert 9.0 < took < 15.0, took
        assert eventually(lambda: {r["name"]: r["state"] for r in jray.state.list_actors()}
                          == {None: "DEAD", "kept": "ALIVE"}, 10)
        tasks = jray.state.list_tasks(label="leaver_sleeps")
        assert len(tasks) == 4 and all(t["state"] == "CANCELLED" for t in tasks)
        assert jray.get(_slow_double.remote(4), timeout=30)[0] == 8
        jray.kill(jray.get_actor("kept"))
    finally:
        if leaver.poll() is None:
            leaver.kill()
            leaver.wait()


def test_head_death_fails_a_waiting_driver_at_once(tcp: Cluster) -> None:
    tcp.head()
    jray.init(address="auto")
    assert jray.get(_slow_double.remote(1), timeout=30)[0] == 2

    @jray.remote
    def forever() -> None:
        time.sleep(600)

    ref = forever.remote()
    head = next(r for r in tcp.records() if r["is_head"])["pids"]["head"]
    os.kill(head, signal.SIGKILL)
    t = time.monotonic()
    with pytest.raises(ClusterError, match=f"head at {tcp.address}"):
        jray.get(ref, timeout=60)
    assert time.monotonic() - t < 6


def test_peers_without_the_secret_get_nothing(tcp: Cluster, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    tcp.head()
    wrong = tmp_path / "wrong.secret"
    auth.new_secret_file(str(wrong))
    monkeypatch.setattr(connect, "HANDSHAKE_WAIT_S", 3.0)
    with pytest.raises(InitError, match="refused our proof of the cluster secret"):
        jray.init(address=tcp.address, _secret_file=str(wrong))
    out = tcp.run("start", "--address", tcp.address, "--secret-file", str(wrong),
                  check=False)
    assert "refused our proof of the cluster secret" in out
    # a raw TCP peer: no CurveZMQ key, then a CurveZMQ key of another secret
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        for secret in (None, os.urandom(32)):
            sock = ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            if secret is not None:
                curve.make_client(sock, secret)
            ident = b"d" + os.urandom(7)
            sock.setsockopt(zmq.IDENTITY, ident)
            sock.connect(f"tcp://{tcp.address}")
            sock.send(auth.handshake(secret or os.urandom(32), roles.DRIVER, ident,
                                     auth.FLAG_ACK))
            sock.send(b"\x80\x05junk")
            assert not sock.poll(1500), "the head answered a peer without the secret"
            sock.close(0)
    finally:
        ctx.term()
    assert len(tcp.status()["nodes"]) == 1  # still serving


@pytest.mark.parametrize(("args", "message"), [
    (["start"], "give either --head or --address"),
    (["start", "--head", "--resources", "{bad"], "--resources"),
    (["start", "--head", "--resources", '{"CPU": 2}'], "--num-cpus"),
    (["start", "--head", "--object-store-memory", "lots"], "not a size"),
    (["start", "--head", "--port", "70000"], "not in 1-65535"),
    (["start", "--address", "nohost"], "not HOST:PORT"),
    (["status", "--address", "127.0.0.1:1", "--timeout", "1"], "did not answer"),
])
def test_bad_options_are_named(tcp: Cluster, args: list[str], message: str) -> None:
    auth.new_secret_file(tcp.secret)
    proc = subprocess.run([*JRAY, *args, *(["--secret-file", tcp.secret]
                                           if args[0] == "status" else [])],
                          env=tcp.env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr


def _record_session(target: tuple[str, int], secret: bytes) -> bytes:
    """The bytes a real CurveZMQ client (holding the secret) sends to ``target``,
    recorded through a one-shot TCP proxy."""
    from jray._private import protocol as P

    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)
    sent = bytearray()

    def pump() -> None:
        conn, _ = lsock.accept()
        up = socket.create_connection(target)
        conn.settimeout(0.05)
        up.settimeout(0.05)
        idle = time.monotonic()
        open_ = True
        while open_ and time.monotonic() - idle < 1.0:
            for src, dst, rec in ((conn, up, True), (up, conn, False)):
                try:
                    data = src.recv(65536)
                    if not data:  # the client closed: the recording is complete
                        open_ = False
                        break
                    idle = time.monotonic()
                    if rec:
                        sent.extend(data)
                    dst.sendall(data)
                except TimeoutError:
                    continue
                except OSError:
                    open_ = False
                    break
        conn.close()
        up.close()

    th = threading.Thread(target=pump, daemon=True)
    th.start()
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    curve.make_client(sock, secret)
    ident = b"s" + os.urandom(7)
    sock.setsockopt(zmq.IDENTITY, ident)
    sock.connect(f"tcp://127.0.0.1:{lsock.getsockname()[1]}")
    sock.send(auth.handshake(secret, roles.VIEWER, ident))
    sock.send(P.pack([(P.STATE, 1, "summary", None)]))
    assert sock.poll(10_000), "no answer through the recording proxy"
    sock.close(0)
    ctx.term()
    th.join(10)
    lsock.close()
    return bytes(sent)


def test_fuzzed_tcp_bytes_leave_the_head_and_a_result_port_running(tcp: Cluster) -> None:
    import random

    tcp.head()
    tcp.join()
    jray.init(address="auto")
    from jray._private.api import _Session

    client = _Session.client
    assert client is not None and client.addr.startswith("tcp://")
    pull_port = int(client.addr.rsplit(":", 1)[1])  # the driver's result socket
    secret = Path(tcp.secret).read_bytes()
    session = _record_session(("127.0.0.1", tcp.port), secret)
    assert len(session) > 64
    greeting = session[:64]
    rng = random.Random(7)
    for i in range(600):
        port = tcp.port if i % 2 else pull_port
        kind = i % 4
        if kind == 0:
            data = os.urandom(rng.randrange(1, 400))
        elif kind == 1:
            data = greeting[: rng.randrange(1, 64)]
        elif kind == 2:
            data = session  # a replayed CurveZMQ session: the server's cookie differs
        else:
            data = greeting + os.urandom(rng.randrange(1, 300))
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            try:
                s.sendall(data)
            except OSError:
                pass
    assert [r[0] for r in jray.get([_slow_double.remote(i) for i in range(6)],
                                   timeout=60)] == [0, 2, 4, 6, 8, 10]
    doc = tcp.status()
    assert len(doc["nodes"]) == 2 and all(n["Alive"] for n in doc["nodes"])
    for rec in tcp.records():
        assert all(_alive(pid) for pid in rec["pids"].values())
