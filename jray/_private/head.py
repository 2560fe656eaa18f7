"""Head process: the I/O shell around ``Scheduler`` (the control state).

::

    ROUTER (drivers, workers, node daemons)
       │  recv(NOBLOCK) every frame that is waiting, until EAGAIN (up to MAX_DRAIN)
       ▼
    Scheduler.handle_many(sender, batch)   (per frame: update the tables)
    Scheduler.schedule()                   (once per drained round)  ──▶  outbox
       │
       └─ send one frame per identity, then poll again

The head exits when a driver asks for SHUTDOWN, when its parent (the driver
that started an embedded cluster) dies, or on SIGTERM; a watchdog thread ends
it if its loop does not get there within 2 s.

Every peer's first frame is its handshake (``net.auth``): until an identity has
proved the cluster secret, its frames are dropped without being unpickled, and
afterwards only the ops of its role (``net.roles``) reach the scheduler. Anything
else (not ``[identity, one frame]``, not a batch, an op its role may not send,
a frame that fails to decode) is dropped and counted by reason (``Gate.dropped``,
logged), never half-read and never fatal.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
import traceback

import zmq

from jray._private import protocol as P
from jray._private import transport
from jray._private.actor_table import ActorTable
from jray._private.driver_exit import DriverExits
from jray._private.net import auth, curve, roles
from jray._private.scheduler import Scheduler

MAX_DRAIN = 2000
NOBLOCK = int(zmq.NOBLOCK)
SNDMORE = int(zmq.SNDMORE)
log = logging.getLogger("jray.head")


def serve(address: str, parent_pid: int | None, session: str, secret: bytes) -> None:
    auth.use_secret(secret)
    ctx = transport.new_context()
    sock = transport.router(ctx, address)
    gate = auth.Gate(secret)
    sched = Scheduler(session)
    drivers = DriverExits(sched, ActorTable(sched))
    stop = False

    def on_term(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    last_check = time.monotonic()
    shutdown_at: float | None = None
    poller = zmq.Poller()
    poller.register(sock, zmq.POLLIN)
    transport.exit_watchdog(parent_pid, lambda: stop or sched.shutdown_requested)
    allowed = gate.allowed
    # a TCP head watches its nodes' heartbeats (an ipc cluster's node is a child of
    # the driver, whose death the head sees anyway)
    watch_nodes = address.startswith("tcp://")
    node_seen: dict[bytes, float] = {}
    sched.register(P.HEARTBEAT, lambda sender, msg: _heartbeat(sched, sender))
    handle_many = sched.handle_many
    recv = sock.recv_multipart
    send = sock.send
    unpack = P.unpack
    pack = P.pack
    while not stop:
        if poller.poll(sched.feed.poll_ms(200) if sched.feed.subs else 200):
            # drain until EAGAIN: no per-message getsockopt(EVENTS) (it builds an enum)
            for _ in range(MAX_DRAIN):
                try:
                    parts = recv(NOBLOCK)
                except zmq.Again:
                    break
                if len(parts) != 2:
                    _drop(gate, parts[0], f"{len(parts)} parts, not 2")
                    continue
                ident, frame = parts
                ops = allowed.get(ident)
                if ops is None or frame[:1] != b"\x80":  # not a pickle: a handshake or junk
                    _shake(gate, sock, ident, frame)
                    continue
                try:
                    batch = unpack(frame)
                except Exception as exc:
                    _drop(gate, ident, f"undecodable frame ({type(exc).__name__})")
                    continue
                if type(batch) is not list:
                    _drop(gate, ident, "a frame that is not a batch")
                    continue
                for msg in batch:
                    if type(msg) is not tuple or not msg or msg[0] not in ops:
                        batch = _permitted(gate, ident, batch, ops)
                        break
                if watch_nodes and ident[:1] == b"n":
                    node_seen[ident] = time.monotonic()
                try:
                    handle_many(ident, batch)
                except Exception:  # one bad message must not take the cluster down
                    _drop(gate, ident, "a message its handler refused")
                    log.error("error handling a message from %r:\n%s", ident,
                              traceback.format_exc())
            sched.schedule()  # once per drained batch
            for dest, batch in sched.take_outbox().items():
                send(dest, SNDMORE)
                send(pack(batch))
        elif sched.feed.subs:  # idle: event subscribers may still be owed a delta
            for dest, batch in sched.take_outbox().items():
                send(dest, SNDMORE)
                send(pack(batch))
        now = time.monotonic()
        if sched.shutdown_requested and shutdown_at is None:
            shutdown_at = now
        if shutdown_at is not None and now - shutdown_at > 0.3:
            break
        if now - last_check > 0.5:
            last_check = now
            if watch_nodes:
                drivers.check(now)
                _check_nodes(sched, node_seen, now)
            sched.unknown.retry(expire=True)  # lookups of objects never heard of, too long
            for dest, batch in sched.take_outbox().items():
                send(dest, SNDMORE)
                send(pack(batch))
            if parent_pid is not None and os.getppid() != parent_pid:
                log.warning("parent %d died; head exits", parent_pid)
                break
    if not sched.shutdown_requested and sched.nodes:  # SIGTERM (jray stop): nodes go too
        for node in sched.nodes.values():
            send(node.ident, SNDMORE)
            send(pack([(P.NODE_EXIT,)]))
        time.sleep(0.1)
    if gate.dropped:
        log.info("dropped messages by reason: %s", gate.dropped)
    sock.close(300)  # the NODE_EXITs above still go out
    curve.stop_zap(ctx)
    ctx.term()


def _heartbeat(sched: Scheduler, sender: bytes) -> None:
    node = sched.nodes.get(sender[1:])
    if node is not None and node.alive and node.ident == sender:
        sched._send(sender, (P.HEARTBEAT,))
    else:  # declared lost while it was cut off (or unknown): it must start over
        sched._send(sender, (P.NODE_REJOIN,))


def _check_nodes(sched: Scheduler, seen: dict[bytes, float], now: float) -> None:
    """Declare lost the nodes not heard from for ``NODE_TIMEOUT_S``."""
    for ident, t in list(seen.items()):
        if now - t > P.NODE_TIMEOUT_S:
            del seen[ident]
            node = sched.nodes.get(ident[1:])
            if node is not None and node.alive:
                log.warning("node %s (%s) silent for %.1f s: lost", ident[1:].hex(),
                            node.hostname, now - t)
                sched.node_lost(node.node_id, f"no heartbeat for {now - t:.1f} s")
                sched.schedule()


def _drop(gate: auth.Gate, ident: bytes, why: str) -> None:
    n = gate.count(why)
    if n <= 10 or n % 1000 == 0:
        log.warning("dropped a message from %r: %s (%d so far)", ident[:32], why, n)


def _shake(gate: auth.Gate, sock: zmq.Socket[bytes], ident: bytes, frame: bytes) -> None:
    """A frame from a peer that has not shaken hands, or a new handshake."""
    ok, why, answer = gate.check(ident, frame)
    if not ok:
        if why == "not a handshake":
            why = "a frame that is not a batch" if ident in gate.allowed else \
                "unauthenticated peer"
        _drop(gate, ident, why)
    if answer:
        try:
            sock.send_multipart([ident, auth.OK if ok else auth.NO + b" " + why.encode()],
                                NOBLOCK)
        except zmq.ZMQError:
            pass


def _permitted(gate: auth.Gate, ident: bytes, batch: list[P.Msg],
               ops: frozenset[int]) -> list[P.Msg]:
    """The messages of ``batch`` that the sender's role may send; the rest counted."""
    kept = []
    for msg in batch:
        if type(msg) is tuple and msg and msg[0] in ops:
            kept.append(msg)
        else:
            op = msg[0] if type(msg) is tuple and msg else "?"
            _drop(gate, ident, f"op {op!r} not allowed for a "
                  f"{roles.NAMES.get(gate.roles.get(ident, 0), '?')}")
    return kept


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="jray-head")
    ap.add_argument("--address", required=True)
    ap.add_argument("--parent-pid", type=int, default=None)
    ap.add_argument("--session", default="")
    ap.add_argument("--secret-file", required=True, help="the cluster secret (mode 0600)")
    ap.add_argument("--log", default=None)
    ns = ap.parse_args(argv)
    logging.basicConfig(
        filename=ns.log, level=logging.INFO, format="%(asctime)s head %(levelname)s %(message)s"
    )
    secret = auth.read_secret_file(ns.secret_file)
    profile_to = os.environ.get("JRAY_PROFILE_HEAD")
    if profile_to:  # developer aid: JRAY_PROFILE_HEAD=/path/to/file.prof
        import cProfile

        cProfile.runctx("serve(ns.address, ns.parent_pid, ns.session, secret)", globals(), locals(),
                        profile_to)
    else:
        serve(ns.address, ns.parent_pid, ns.session, secret)
    sys.exit(0)


if __name__ == "__main__":
    main()
