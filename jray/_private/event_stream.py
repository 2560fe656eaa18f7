"""A subscription to the head's event stream (see ``event_feed``).

::

    head ──EVENTS_SNAPSHOT / EVENTS_DELTA──▶ Subscription socket (DEALER, its own identity)
    consumer ──take()──▶ items;  EVENTS_ACK ──▶ head  (credit for one more delta)

The subscription has its own socket to the head, so reading it never waits
for the driver's client (which may sit in a long ``get`` on another thread)
and the driver never reads the views' traffic. ``take`` never blocks. The
ack goes out only when the consumer has taken a delta, so a consumer that
stops taking stops the flow instead of filling memory. Use it from one
thread (the notebook kernel's event loop).
"""

from __future__ import annotations

import os
from typing import Any

import zmq

from jray._private import protocol as P
from jray._private import transport

#: one item: ("snapshot", seq, tables) or ("delta", events, store summary)
Item = tuple[Any, ...]
NOBLOCK = int(zmq.NOBLOCK)


class Subscription:
    """The event stream of the cluster whose head listens at ``head_addr``."""

    def __init__(self, head_addr: str, max_batch: int = 50_000) -> None:
        if not isinstance(max_batch, int) or max_batch < 1:
            raise ValueError(f"Subscription: max_batch must be a positive int, got {max_batch!r}")
        self.ctx = transport.new_context()
        self.sock = transport.dealer(self.ctx, head_addr, b"v" + os.urandom(7))
        self.closed = False
        self.items_taken = 0
        transport.send_batch(self.sock, [(P.EVENTS_SUBSCRIBE, max_batch)])

    def take(self) -> list[Item]:
        """What arrived since the last call (oldest first); acks it. Never blocks."""
        if self.closed:
            return []
        items: list[Item] = []
        while True:
            try:
                frame = self.sock.recv(NOBLOCK)
            except zmq.Again:
                break
            for msg in P.unpack(frame):
                if msg[0] == P.EVENTS_SNAPSHOT:
                    items.append(("snapshot", msg[1], msg[2]))
                elif msg[0] == P.EVENTS_DELTA:
                    items.append(("delta", msg[1], msg[2]))
        if items:
            self.items_taken += len(items)
            transport.send_batch(self.sock, [(P.EVENTS_ACK, 0)])
        return items

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:  # never waits: the head may be gone (a re-init after shutdown)
            self.sock.send(P.pack([(P.EVENTS_UNSUBSCRIBE,)]), NOBLOCK)
        except zmq.ZMQError:
            pass
        finally:
            self.sock.close(0)
            self.ctx.term()
