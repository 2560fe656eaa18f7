"""A connected driver's watch on a remote head: ``ClusterError`` at once when it goes.

A daemon thread keeps its own connection to the head (a viewer's, so it cannot
do anything but query) with a socket monitor: a closed connection (the head
process died, its machine rebooted) marks the head gone at once, and a ping
(a tiny state query) that gets no answer for ``TIMEOUT_S`` (the machine or the
network is gone) does too. ``check`` is the core client's ``check_alive``,
called while a ``get`` or ``wait`` waits, so those raise instead of hanging.
Each ping also vouches that the driver lives (``DRIVER_ALIVE``): when a driver
dies without saying goodbye (SIGKILL), the pings stop and the head ends its work.
"""

from __future__ import annotations

import os
import threading
import time

import zmq
from zmq.utils.monitor import recv_monitor_message

from jray._private import protocol as P
from jray.exceptions import ClusterError

PING_S = 0.5
TIMEOUT_S = 4.0


class HeadWatch:
    def __init__(self, addr: str, shown: str, secret: bytes) -> None:
        self.addr = addr
        self.shown = shown
        self.secret = secret
        self.gone: str | None = None
        #: the identity of the driver this watch belongs to (set once it exists)
        self.vouch_for: bytes | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="jray-headwatch", daemon=True)
        self._thread.start()

    def check(self) -> None:
        if self.gone is not None:
            raise ClusterError(f"the jray head at {self.shown} {self.gone}; this driver's "
                               f"cluster is gone (jray.shutdown(), then jray.init again)")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        from jray._private import transport

        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        monitors: list[zmq.Socket[bytes]] = []
        sock = transport.dealer(
            ctx, self.addr, b"s" + os.urandom(7), secret=self.secret,
            before_connect=lambda s: monitors.append(s.get_monitor_socket(
                zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED)))
        mon = monitors[0]
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(mon, zmq.POLLIN)
        connected = False
        last_answer = time.monotonic()
        next_ping = 0.0
        try:
            while not self._stop.is_set() and self.gone is None:
                now = time.monotonic()
                if now >= next_ping:
                    ping: list[P.Msg] = [(P.STATE, 0, "summary", None)]
                    if self.vouch_for is not None:  # the head ends its work when these stop
                        ping.append((P.DRIVER_ALIVE, self.vouch_for))
                    sock.send(P.pack(ping))
                    next_ping = now + PING_S
                for item, _ in poller.poll(100):
                    if item is mon:
                        event = recv_monitor_message(mon)["event"]
                        if event == zmq.EVENT_CONNECTED:
                            connected = True
                        elif event == zmq.EVENT_DISCONNECTED and connected:
                            self.gone = "closed its connection (the head process exited)"
                    else:
                        sock.recv()
                        last_answer = time.monotonic()
                if time.monotonic() - last_answer > TIMEOUT_S:
                    self.gone = f"has not answered for {TIMEOUT_S:.0f} s"
        finally:
            sock.disable_monitor()
            mon.close(0)
            sock.close(0)
            ctx.term()
