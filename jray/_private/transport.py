"""ZeroMQ plumbing shared by every process: socket setup and batched frames.

Topology (ipc:// on one machine, tcp:// across machines, same messages)::

    driver  DEALER ─┐                         ┌─ DEALER  node daemon
    worker  DEALER ─┼──▶ ROUTER  head  ◀──────┘
                    │
    worker  PUSH ───┴──▶ PULL  owner (driver or worker): task results, direct

Every frame holds a batch of messages (see ``protocol``); senders collect
what they have and send one frame per peer. A DEALER to the head sends the
handshake (``net.auth``) as its first frame, before any message; a ``tcp://``
socket is a CurveZMQ client or server (``net.curve``).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import threading
import time
from collections.abc import Callable

import zmq

from jray._private import protocol as P
from jray._private.net import auth, curve, roles
from jray._private.net.endpoints import IpcEndpoints, TcpEndpoints


def new_context() -> zmq.Context[zmq.Socket[bytes]]:
    return zmq.Context()


def _common(sock: zmq.Socket[bytes]) -> None:
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.RCVHWM, 0)


def _secret(given: bytes | None = None) -> bytes:
    secret = given or auth.current_secret()
    if secret is None:
        raise RuntimeError("jray: no cluster secret is loaded in this process "
                           "(shm.use_session or auth.use_secret first)")
    return secret


def dealer(ctx: zmq.Context[zmq.Socket[bytes]], addr: str, ident: bytes,
           flags: int = 0, secret: bytes | None = None,
           before_connect: Callable[[zmq.Socket[bytes]], None] | None = None
           ) -> zmq.Socket[bytes]:
    """A DEALER to the head at ``addr``; its first frame is the handshake of the role
    its identity implies (``net.roles``), proving this process's secret (or
    ``secret``). ``before_connect(sock)`` runs just before it connects (a monitor)."""
    secret = _secret(secret)
    sock = ctx.socket(zmq.DEALER)
    _common(sock)
    sock.setsockopt(zmq.IDENTITY, ident)
    if addr.startswith("tcp://"):
        curve.make_client(sock, secret)
        sock.setsockopt(zmq.HEARTBEAT_IVL, 1000)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3000)
    if before_connect is not None:
        before_connect(sock)
    sock.connect(addr)
    sock.send(auth.handshake(secret, roles.for_identity(ident), ident, flags))
    return sock


def router(ctx: zmq.Context[zmq.Socket[bytes]], addr: str) -> zmq.Socket[bytes]:
    sock = ctx.socket(zmq.ROUTER)
    _common(sock)
    if addr.startswith("tcp://"):
        curve.make_server(ctx, sock, _secret())
        sock.setsockopt(zmq.HEARTBEAT_IVL, 1000)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3000)
    sock.bind(addr)
    return sock


def pull(ctx: zmq.Context[zmq.Socket[bytes]], addr: str) -> zmq.Socket[bytes]:
    sock = ctx.socket(zmq.PULL)
    _common(sock)
    sock.bind(addr)
    return sock


def bound_pull(ctx: zmq.Context[zmq.Socket[bytes]], session_dir: str,
               name: str) -> tuple[zmq.Socket[bytes], str]:
    """A PULL socket peers send to, and its address: a socket file in the session
    directory, or, in a process of a TCP cluster (``JRAY_NODE_IP`` set by
    ``jray start``), a CurveZMQ port on that interface that other machines reach."""
    sock = ctx.socket(zmq.PULL)
    _common(sock)
    node_ip = os.environ.get("JRAY_NODE_IP")
    if node_ip:
        curve.make_server(ctx, sock, _secret())
        return sock, TcpEndpoints(node_ip).bind(sock)
    return sock, IpcEndpoints(session_dir).bind(sock, name)


def bound_pull_pair(ctx: zmq.Context[zmq.Socket[bytes]], session_dir: str, name: str,
                    partner: Callable[[str], str]) -> tuple[zmq.Socket[bytes],
                                                            zmq.Socket[bytes], str]:
    """Two PULL sockets, the second at ``partner(first's address)`` (an actor's call
    and control sockets); on TCP, ports are tried until both are free."""
    for _ in range(50):
        first, addr = bound_pull(ctx, session_dir, name)
        second = ctx.socket(zmq.PULL)
        _common(second)
        if addr.startswith("tcp://"):
            curve.make_server(ctx, second, _secret())
        try:
            second.bind(partner(addr))
        except zmq.ZMQError:
            first.close(0)
            second.close(0)
            continue
        return first, second, addr
    raise RuntimeError(f"jray: no two free ports for {name}")


def push(ctx: zmq.Context[zmq.Socket[bytes]], addr: str,
         before_connect: Callable[[zmq.Socket[bytes]], None] | None = None, *,
         connected_within_ms: int = 0) -> zmq.Socket[bytes]:
    """A PUSH socket to ``addr``. ``before_connect`` sees the socket before it connects
    (to attach a monitor); with ``connected_within_ms``, a send waits (that long at
    most, then raises ``zmq.Again``) until the connection is up, so the message leaves
    at once instead of after the connect."""
    sock = ctx.socket(zmq.PUSH)
    _common(sock)
    if connected_within_ms:
        sock.setsockopt(zmq.IMMEDIATE, 1)
        sock.setsockopt(zmq.SNDTIMEO, connected_within_ms)
    if addr.startswith("tcp://"):
        curve.make_client(sock, _secret())
    if before_connect is not None:
        before_connect(sock)
    sock.connect(addr)
    return sock


def term(ctx: zmq.Context[zmq.Socket[bytes]]) -> None:
    """End a context (its ZAP handler first, which would keep ``term`` waiting)."""
    curve.stop_zap(ctx)
    ctx.term()


def send_batch(sock: zmq.Socket[bytes], batch: list[P.Msg]) -> None:
    sock.send(P.pack(batch))


def send_to(sock: zmq.Socket[bytes], ident: bytes, batch: list[P.Msg]) -> None:
    sock.send_multipart([ident, P.pack(batch)], copy=False)


def ipc_addr(directory: str, name: str) -> str:
    return IpcEndpoints(directory).address(name)


_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Ask Linux to send ``sig`` to this process when its parent dies.

    Meant as a ``preexec_fn``; on other systems it does nothing and the
    parent-pid polling in each daemon's loop is the only guard.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    except (OSError, AttributeError):
        pass


def exit_watchdog(parent_pid: int | None, stopping: Callable[[], bool],
                  grace_s: float = 2.0) -> threading.Thread:
    """Make sure a daemon exits, whatever its main loop is doing.

    A thread checks every 0.25 s whether the parent is gone or ``stopping()``
    holds; if the process is still alive ``grace_s`` seconds later (its main
    loop is stuck), it ends it with ``os._exit``. The main loop's own clean
    exit (files removed) comes first whenever it can.
    """
    def watch() -> None:
        since: float | None = None
        while True:
            time.sleep(0.25)
            gone = parent_pid is not None and os.getppid() != parent_pid
            if since is None and (gone or stopping()):
                since = time.monotonic()
            if since is not None and time.monotonic() - since > grace_s:
                logging.getLogger("jray").error(
                    "pid %d did not exit %.1f s after it was told to (or its parent "
                    "died); exiting now", os.getpid(), grace_s)
                logging.shutdown()
                os._exit(3)

    thread = threading.Thread(target=watch, name="jray-exit-watchdog", daemon=True)
    thread.start()
    return thread
