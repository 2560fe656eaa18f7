"""Starting and stopping the embedded local cluster (head + one node daemon).

``LocalCluster.start`` creates a session directory for socket files and a
session-unique prefix for shared-memory segments, then launches the head and
the node daemon as children of the driver, each in its own session (so a
notebook interrupt, sent to the kernel's process group, does not reach them)
and each set to receive SIGTERM if the driver dies. Nothing waits for them to
come up: ZeroMQ queues the first messages until the head binds.

Everything the session keeps on disk lives in private directories made with
``mkdtemp`` (mode 0700, a fresh random name): the session directory (sockets,
logs and ``session.key``, the key that authenticates segment headers) and a
spill directory inside ``spill_dir``. Only the process that started the
cluster stops it (a forked child never does).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field

from jray._private import shm, transport
from jray.exceptions import ClusterError, InitError

#: Every cluster this process started (tests check that each left nothing behind).
STARTED: list[LocalCluster] = []


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    paths = [p for p in sys.path if p and os.path.isdir(p)]
    cwd = os.getcwd()
    if cwd not in paths:
        paths.insert(0, cwd)
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


@dataclass
class LocalCluster:
    session: str
    session_dir: str
    head_addr: str
    node_id: bytes
    shm_prefix: str
    spill_dir: str = ""
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    pid: int = field(default_factory=os.getpid)

    @classmethod
    def start(
        cls,
        resources: dict[str, float],
        num_workers: int,
        object_store_memory: int = 0,
        spill_dir: str | None = None,
    ) -> LocalCluster:
        session = uuid.uuid4().hex[:12]
        base = spill_dir or os.environ.get("JRAY_SPILL_DIR") or tempfile.gettempdir()
        private_spill = make_spill_dir(base, session)
        try:
            session_dir = tempfile.mkdtemp(prefix=f"jray-{session}-")
            shm.new_session_key(session_dir)
        except BaseException:
            shutil.rmtree(private_spill, ignore_errors=True)
            raise
        head_addr = transport.ipc_addr(session_dir, "head.sock")
        node_id = os.urandom(8)
        cl = cls(session, session_dir, head_addr, node_id, f"jray-{session}-", private_spill)
        STARTED.append(cl)
        env = _child_env()
        me = str(os.getpid())

        def launch(name: str, args: list[str]) -> None:
            log = os.path.join(session_dir, f"{name}.log")
            cl.procs[name] = subprocess.Popen(
                [sys.executable, "-m", f"jray._private.{name}", *args, "--log", log],
                env=env, stdin=subprocess.DEVNULL, start_new_session=True,
                preexec_fn=transport.die_with_parent,
            )

        launch("head", ["--address", head_addr, "--parent-pid", me, "--session", session,
                        "--secret-file", os.path.join(session_dir, shm.KEY_FILE)])
        launch("node", [
            "--head", head_addr, "--node-id", node_id.hex(), "--session-dir", session_dir,
            "--shm-prefix", cl.shm_prefix,
            "--resources", json.dumps({**resources, "_object_store_memory": object_store_memory}),
            "--spill-dir", private_spill, "--head-pid", str(cl.procs["head"].pid),
            "--num-workers", str(num_workers), "--parent-pid", me, "--owns-session-dir",
        ])
        return cl

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            code = proc.poll()
            if code is not None:
                raise ClusterError(
                    f"the jray {name} process exited with code {code}; "
                    f"last log lines:\n{self.log_tail(name)}"
                )

    def log_tail(self, name: str, lines: int = 20) -> str:
        try:
            with open(os.path.join(self.session_dir, f"{name}.log")) as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 5.0, grace: float = 0.2) -> None:
        """Wait for the processes to exit after SHUTDOWN; SIGTERM the ones that do not.

        The head exits by itself; the node daemon exits on the head's NODE_EXIT,
        which it never hears if it had not registered yet (a shutdown right after
        init), so it gets ``grace`` seconds after the head is gone, then SIGTERM.
        """
        if os.getpid() != self.pid:
            return  # a forked child: the cluster belongs to the parent
        deadline = time.monotonic() + timeout
        head = self.procs.get("head")
        if head is not None:
            try:
                head.wait(max(0.01, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                head.terminate()
        rest = min(deadline, time.monotonic() + grace)
        for proc in self.procs.values():
            try:
                proc.wait(max(0.01, rest - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(max(0.5, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shm.cleanup(self.shm_prefix)
        shutil.rmtree(self.session_dir, ignore_errors=True)
        if self.spill_dir:
            shutil.rmtree(self.spill_dir, ignore_errors=True)


def make_spill_dir(base: str, session: str) -> str:
    """The session's private spill directory inside ``base`` (``init(spill_dir=)``).

    ``base`` must be a directory this user can write (it is made if missing); the
    spill files go into a fresh ``mkdtemp`` directory in it (mode 0700), so a
    ``base`` that others can write (like /tmp) exposes nothing.
    """
    what = f"jray.init: spill_dir {base!r}"
    if os.path.exists(base) and not os.path.isdir(base):
        raise InitError(f"{what} is not a directory")
    try:
        os.makedirs(base, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise InitError(f"{what} does not exist and cannot be made: {exc}") from None
    if not os.access(base, os.W_OK | os.X_OK):
        raise InitError(f"{what} is not writable by this user")
    try:
        path = tempfile.mkdtemp(prefix=f"jray-spill-{session}-", dir=base)
        shm.check_private_dir(path, "spill directory")
    except (OSError, shm.Untrusted) as exc:
        raise InitError(f"{what}: cannot make a private directory in it: {exc}") from None
    return path
