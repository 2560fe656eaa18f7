"""``jray start`` / ``jray stop``: a head and node daemons reachable over TCP.

What ``jray start`` starts is recorded in the user's runtime directory
(``$XDG_RUNTIME_DIR/jray`` or ``/tmp/jray-<uid>``, mode 0700), one JSON file
per start (``started-<pid>.json``: the head's address, the secret file, the
pids, the local node's id and segment prefix), so ``jray stop`` and
``jray.init(address="auto")`` find them. The secret never appears in them.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

from jray._private import shm
from jray._private.net import auth, endpoints, probe

#: How long ``start`` waits for the head to answer and the node to register.
START_WAIT_S = 30.0


class LaunchError(Exception):
    """A cluster could not be started, joined or stopped (the message says why)."""


def runtime_dir() -> str:
    """The user's private jray directory, made (0700) if missing and checked."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    path = os.path.join(base, "jray") if base and os.path.isdir(base) else os.path.join(
        tempfile.gettempdir(), f"jray-{os.geteuid()}")
    os.makedirs(path, mode=0o700, exist_ok=True)
    try:
        shm.check_private_dir(path, "jray runtime directory")
    except shm.Untrusted as exc:
        raise LaunchError(str(exc)) from None
    return path


def default_secret_file() -> str:
    return os.path.join(runtime_dir(), "cluster.secret")


@dataclass
class Started:
    """One ``jray start``: what it launched and where."""

    head_address: str  # HOST:PORT, as drivers and nodes give it
    secret_file: str
    node_id: str
    shm_prefix: str
    session_dir: str
    is_head: bool
    pids: dict[str, int] = field(default_factory=dict)
    starter_pid: int = field(default_factory=os.getpid)

    def save(self) -> str:
        path = os.path.join(runtime_dir(), f"started-{self.starter_pid}.json")
        fd = os.open(path + ".tmp", os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(asdict(self), f)
        os.replace(path + ".tmp", path)
        return path


def recorded() -> list[tuple[str, Started]]:
    """Every start recorded on this machine whose processes still run."""
    out = []
    for path in sorted(glob.glob(os.path.join(runtime_dir(), "started-*.json"))):
        try:
            with open(path) as f:
                rec = Started(**json.load(f))
        except (OSError, ValueError, TypeError):
            continue
        if any(_alive(pid) for pid in rec.pids.values()):
            out.append((path, rec))
        else:
            with contextlib.suppress(OSError):
                os.unlink(path)
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of this process counts as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def _env(node_ip: str) -> dict[str, str]:
    from jray._private.cluster import _child_env

    env = _child_env()
    env["JRAY_NODE_IP"] = node_ip
    return env


def _launch(name: str, args: list[str], session_dir: str, env: dict[str, str],
            block: bool) -> subprocess.Popen[bytes]:
    from jray._private import transport

    log = os.path.join(session_dir, f"{name}.log")
    return subprocess.Popen(
        [sys.executable, "-m", f"jray._private.{name}", *args, "--log", log],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True, preexec_fn=transport.die_with_parent if block else None)


def _host_ip() -> str:
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"


def local_ip_for(host: str, port: int) -> str:
    """The address of this machine's interface that reaches ``host``."""
    if host in ("127.0.0.1", "localhost", "::1"):
        return "127.0.0.1" if host != "::1" else "::1"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        try:
            s.connect((host, port))
        except OSError as exc:
            raise LaunchError(f"no route to the head at {host}:{port}: {exc}") from None
        return str(s.getsockname()[0])


def start(*, head: bool, address: str | None, port: int, bind: str,
          resources: dict[str, float], num_workers: int, object_store_memory: int,
          secret_file: str | None, block: bool) -> tuple[Started, list[subprocess.Popen[bytes]]]:
    """Start a head and a node (``head``) or a node joining ``address``."""
    from jray._private.cluster import make_spill_dir

    session = uuid.uuid4().hex[:12]
    if head:
        secret_file = secret_file or default_secret_file()
        if os.path.exists(secret_file):
            os.unlink(secret_file)  # a new cluster gets a new secret
        auth.new_secret_file(secret_file)
        every = bind in ("0.0.0.0", "", "::")
        connect_host = ("::1" if bind == "::" else "127.0.0.1") if every else bind
        # the address others join at: for a head on every interface, this machine's
        # (JRAY_NODE_IP, else what its hostname resolves to)
        shown = (os.environ.get("JRAY_NODE_IP") or _host_ip()) if every else connect_host
        head_address = f"{shown}:{port}" if ":" not in shown else f"[{shown}]:{port}"
        host, hport = connect_host, port
    else:
        if not address:
            raise LaunchError("jray start: give --head, or --address HOST:PORT of a head")
        try:
            host, hport = endpoints.parse_host_port(address, "--address")
        except ValueError as exc:
            raise LaunchError(str(exc)) from None
        head_address = address
        if not secret_file:
            secret_file = os.environ.get("JRAY_SECRET_FILE") or default_secret_file()
    try:
        secret = auth.read_secret_file(secret_file)
    except auth.AuthError as exc:
        raise LaunchError(f"{exc} (give --secret-file PATH, the head's secret)") from None
    # the address other machines reach this one's sockets at (JRAY_NODE_IP overrides:
    # a head bound to every interface, hosts that reach this one by another route)
    node_ip = os.environ.get("JRAY_NODE_IP") or local_ip_for(host, hport)
    session_dir = tempfile.mkdtemp(prefix=f"jray-{session}-")
    shm.new_session_key(session_dir, secret)
    spill = make_spill_dir(os.environ.get("JRAY_SPILL_DIR") or tempfile.gettempdir(), session)
    node_id = os.urandom(8)
    rec = Started(head_address, os.path.abspath(secret_file), node_id.hex(),
                  f"jray-{session}-", session_dir, head)
    env = _env(node_ip)
    procs: list[subprocess.Popen[bytes]] = []
    head_tcp = endpoints.tcp_address(host, hport)
    node_args = [
        "--head", head_tcp, "--node-id", node_id.hex(), "--session-dir", session_dir,
        "--shm-prefix", rec.shm_prefix,
        "--resources", json.dumps({**resources, "_object_store_memory": object_store_memory}),
        "--spill-dir", spill, "--num-workers", str(num_workers), "--owns-session-dir",
    ]
    if block:
        node_args += ["--parent-pid", str(os.getpid())]
    try:
        if head:
            bind_addr = endpoints.tcp_address(bind or "127.0.0.1", port)
            args = ["--address", bind_addr, "--session", session, "--secret-file",
                    os.path.join(session_dir, shm.KEY_FILE)]
            if block:
                args += ["--parent-pid", str(os.getpid())]
            hp = _launch("head", args, session_dir, env, block)
            procs.append(hp)
            rec.pids["head"] = hp.pid
            node_args += ["--head-pid", str(hp.pid)]
        why = probe.handshake(head_tcp, secret, START_WAIT_S)
        if why:
            raise LaunchError(f"the head at {head_address} {why}" + (
                f"; head log:\n{_tail(session_dir, 'head')}" if head else ""))
        np_ = _launch("node", node_args, session_dir, env, block)
        procs.append(np_)
        rec.pids["node"] = np_.pid
        if not _wait_node(head_tcp, secret, node_id.hex(), procs):
            raise LaunchError(f"the node daemon did not join the head at {head_address} "
                              f"within {START_WAIT_S:.0f} s; node log:\n"
                              f"{_tail(session_dir, 'node')}")
    except BaseException:
        stop_procs(procs)
        import shutil

        shutil.rmtree(session_dir, ignore_errors=True)
        shutil.rmtree(spill, ignore_errors=True)
        raise
    rec.save()
    return rec, procs


def _tail(session_dir: str, name: str) -> str:
    try:
        with open(os.path.join(session_dir, f"{name}.log")) as f:
            return "".join(f.readlines()[-15:])
    except OSError:
        return "(no log)"


def _wait_node(head_tcp: str, secret: bytes, node_hex: str,
               procs: list[subprocess.Popen[bytes]]) -> bool:
    deadline = time.monotonic() + START_WAIT_S
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            return False
        try:
            nodes = probe.query(head_tcp, secret, "nodes", None, 5.0)
        except probe.QueryError:
            nodes = []
        if any(n.get("NodeID") == node_hex and n.get("Alive") for n in nodes):
            return True
        time.sleep(0.1)
    return False


def stop_procs(procs: list[subprocess.Popen[bytes]], timeout: float = 10.0) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    deadline = time.monotonic() + timeout
    for p in procs:
        try:
            p.wait(max(0.05, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def stop_recorded(timeout: float = 10.0) -> list[Started]:
    """SIGTERM every process a ``jray start`` on this machine left running (nodes
    first, then heads); SIGKILL what is still there after ``timeout``."""
    recs = recorded()
    order = [(p, r) for p, r in recs if not r.is_head] + [(p, r) for p, r in recs if r.is_head]
    pids: list[int] = []
    for _, rec in order:
        for name in ("node", "head"):
            pid = rec.pids.get(name)
            if pid is not None and _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
                pids.append(pid)
    deadline = time.monotonic() + timeout
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in pids:
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    for path, _ in order:
        with contextlib.suppress(OSError):
            os.unlink(path)
    return [r for _, r in order]


def forget(rec: Started) -> None:
    with contextlib.suppress(OSError):
        os.unlink(os.path.join(runtime_dir(), f"started-{rec.starter_pid}.json"))


def find(address: str | None) -> Started | None:
    """The recorded start on this machine for ``address`` (any head's for "auto")."""
    for _, rec in recorded():
        if address in (None, "auto"):
            if rec.is_head:
                return rec
        elif _same_address(rec.head_address, address):
            return rec
    return None


def _same_address(a: str, b: str) -> bool:
    try:
        ha, pa = endpoints.parse_host_port(a)
        hb, pb = endpoints.parse_host_port(b)
    except ValueError:
        return False
    local = {"127.0.0.1", "localhost", "0.0.0.0"}
    return pa == pb and (ha == hb or (ha in local and hb in local))


def describe(rec: Started) -> dict[str, Any]:
    return asdict(rec)
