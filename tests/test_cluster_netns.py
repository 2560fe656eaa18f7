"""Real separate hosts: three network namespaces joined by veth pairs, a head
(with its node and the driver) in one and a node in each of the others. While a
job runs, one node is SIGKILLed and the other's link goes down; the job must
return correct results, and the cut-off node rejoins when its link comes back.
A host with its own /dev/shm (a private mount namespace as well) pulls large
objects made on the head's host across the veth, once per object, and a result
it makes is pulled back by the driver.

Needs root and ``ip`` (iproute2); skipped, saying which is missing, otherwise.
Namespaces, links and every process are removed in ``finally``.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jray.testing import eventually

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]
IP = shutil.which("ip")
TAG = f"jr{os.getpid() % 10000}"
HOSTS = {"h": "10.77.0.1", "a": "10.77.1.2", "b": "10.77.2.2"}
PORT = 16390


def _sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, timeout=30)


def _ns(host: str) -> str:
    return f"{TAG}{host}"


class Hosts:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.records: list[dict[str, Any]] = []

    def env(self, host: str) -> dict[str, str]:
        runtime = self.root / host
        runtime.mkdir(mode=0o700, exist_ok=True)
        return {**os.environ, "XDG_RUNTIME_DIR": str(runtime), "JRAY_NODE_IP": HOSTS[host]}

    def jray(self, host: str, *args: str, timeout: float = 60) -> str:
        proc = subprocess.run([IP or "ip", "netns", "exec", _ns(host), sys.executable, "-m",
                               "jray.cli", *args], env=self.env(host), capture_output=True,
                              text=True, timeout=timeout)
        self._collect()
        if proc.returncode != 0:
            raise AssertionError(f"[{host}] jray {' '.join(args)}: {proc.stdout}{proc.stderr}")
        return proc.stdout

    def jray_own_shm(self, host: str, *args: str, timeout: float = 60) -> str:
        """``jray`` on ``host`` in a mount namespace of its own with an empty
        ``/dev/shm`` (its store out of every other host's reach, as on another
        machine); its daemons keep that namespace alive."""
        script = 'mount -t tmpfs -o size=256m,mode=1777 jray-test /dev/shm && exec "$@"'
        proc = subprocess.run([IP or "ip", "netns", "exec", _ns(host), "unshare", "-m",
                               "--propagation", "private", "sh", "-c", script, "sh",
                               sys.executable, "-m", "jray.cli", *args], env=self.env(host),
                              capture_output=True, text=True, timeout=timeout)
        self._collect()
        if proc.returncode != 0:
            raise AssertionError(f"[{host}] jray {' '.join(args)}: {proc.stdout}{proc.stderr}")
        return proc.stdout

    def _collect(self) -> None:
        for path in glob.glob(str(self.root / "*" / "jray" / "started-*.json")):
            with open(path) as f:
                rec = json.load(f)
            if rec not in self.records:
                self.records.append(rec)

    def record(self, host: str) -> dict[str, Any]:
        path, = glob.glob(str(self.root / host / "jray" / "started-*.json"))
        with open(path) as f:
            rec: dict[str, Any] = json.load(f)
        return rec

    def secret_on(self, host: str) -> str:
        """Copy the head's secret file to ``host`` (as scp would), mode 0600."""
        src = self.root / "h" / "jray" / "cluster.secret"
        dst = self.root / host / "secret"
        self.env(host)
        fd = os.open(dst, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(src.read_bytes())
        return str(dst)


@pytest.fixture
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hosts]:
    if IP is None:
        pytest.skip("needs the ip command (iproute2) to make network namespaces")
    if os.geteuid() != 0:
        pytest.skip("needs root to make network namespaces (ip netns add)")
    made: list[str] = []
    h = Hosts(tmp_path_factory.mktemp("hosts"))
    try:
        for host in HOSTS:
            _sh(IP, "netns", "add", _ns(host))
            made.append(_ns(host))
            _sh(IP, "-n", _ns(host), "link", "set", "lo", "up")
        _sh(IP, "-n", _ns("h"), "addr", "add", "10.77.0.1/32", "dev", "lo")
        for i, host in ((1, "a"), (2, "b")):
            outer, inner = f"{TAG}h{host}", f"{TAG}{host}h"
            _sh(IP, "link", "add", outer, "netns", _ns("h"), "type", "veth", "peer", "name",
                inner, "netns", _ns(host))
            _sh(IP, "-n", _ns("h"), "addr", "add", f"10.77.{i}.1/24", "dev", outer)
            _sh(IP, "-n", _ns(host), "addr", "add", f"10.77.{i}.2/24", "dev", inner)
            _sh(IP, "-n", _ns("h"), "link", "set", outer, "up")
            _sh(IP, "-n", _ns(host), "link", "set", inner, "up")
            _sh(IP, "-n", _ns(host), "route", "add", "10.77.0.0/24", "via", f"10.77.{i}.1")
        yield h
    finally:
        for host in HOSTS:
            if _ns(host) in made:
                subprocess.run([IP or "ip", "netns", "exec", _ns(host), sys.executable, "-m",
                                "jray.cli", "stop"], env=h.env(host), capture_output=True,
                               timeout=60)
        h._collect()
        for rec in h.records:
            for pid in rec["pids"].values():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            shutil.rmtree(rec["session_dir"], ignore_errors=True)
            for seg in glob.glob(f"/dev/shm/{rec['shm_prefix']}*"):
                os.unlink(seg)
        for ns in made:
            subprocess.run([IP or "ip", "netns", "del", ns], capture_output=True, timeout=30)


DRIVER = textwrap.dedent("""
    import json, os, sys, time
    import jray
    jray.init(address=sys.argv[1], _secret_file=sys.argv[2])

    @jray.remote(max_retries=5)
    def work(x):
        time.sleep(0.3)
        return x * x, os.environ["JRAY_NODE_IP"]

    @jray.remote(num_cpus=1)
    class Where:
        def ip(self):
            return os.environ["JRAY_NODE_IP"]

    actors = [Where.remote() for _ in range(5)]  # spread over the hosts' CPUs
    where = sorted(set(jray.get([a.ip.remote() for a in actors], timeout=60)))
    for a in actors:
        jray.kill(a)
    refs = [work.remote(i) for i in range(40)]
    print("SUBMITTED", flush=True)
    out = jray.get(refs, timeout=120)
    nodes = jray.nodes()
    print(json.dumps({"results": out, "actors_on": where, "alive": sum(n["Alive"] for n in nodes),
                      "dead": sum(not n["Alive"] for n in nodes)}), flush=True)
""")


def test_a_job_survives_a_killed_node_and_a_cut_link(hosts: Hosts, tmp_path: Path) -> None:
    out = hosts.jray("h", "start", "--head", "--bind", "0.0.0.0", "--port", str(PORT),
                     "--num-cpus", "1", "--object-store-memory", "64M")
    assert "jray start --address" in out
    head = f"{HOSTS['h']}:{PORT}"
    for host in ("a", "b"):
        hosts.jray(host, "start", "--address", head, "--secret-file", hosts.secret_on(host),
                   "--num-cpus", "2", "--object-store-memory", "64M")
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    env = {**hosts.env("h"), "PYTHONPATH": os.getcwd()}
    driver = subprocess.Popen(
        [IP or "ip", "netns", "exec", _ns("h"), sys.executable, str(script), head,
         str(hosts.root / "h" / "jray" / "cluster.secret")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert driver.stdout is not None
        line = driver.stdout.readline().strip()
        if line != "SUBMITTED":
            driver.kill()
            raise AssertionError(f"the driver failed: {line}{driver.communicate()}")
        time.sleep(1.0)  # tasks are running on every host now
        os.kill(hosts.record("a")["pids"]["node"], signal.SIGKILL)
        _sh(IP or "ip", "-n", _ns("h"), "link", "set", f"{TAG}hb", "down")
        try:
            stdout, stderr = driver.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            driver.kill()
            stdout, stderr = driver.communicate()
            raise AssertionError(f"the job did not finish: {stdout}{stderr}") from None
        assert driver.returncode == 0, stderr
        doc = json.loads(stdout.strip().splitlines()[-1])
        assert [r[0] for r in doc["results"]] == [i * i for i in range(40)]
        assert {r[1] for r in doc["results"]} >= {HOSTS["h"]}
        assert doc["dead"] == 2 and doc["alive"] == 1
        assert doc["actors_on"] == sorted(HOSTS.values())  # called across the veths
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    # the cut-off node comes back and rejoins as a new node
    _sh(IP or "ip", "-n", _ns("h"), "link", "set", f"{TAG}hb", "up")

    def rejoined() -> bool:
        doc = json.loads(hosts.jray("h", "status", "--json"))
        return sum(n["Alive"] for n in doc["nodes"]) == 2

    assert eventually(rejoined, 30)


OBJECTS_DRIVER = textwrap.dedent("""
    import json, sys
    import numpy as np
    import jray
    jray.init(address=sys.argv[1], _secret_file=sys.argv[2])

    @jray.remote(resources={"far": 1})
    def far_sum(x):
        import time
        time.sleep(0.2)
        return jray.get_runtime_context().get_node_id(), float(x.sum())

    @jray.remote(resources={"far": 1})
    def far_make(n):
        return np.full(n, 3, dtype=np.uint8)

    arrays = [np.arange(1 << 17, dtype=np.float64), np.arange(50 << 17, dtype=np.float64)]
    refs = [jray.put(a) for a in arrays]
    sums = [jray.get([far_sum.remote(r) for _ in range(3)], timeout=120) for r in refs]
    made = jray.get(far_make.remote(20 << 20), timeout=120)
    print(json.dumps({"sums": sums, "want": [float(a.sum()) for a in arrays],
                      "made": [int(made.sum(dtype=np.int64)), made.nbytes],
                      "store": jray.state.store_summary()}), flush=True)
""")


def test_objects_cross_the_veths(hosts: Hosts, tmp_path: Path) -> None:
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare (util-linux) for a host with its own /dev/shm")
    hosts.jray("h", "start", "--head", "--bind", "0.0.0.0", "--port", str(PORT + 1),
               "--num-cpus", "1", "--object-store-memory", "64M")
    head = f"{HOSTS['h']}:{PORT + 1}"
    hosts.jray_own_shm("a", "start", "--address", head, "--secret-file", hosts.secret_on("a"),
                       "--num-cpus", "3", "--resources", '{"far": 9}',
                       "--object-store-memory", "200M")
    far_id = hosts.record("a")["node_id"]
    script = tmp_path / "driver.py"
    script.write_text(OBJECTS_DRIVER)
    env = {**hosts.env("h"), "PYTHONPATH": os.getcwd()}
    out = subprocess.run(
        [IP or "ip", "netns", "exec", _ns("h"), sys.executable, str(script), head,
         str(hosts.root / "h" / "jray" / "cluster.secret")],
        env=env, capture_output=True, text=True, timeout=150)
    assert out.returncode == 0, out.stdout + out.stderr
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    for got, want in zip(doc["sums"], doc["want"]):
        assert got == [[far_id, want]] * 3  # three tasks on the far host, right sums
    assert doc["made"] == [3 * (20 << 20), 20 << 20]  # made there, read here
    assert doc["store"][far_id]["pulls"] == 2  # once per object, over the veth
    head_node = hosts.record("h")["node_id"]
    assert doc["store"][head_node]["pulls"] == 1
