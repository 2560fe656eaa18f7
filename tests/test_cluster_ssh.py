"""The SSH launcher (``%jray start --ssh``) against a real OpenSSH server: Debian's
``sshd`` on a private loopback port with its own host key, config and authorized
key. A node started over SSH joins, runs tasks, and stops when the driver leaves.

Skipped, naming what is missing, without ``sshd``/``ssh``/``ssh-keygen`` or root
(the test logs in as the current user, which sshd needs root to allow).
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

import jray
import jray.cluster
from jray.exceptions import InitError
from jray.testing import eventually, jray_processes

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]
SSHD = "/usr/sbin/sshd"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    missing = [t for t in (SSHD, shutil.which("ssh"), shutil.which("ssh-keygen"))
               if t is None or not os.path.exists(t)]
    if missing or shutil.which("ssh") is None:
        pytest.skip("needs OpenSSH (apt-get install openssh-server openssh-client): "
                    f"missing {missing or ['ssh']}")
    if os.geteuid() != 0:
        pytest.skip("needs root to run a private sshd that accepts this user")
    d = tmp_path_factory.mktemp("sshd")
    os.chmod(d, 0o700)
    for key in ("host", "client"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / key)],
                       check=True, timeout=30)
    (d / "authorized_keys").write_text((d / "client.pub").read_text())
    port = _free_port()
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d / 'host'}\n"
        f"AuthorizedKeysFile {d / 'authorized_keys'}\nPidFile {d / 'sshd.pid'}\n"
        "PermitRootLogin prohibit-password\nPasswordAuthentication no\nUsePAM no\n"
        "StrictModes no\n")
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(d / "sshd_config")],
                            stderr=subprocess.DEVNULL)
    try:
        def listening() -> bool:
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0

        assert eventually(listening, 15), "sshd did not start"
        yield ["-p", str(port), "-i", str(d / "client"), "-F", "/dev/null",
               "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
    finally:
        proc.terminate()
        proc.wait(10)


def test_a_node_started_over_ssh_joins_and_stops_with_the_driver(
        sshd: list[str], tmp_path_factory: pytest.TempPathFactory,
        monkeypatch: pytest.MonkeyPatch) -> None:
    runtime = tmp_path_factory.mktemp("rt")
    os.chmod(runtime, 0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    env = dict(os.environ)
    port = _free_port()
    cli = [sys.executable, "-m", "jray.cli"]
    subprocess.run([*cli, "start", "--head", "--port", str(port), "--num-cpus", "1",
                    "--object-store-memory", "64M"], env=env, check=True, timeout=60,
                   capture_output=True)
    nodes: list[jray.cluster.SshNode] = []
    try:
        jray.init(address="auto")
        nodes = jray.cluster.start_ssh(f"{os.environ.get('USER', 'root')}@127.0.0.1",
                                       num_cpus=2, python=sys.executable, ssh_options=sshd)
        assert [n.host for n in nodes] == [f"{os.environ.get('USER', 'root')}@127.0.0.1"]
        alive = [n for n in jray.nodes() if n["Alive"]]
        assert len(alive) == 2 and sum(n["Resources"].get("CPU", 0) for n in alive) == 3

        @jray.remote
        def square(x: int) -> int:
            time.sleep(0.1)
            return x * x

        assert jray.get([square.remote(i) for i in range(12)], timeout=60) == [
            i * i for i in range(12)]
        jray.shutdown()  # the SSH node goes with the driver that started it
        assert all(n.proc.poll() is not None for n in nodes)

        def one_left() -> bool:
            out = subprocess.run([*cli, "status", "--json"], env=env, capture_output=True,
                                 text=True, timeout=30).stdout
            return sum(n["Alive"] for n in json.loads(out)["nodes"]) == 1

        assert eventually(one_left, 20)
        assert eventually(lambda: not jray_processes(), 20), jray_processes()
    finally:
        for n in nodes:
            n.stop(5)
        jray.shutdown()
        subprocess.run([*cli, "stop"], env=env, timeout=60, capture_output=True)
    assert not [p for p in glob.glob("/tmp/jray-ssh-*") if os.path.exists(p)
                and os.stat(p).st_mtime > time.time() - 150]


DRIVER = """
import sys, time
import jray
import jray.cluster
jray.init(address="auto")
jray.cluster.start_ssh([sys.argv[1]], num_cpus=1, python=sys.executable,
                       ssh_options=sys.argv[2:])
print("JOINED", flush=True)
time.sleep(600)
"""


def test_ssh_nodes_stop_when_the_driver_dies(
        sshd: list[str], tmp_path_factory: pytest.TempPathFactory,
        monkeypatch: pytest.MonkeyPatch) -> None:
    runtime = tmp_path_factory.mktemp("rt")
    os.chmod(runtime, 0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    env = dict(os.environ)
    cli = [sys.executable, "-m", "jray.cli"]
    subprocess.run([*cli, "start", "--head", "--port", str(_free_port()), "--num-cpus", "1",
                    "--object-store-memory", "64M"], env=env, check=True, timeout=60,
                   capture_output=True)
    driver = subprocess.Popen(
        [sys.executable, "-c", DRIVER, f"{os.environ.get('USER', 'root')}@127.0.0.1", *sshd],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def alive_nodes() -> int:
        out = subprocess.run([*cli, "status", "--json"], env=env, capture_output=True,
                             text=True, timeout=30).stdout
        return sum(n["Alive"] for n in json.loads(out)["nodes"])

    try:
        assert driver.stdout is not None
        line = driver.stdout.readline().strip()
        assert line == "JOINED", driver.communicate(timeout=10)
        assert alive_nodes() == 2
        driver.kill()  # the kernel dies: its ssh client goes with it, and so the node
        driver.wait(10)
        assert eventually(lambda: alive_nodes() == 1, 20)
        # the node's processes ran under our sshd, so they are our descendants
        assert eventually(lambda: not jray_processes(), 20), jray_processes()
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
        subprocess.run([*cli, "stop"], env=env, timeout=60, capture_output=True)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"hosts": ""}, "hosts must be"),
    ({"hosts": ["alice@a", "-oProxyCommand=x"]}, "hosts must be"),
    ({"hosts": "a@b", "num_cpus": -1}, "num_cpus must be"),
    ({"hosts": "a@b", "ssh_options": "-p 22"}, "ssh_options is a list"),
])
def test_start_ssh_names_bad_arguments(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        jray.cluster.start_ssh(**kwargs)  # type: ignore[arg-type]


def test_start_ssh_needs_a_joined_cluster() -> None:
    jray.init(num_cpus=1)  # an embedded cluster: no TCP address for nodes to join
    try:
        with pytest.raises(InitError, match="join a TCP cluster"):
            jray.cluster.start_ssh("alice@example.invalid")
    finally:
        jray.shutdown()
