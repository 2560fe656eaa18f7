"""Short-lived connections to a head: is it there and does it take our secret
(``handshake``), and one state query (``query``) for ``jray status`` and
``jray start``. Every wait is bounded."""

from __future__ import annotations

import os
import time
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

from jray._private import protocol as P
from jray._private.net import auth

#: a TCP connection whose CurveZMQ handshake has not completed this long was refused
CURVE_WAIT_S = 3.0


class QueryError(Exception):
    """The head did not answer a query in time, or answered with an error."""


def _connect(ctx: zmq.Context[zmq.Socket[bytes]], addr: str, secret: bytes,
             flags: int) -> tuple[zmq.Socket[bytes], zmq.Socket[bytes] | None]:
    from jray._private import transport

    monitors: list[zmq.Socket[bytes]] = []

    def watch(sock: zmq.Socket[bytes]) -> None:
        if addr.startswith("tcp://"):
            monitors.append(sock.get_monitor_socket(
                zmq.EVENT_CONNECTED | zmq.EVENT_HANDSHAKE_SUCCEEDED
                | zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL))

    sock = transport.dealer(ctx, addr, b"s" + os.urandom(7), flags, secret=secret,
                            before_connect=watch)
    return sock, monitors[0] if monitors else None


def handshake(addr: str, secret: bytes, timeout: float) -> str:
    """"" when the head at ``addr`` accepts our handshake, else what went wrong."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        sock, monitor = _connect(ctx, addr, secret, auth.FLAG_ACK)
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        if monitor is not None:
            poller.register(monitor, zmq.POLLIN)
        deadline = time.monotonic() + timeout
        connected_at: float | None = None
        secured = False
        refused = ("refused our proof of the cluster secret (wrong secret file, "
                   "or not a jray head)")
        while (left := deadline - time.monotonic()) > 0:
            if connected_at is not None and not secured and \
                    time.monotonic() - connected_at > CURVE_WAIT_S:
                return refused  # the server took the TCP connection, not our keys
            ready = dict(poller.poll(int(min(left, 0.25) * 1000) + 1))
            if monitor is not None and monitor in ready:
                event = recv_monitor_message(monitor)["event"]
                if event == zmq.EVENT_CONNECTED:
                    connected_at = connected_at or time.monotonic()
                elif event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                    secured = True
                else:
                    return refused
            if sock in ready:
                reply = sock.recv()
                if reply == auth.OK:
                    return ""
                if reply.startswith(auth.NO):
                    return "refused the handshake: " + reply[5:].decode(errors="replace")
                return "answered with something that is not a jray handshake reply"
        if connected_at is not None and not secured:
            return refused
        return f"did not answer within {timeout:.0f} s (is it running and reachable?)"
    finally:
        ctx.destroy(0)


def query(addr: str, secret: bytes, kind: str, arg: Any, timeout: float) -> Any:
    """One state query (``state_tables.describe``) of the head at ``addr``."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        sock, _ = _connect(ctx, addr, secret, 0)
        sock.send(P.pack([(P.STATE, 1, kind, arg)]))
        if not sock.poll(int(timeout * 1000)):
            raise QueryError(f"the head at {addr} did not answer a {kind!r} query within "
                             f"{timeout:.0f} s")
        for msg in P.unpack(sock.recv()):
            if msg[0] == P.STATE_REPLY and msg[1] == 1:
                status, payload = msg[2]
                if status != "ok":
                    raise QueryError(f"the head refused the {kind!r} query: {payload}")
                return payload
        raise QueryError(f"the head at {addr} sent no reply to the {kind!r} query")
    finally:
        ctx.destroy(0)
