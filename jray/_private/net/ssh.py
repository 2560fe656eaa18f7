"""Node daemons on other machines over SSH (``%jray start --ssh user@host``,
``jray.cluster.start_ssh``).

For each host, the OpenSSH client (the user's own keys and ``~/.ssh/config``)
runs a small bootstrap with the remote Python: it reads the cluster secret
from its stdin (so it never appears on a command line), writes it to a private
file, runs ``jray start --address HEAD --block`` and waits on stdin. When this
process closes the pipe (``stop``, ``jray.shutdown()``) or dies (the kernel's
ssh child gets SIGTERM with it), the bootstrap sees end-of-file and stops the
node, which removes its files. The remote machine needs jray installed for
that Python and must reach the head's address.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass

from jray.exceptions import InitError

#: How long ``start_nodes`` waits for each new node to join.
JOIN_WAIT_S = 60.0

BOOTSTRAP = r"""
import os, subprocess, sys, tempfile, threading
secret = bytes.fromhex(sys.stdin.readline().strip())
d = tempfile.mkdtemp(prefix="jray-ssh-")
path = os.path.join(d, "cluster.secret")
fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
os.write(fd, secret); os.close(fd)
node = subprocess.Popen([sys.executable, "-m", "jray.cli", "start", "--address", sys.argv[1],
                         "--secret-file", path, "--block", *sys.argv[2:]],
                        stdin=subprocess.DEVNULL, stdout=sys.stderr)
gone = threading.Event()
def watch():
    sys.stdin.read()  # until the launcher closes the pipe or its ssh ends
    gone.set()
threading.Thread(target=watch, daemon=True).start()
try:
    while not gone.wait(0.5) and node.poll() is None:  # or the node exits (head stopped)
        pass
finally:
    node.terminate()
    try:
        node.wait(20)
    except subprocess.TimeoutExpired:
        node.kill()
    os.unlink(path); os.rmdir(d)
"""


@dataclass
class SshNode:
    """A node daemon started over SSH: its ``host`` and the local ssh client running it;
    ``stop()`` ends it (the remote bootstrap sees end-of-file and stops the node)."""

    host: str
    proc: subprocess.Popen[bytes]

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start_nodes(hosts: Sequence[str], *, num_cpus: float | None = None,
                python: str = "python3", ssh_options: Sequence[str] = ()) -> list[SshNode]:
    """Start a node daemon on each of ``hosts`` (``user@host``) that joins this
    driver's cluster; they stop when it leaves (``jray.shutdown``) or dies."""
    from jray._private import api, transport

    conn = api._Session.connection
    if conn is None:
        raise InitError("jray: nodes over SSH join a TCP cluster: start one with jray start "
                        "--head --bind ADDR and connect with jray.init(address=...) first")
    if not hosts or any(not h or h.startswith("-") for h in hosts):
        raise ValueError(f"jray: --ssh wants user@host[,user@host...], got {list(hosts)!r}")
    with open(api._Session.info["secret_file"], "rb") as f:
        secret = f.read()
    before = {n["NodeID"] for n in api.nodes()}
    extra = ["--num-cpus", f"{num_cpus:g}"] if num_cpus is not None else []
    started: list[SshNode] = []
    for host in hosts:
        cmd = ["ssh", "-o", "BatchMode=yes", *ssh_options, host, python, "-c",
               _quote(BOOTSTRAP), conn.address, *extra]
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, preexec_fn=transport.die_with_parent)
        assert proc.stdin is not None
        proc.stdin.write(secret.hex().encode() + b"\n")
        proc.stdin.flush()
        started.append(SshNode(host, proc))
    conn.on_close.extend(node.stop for node in started)
    deadline = time.monotonic() + JOIN_WAIT_S
    while len({n["NodeID"] for n in api.nodes() if n["Alive"]} - before) < len(hosts):
        failed = [n for n in started if n.proc.poll() is not None]
        if failed or time.monotonic() > deadline:
            for n in started:
                n.stop(5)
            what = failed[0] if failed else started[0]
            err = what.proc.stderr.read().decode(errors="replace")[-2000:] \
                if what.proc.stderr is not None and what.proc.poll() is not None else ""
            raise InitError(f"jray: the node over SSH on {what.host} did not join the cluster "
                            f"at {conn.address} within {JOIN_WAIT_S:.0f} s"
                            + (f"; ssh said:\n{err}" if err else ""))
        time.sleep(0.2)
    return started


def _quote(code: str) -> str:
    """``code`` as one argument of the remote shell."""
    return "'" + code.replace("'", "'\"'\"'") + "'"


