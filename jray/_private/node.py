"""Node daemon: starts, watches and stops the worker processes of one machine.

::

    head ◀──DEALER── node daemon ──spawn──▶ workers (children, die with it)
                         │  pidfd per worker: a death is seen at once
                         └─ WORKER_DIED(worker, exit code) ──▶ head
    head ──ACTOR_SPAWN──▶ node daemon ──spawn──▶ actor process (one per actor incarnation)
                         └─ ACTOR_PROC_DIED(actor, incarnation, exit code) ──▶ head

It keeps at least ``--num-workers`` workers alive (a crashed one is replaced),
starts more when the head asks (tasks blocked in ``get`` lend out their CPU),
signals workers for ``cancel``, and unlinks shared-memory segments of freed
objects, or keeps the large unmapped ones in a pool for writers to reuse
(``shm.to_pool``; the head decides which and accounts for them, the node
reports what the pool holds with ``POOL_STATE`` and drops files idle for
``POOL_IDLE_S``). On exit it kills its workers and removes every segment and socket
file of the session.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import zmq

from jray._private import actor_protocol as A
from jray._private import protocol as P
from jray._private import shm, transport
from jray._private.net import auth, curve, objects
from jray._private.resources import device_env, hidden_devices

log = logging.getLogger("jray.node")

#: Pooled segments unused this long are unlinked (the memory goes back to the OS).
POOL_IDLE_S = 2.0
#: A node of a TCP cluster exits when its head has been silent this long (heartbeats
#: are answered every ``HEARTBEAT_S``); a shorter cut-off ends in a rejoin.
HEAD_SILENCE_S = 60.0


def default_memory() -> int:
    """The ``memory`` resource of a node started without one: 70% of the memory
    available now, as Ray does."""
    import psutil

    return int(psutil.virtual_memory().available * 0.7)

class NodeDaemon:
    def __init__(self, ns: argparse.Namespace) -> None:
        self.ns = ns
        self.node_id = bytes.fromhex(ns.node_id)
        self.ctx = transport.new_context()
        self.sock = transport.dealer(self.ctx, ns.head, b"n" + self.node_id)
        self.poller = zmq.Poller()
        self.poller.register(self.sock, zmq.POLLIN)
        self.procs: dict[bytes, subprocess.Popen[bytes]] = {}
        self.pidfds: dict[int, bytes] = {}
        #: actor id -> (incarnation, process); pidfd -> actor id
        self.actors: dict[bytes, tuple[int, subprocess.Popen[bytes]]] = {}
        self.actor_fds: dict[int, bytes] = {}
        self.counter = 0
        self.min_workers = ns.num_workers
        self.stopping = False
        #: a private directory (0700) the driver made for this session (see cluster.py);
        #: spill files are created in it through ``spill_dfd`` (openat), exclusively
        self.spill_dir = ns.spill_dir
        self.spill_dfd: int | None = None
        self.spill_fd: int | None = None
        self.spill_path = ""
        self.spill_pos = 0
        self.spill_count = 0
        self.spill_live: dict[str, int] = {}
        self.pool = shm.pool_prefix(ns.shm_prefix, self.node_id)
        #: pool file -> when it was pooled
        self.pooled: dict[str, float] = {}
        self.pool_seq = 0
        self.pool_msgs = 0
        #: on a TCP cluster: the server of this node's objects to other machines' nodes,
        #: and pulls from theirs (threads; a finished one wakes the loop through a pipe)
        self.server: objects.ObjectServer | None = None
        node_ip = os.environ.get("JRAY_NODE_IP")
        secret = auth.current_secret()
        if ns.head.startswith("tcp://") and node_ip and secret:
            self.server = objects.ObjectServer(node_ip, secret, ns.shm_prefix, ns.spill_dir)
            self.server.start()
        self.pulled: list[P.Msg] = []
        self.pulling: set[bytes] = set()
        self.pull_threads: list[threading.Thread] = []
        self.wake_r, self.wake_w = os.pipe()
        self.poller.register(self.wake_r, zmq.POLLIN)

    def spawn(self) -> None:
        self.counter += 1
        wid = b"w" + self.node_id[:6] + self.counter.to_bytes(4, "little")
        cmd = [
            sys.executable, "-m", "jray._private.worker",
            "--head", self.ns.head, "--session-dir", self.ns.session_dir,
            "--node-id", self.ns.node_id, "--worker-id", wid.hex(),
            "--shm-prefix", self.ns.shm_prefix,
        ]
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, env=self.worker_env)
        self.procs[wid] = proc
        if hasattr(os, "pidfd_open"):
            fd = os.pidfd_open(proc.pid)
            self.pidfds[fd] = wid
            self.poller.register(fd, zmq.POLLIN)

    def reap(self, wid: bytes) -> None:
        proc = self.procs.pop(wid, None)
        if proc is None:
            return
        code = proc.wait()
        if code:
            log.info("worker %s (pid %d) exited with %d", wid.hex(), proc.pid, code)
        if not self.stopping:
            transport.send_batch(self.sock, [(P.WORKER_DIED, wid, code)])
            if len(self.procs) < self.min_workers:
                self.spawn()

    def spawn_actor(self, actor_id: bytes, inc: int, gpu_ids: list[int]) -> None:
        cmd = [
            sys.executable, "-m", "jray._private.actor_worker",
            "--head", self.ns.head, "--session-dir", self.ns.session_dir,
            "--node-id", self.ns.node_id, "--shm-prefix", self.ns.shm_prefix,
            "--actor-id", actor_id.hex(), "--incarnation", str(inc),
        ]
        env = dict(os.environ, **{v: "" for v in self.hidden})  # none it does not hold
        if gpu_ids:  # the devices the actor holds (ids index the node's own lists)
            env.update(device_env(gpu_ids, dict(os.environ)))
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, env=env)
        self.actors[actor_id] = (inc, proc)
        if hasattr(os, "pidfd_open"):
            fd = os.pidfd_open(proc.pid)
            self.actor_fds[fd] = actor_id
            self.poller.register(fd, zmq.POLLIN)

    def reap_actor(self, actor_id: bytes) -> None:
        entry = self.actors.pop(actor_id, None)
        if entry is None:
            return
        inc, proc = entry
        code = proc.wait()
        if not self.stopping:
            transport.send_batch(self.sock, [(A.ACTOR_PROC_DIED, actor_id, inc, code)])

    def handle(self, batch: list[P.Msg]) -> None:
        for msg in batch:
            op = msg[0]
            if op == P.SPAWN_WORKERS:
                for _ in range(msg[1]):
                    self.spawn()
            elif op == P.SIGNAL_WORKER:
                proc = self.procs.get(msg[1])
                if proc is not None and proc.poll() is None:
                    os.kill(proc.pid, msg[2])
            elif op == P.UNLINK:
                for name in msg[1]:
                    shm.unlink(name)
            elif op == P.POOL:
                self.to_pool(msg[1])
            elif op == P.POOL_TRIM:
                self.trim_pool(0.0)
            elif op == P.SPILL:
                self.spill(msg[1])
            elif op == P.SPILL_FREE:
                self.spill_free(msg[1])
            elif op == A.ACTOR_SPAWN:
                self.spawn_actor(msg[1], msg[2], msg[3])
            elif op == A.ACTOR_SIGNAL:
                entry = self.actors.get(msg[1])
                if entry is not None and entry[0] == msg[2] and entry[1].poll() is None:
                    os.kill(entry[1].pid, msg[3])
            elif op == P.NODE_EXIT:
                self.stopping = True
            elif op == P.NODE_REJOIN:
                self.rejoin()
            elif op == P.PULL_OBJECT:
                self.start_pull(msg[1], msg[2], msg[3])

    # --- objects from other machines ------------------------------------------------
    def start_pull(self, oid: bytes, loc: P.Loc, address: str) -> None:
        """Copy ``oid`` from the node serving it at ``address`` into this node's store
        (a thread; ``PULLED`` goes to the head when it is done)."""
        secret = auth.current_secret()
        if oid in self.pulling or secret is None:
            return
        self.pulling.add(oid)
        dest = f"{self.ns.shm_prefix}x{oid.hex()}"
        node_id = self.node_id
        kind, name, offset, size = objects.source_range(loc)

        def run() -> None:
            result: P.Msg
            try:
                objects.pull(address, secret, kind, name, offset, size, dest)
                result = (P.PULLED, node_id, oid, (P.LOC_SHM, dest, size, node_id), None)
            except (objects.PullError, OSError, zmq.ZMQError) as exc:
                log.warning("pulling object %s from %s failed: %s", oid.hex(), address, exc)
                result = (P.PULLED, node_id, oid, None, str(exc))
            self.pulled.append(result)
            os.write(self.wake_w, b"x")

        thread = threading.Thread(target=run, name="jray-pull", daemon=True)
        thread.start()
        self.pull_threads = [t for t in self.pull_threads if t.is_alive()] + [thread]

    def report_pulls(self) -> None:
        os.read(self.wake_r, 4096)
        done: list[P.Msg] = []
        while self.pulled:  # (list.pop is atomic: a pull thread may append meanwhile)
            done.append(self.pulled.pop(0))
        for msg in done:
            self.pulling.discard(msg[2])
        if done and not self.stopping:
            transport.send_batch(self.sock, done)

    # --- pool of free segments --------------------------------------------------------
    def to_pool(self, names: list[str]) -> None:
        """Keep freed segments for reuse, but unlink those some process still maps."""
        now = time.monotonic()
        self.pool_msgs += 1
        for name in names:
            self.pool_seq += 1
            pooled = shm.to_pool(name, self.pool, self.pool_seq)
            if pooled:
                self.pooled[pooled] = now
        self.report_pool()

    def trim_pool(self, idle_s: float) -> None:
        """Unlink the pool files pooled more than ``idle_s`` ago (all with 0)."""
        now = time.monotonic()
        dropped = False
        live = set()
        for name, _size in shm.pool_entries(self.pool):
            if now - self.pooled.get(name, 0.0) >= idle_s:
                shm.unlink(name)
                dropped = True
            else:
                live.add(name)
        self.pooled = {n: t for n, t in self.pooled.items() if n in live}
        if dropped or not idle_s:
            self.report_pool()

    def report_pool(self) -> None:
        entries = shm.pool_entries(self.pool)
        live = {name for name, _ in entries}
        for name in [n for n in self.pooled if n not in live]:  # claimed or dropped
            del self.pooled[name]
        transport.send_batch(self.sock, [(P.POOL_STATE, self.node_id,
                                          [size for _, size in entries], self.pool_msgs)])

    # --- spilling ---------------------------------------------------------------------
    SPILL_FILE_MAX = 1 << 30

    def spill(self, victims: list[tuple[bytes, str, int]]) -> None:
        """Copy segments into large append-only spill files, then unlink them.

        Segments some process has mapped (a live array) are refused: spilling
        them would free nothing.

        A write that fails (disk full, read-only, the directory gone) is undone
        and reported with its reason: that object and the rest stay in memory,
        and the head fails the reservations that needed the room.
        """
        mapped = shm.mapped_names(self.ns.shm_prefix)
        spilled: list[tuple[bytes, P.Loc]] = []
        refused: list[bytes] = []
        failed: list[bytes] = []
        error: str | None = None
        for oid, name, _size in victims:
            if error is not None:
                failed.append(oid)
                continue
            if name in mapped:
                refused.append(oid)
                continue
            try:
                if self.spill_fd is None or self.spill_pos >= self.SPILL_FILE_MAX:
                    self._new_spill_file()
                assert self.spill_fd is not None
                size = shm.copy_to(name, self.spill_fd, self.spill_pos)
            except (FileNotFoundError, shm.Untrusted) as exc:
                if self.spill_fd is not None:  # the segment is gone or not ours: skip it
                    refused.append(oid)
                    continue
                error = f"spilling to {self.spill_dir} failed ({exc})"
            except OSError as exc:
                error = f"spilling to {self.spill_dir} failed ({exc})"
            else:
                spilled.append((oid, (P.LOC_SPILLED, self.spill_path, self.spill_pos, size,
                                      self.node_id)))
                self.spill_live[self.spill_path] = self.spill_live.get(self.spill_path, 0) + size
                self.spill_pos += size
                shm.unlink(name)
                continue
            log.error("%s", error)
            failed.append(oid)
            self._undo_partial()
        transport.send_batch(self.sock, [(P.SPILLED, self.node_id, spilled, refused,
                                          failed, error)])

    def _undo_partial(self) -> None:
        """Give back the disk space of a copy that failed halfway."""
        if self.spill_fd is not None:
            try:
                os.ftruncate(self.spill_fd, self.spill_pos)
            except OSError:
                pass

    def _new_spill_file(self) -> None:
        if self.spill_fd is not None:
            os.close(self.spill_fd)
            self.spill_fd = None
            if self.spill_live.get(self.spill_path, 0) <= 0:
                self._remove_spill_file(self.spill_path)
        if self.spill_dfd is None:
            # the directory the driver made, checked on its descriptor: ours, 0700
            dfd = os.open(self.spill_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
            try:
                st = os.fstat(dfd)
                if st.st_uid != os.geteuid() or st.st_mode & 0o077:
                    raise shm.Untrusted(f"spill directory {self.spill_dir} is not private "
                                        f"(uid {st.st_uid}, mode {st.st_mode & 0o777:04o})")
            except BaseException:
                os.close(dfd)
                raise
            self.spill_dfd = dfd
        self.spill_count += 1
        name = f"spill-{self.spill_count:05d}.bin"
        self.spill_fd = shm.create_private(name, dir_fd=self.spill_dfd)
        self.spill_path = os.path.join(self.spill_dir, name)
        self.spill_pos = 0

    def spill_free(self, items: list[tuple[str, int]]) -> None:
        for path, size in items:
            left = self.spill_live.get(path, 0) - size
            self.spill_live[path] = left
            if left <= 0 and path != self.spill_path:
                self._remove_spill_file(path)
            elif left <= 0 and self.spill_fd is not None:  # the open file emptied: restart it
                self.spill_pos = 0
                self._undo_partial()

    def _remove_spill_file(self, path: str) -> None:
        self.spill_live.pop(path, None)
        try:
            if self.spill_dfd is not None:
                os.unlink(os.path.basename(path), dir_fd=self.spill_dfd)
        except OSError:
            pass

    @property
    def hidden(self) -> list[str]:
        """The device variables of this node's devices (``resources.hidden_devices``)."""
        return hidden_devices(dict(json.loads(self.ns.resources)))

    @property
    def worker_env(self) -> dict[str, str] | None:
        """Task workers learn which device variables to blank for tasks holding none."""
        hidden = self.hidden
        return dict(os.environ, JRAY_HIDDEN_DEVICES=",".join(hidden)) if hidden else None

    def register(self) -> None:
        resources = dict(json.loads(self.ns.resources))
        resources["_initial_workers"] = self.min_workers
        # Ray's memory resources: tasks may ask for ``memory=`` bytes (scheduled like CPUs);
        # the store's capacity is reported, never held
        resources.setdefault("memory", float(default_memory()))
        resources.setdefault("object_store_memory", float(resources.get("_object_store_memory", 0)))
        msg: P.Msg = (P.NODE_REGISTER, self.node_id, resources, socket.gethostname(),
                      os.getpid())
        if self.server is not None:
            msg = (*msg, objects.store_domain(), self.server.address)
        transport.send_batch(self.sock, [msg])
        for _ in range(self.min_workers):
            self.spawn()

    def rejoin(self) -> None:
        """The head declared this node lost (it was cut off): its tasks went elsewhere,
        so end every worker and actor, drop its segments and register as a new node."""
        log.warning("the head declared node %s lost; rejoining as a new node",
                    self.node_id.hex())
        self.stopping = True  # reap() reports nothing while the old processes go
        self._end_children()
        for fd in [*self.pidfds, *self.actor_fds]:
            self.poller.unregister(fd)
            os.close(fd)
        self.pidfds.clear()
        self.actor_fds.clear()
        self.procs.clear()
        self.actors.clear()
        shm.cleanup(self.ns.shm_prefix)
        self.stopping = False
        self.poller.unregister(self.sock)
        self.sock.close(0)
        self.node_id = os.urandom(8)
        self.ns.node_id = self.node_id.hex()
        self.pool = shm.pool_prefix(self.ns.shm_prefix, self.node_id)
        self.sock = transport.dealer(self.ctx, self.ns.head, b"n" + self.node_id)
        self.poller.register(self.sock, zmq.POLLIN)
        self.register()

    def run(self) -> None:
        self.register()
        parent = self.ns.parent_pid
        transport.exit_watchdog(parent, lambda: self.stopping, grace_s=10.0)
        head_fd = self._watch(self.ns.head_pid)
        last = last_beat = heard = time.monotonic()
        while not self.stopping:
            now = time.monotonic()
            if now - last_beat >= P.HEARTBEAT_S:
                last_beat = now
                transport.send_batch(self.sock, [(P.HEARTBEAT, self.node_id)])
            for item, _ in self.poller.poll(int(P.HEARTBEAT_S * 1000)):
                if item == head_fd and head_fd is not None:
                    log.warning("the head (pid %d) exited; node exits", self.ns.head_pid)
                    self.stopping = True
                elif item is self.sock:
                    while True:
                        try:
                            frame = self.sock.recv(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        heard = time.monotonic()
                        self.handle(P.unpack(frame))
                elif item == self.wake_r:
                    self.report_pulls()
                elif isinstance(item, int) and item in self.actor_fds:
                    actor_id = self.actor_fds.pop(item)
                    self.poller.unregister(item)
                    os.close(item)
                    self.reap_actor(actor_id)
                elif isinstance(item, int):
                    wid = self.pidfds.pop(item)
                    self.poller.unregister(item)
                    os.close(item)
                    self.reap(wid)
            now = time.monotonic()
            if now - last > 0.5:
                last = now
                if self.pooled:
                    self.trim_pool(POOL_IDLE_S)
                for wid, proc in list(self.procs.items()):
                    if proc.poll() is not None and wid not in self.pidfds.values():
                        self.reap(wid)
                for actor_id, (_, proc) in list(self.actors.items()):
                    if proc.poll() is not None and actor_id not in self.actor_fds.values():
                        self.reap_actor(actor_id)
                if parent is not None and os.getppid() != parent:
                    log.warning("parent %d died; node exits", parent)
                    break
                if self.ns.head.startswith("tcp://") and now - heard > HEAD_SILENCE_S:
                    log.warning("the head at %s has not answered for %.0f s; node exits",
                                self.ns.head, now - heard)
                    break
        self.stop()

    def _watch(self, pid: int | None) -> int | None:
        """A pidfd of ``pid`` in the poller (readable once it exits), or None."""
        if pid is None or not hasattr(os, "pidfd_open"):
            return None
        try:
            fd = os.pidfd_open(pid)
        except OSError:  # already gone
            log.warning("the head (pid %d) is gone; node exits", pid)
            self.stopping = True
            return None
        self.poller.register(fd, zmq.POLLIN)
        return fd

    def _end_children(self) -> None:
        procs = [*self.procs.values(), *(proc for _, proc in self.actors.values())]
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + 2.0
        for proc in procs:
            try:
                proc.wait(max(0.01, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def stop(self) -> None:
        self.stopping = True
        self._end_children()
        for thread in self.pull_threads:  # (a pull's segment must not outlive the node)
            thread.join(2.0)
        shm.cleanup(self.ns.shm_prefix)
        for fd in (self.spill_fd, self.spill_dfd):
            if fd is not None:
                os.close(fd)
        self.spill_fd = self.spill_dfd = None
        shutil.rmtree(self.spill_dir, ignore_errors=True)
        if self.server is not None:
            self.server.stop()
        os.close(self.wake_r)
        os.close(self.wake_w)
        self.sock.close(0)
        curve.stop_zap(self.ctx)
        self.ctx.term()
        if self.ns.owns_session_dir:
            shutil.rmtree(self.ns.session_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="jray-node")
    ap.add_argument("--head", required=True)
    ap.add_argument("--node-id", required=True)
    ap.add_argument("--session-dir", required=True)
    ap.add_argument("--shm-prefix", required=True)
    ap.add_argument("--resources", required=True, help="JSON dict of resource totals")
    ap.add_argument("--num-workers", type=int, required=True)
    ap.add_argument("--parent-pid", type=int, default=None)
    ap.add_argument("--head-pid", type=int, default=None, help="exit when it exits")
    ap.add_argument("--owns-session-dir", action="store_true")
    ap.add_argument("--spill-dir", required=True,
                    help="the session's private directory (0700) for spill files")
    ap.add_argument("--log", default=None)
    ns = ap.parse_args(argv)
    logging.basicConfig(
        filename=ns.log, level=logging.INFO, format="%(asctime)s node %(levelname)s %(message)s"
    )
    shm.use_session(ns.session_dir)  # its key is the secret the head connection proves
    daemon = NodeDaemon(ns)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGIO, signal.SIG_IGN)  # a lease break (see shm.to_pool)

    def on_term(signum: int, frame: object) -> None:
        daemon.stopping = True

    signal.signal(signal.SIGTERM, on_term)
    try:
        daemon.run()
    finally:
        if not daemon.ctx.closed:
            daemon.stop()
    sys.exit(0)


if __name__ == "__main__":
    main()
