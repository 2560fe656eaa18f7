"""Task output in the driver: what workers print reaches the process that submitted it.

Each driver has a PULL socket (``CoreClient.output_addr``) that workers push
TASK_OUTPUT messages to; ``output_loop`` reads it on a thread of its own and
hands each message to ``output_handler`` (printing with a ``(name pid=N)``
prefix, like Ray; the Jupyter layer installs its own to route output to cells).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable

import zmq

from jray._private import protocol as P
from jray._private import transport

#: The longest a worker's first output waits for its connection to the driver.
CONNECT_WAIT_S = 2.0


def output_loop(sock: zmq.Socket[bytes], stop: threading.Event) -> None:
    """Deliver TASK_OUTPUT messages from ``sock`` until ``stop`` is set; closes ``sock``."""
    try:
        while not stop.is_set():
            if not sock.poll(100):
                continue
            while True:
                try:
                    frame = sock.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                for msg in P.unpack(frame):
                    try:
                        output_handler(msg)
                    except Exception:  # a broken handler must not stop the thread
                        pass
    finally:
        sock.close(0)


def connect_output(ctx: zmq.Context[zmq.Socket[bytes]], addr: str,
                   timeout_s: float = CONNECT_WAIT_S) -> zmq.Socket[bytes]:
    """A PUSH socket to the output socket at ``addr``, returned once its connection is
    up (ZeroMQ's handshake done), or after ``timeout_s`` (a driver that is gone).

    A first message sent on a connection still being made can reach the driver after
    messages that went later on a connection already up (another worker's: the output
    of a task this one started), so a worker's first output waits for its connection."""
    monitor: list[zmq.Socket[bytes]] = []

    def watch(sock: zmq.Socket[bytes]) -> None:
        monitor.append(sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED))

    sock = transport.push(ctx, addr, before_connect=watch)
    mon = monitor[0]
    try:
        if mon.poll(int(timeout_s * 1000)):
            mon.recv_multipart()
    finally:
        sock.disable_monitor()
        mon.close(0)
    return sock


def print_output(msg: P.Msg) -> None:
    """Default output handler: each line of a task's output, prefixed like Ray's."""
    _, _tid, name, pid, stream, text = msg
    target = sys.stderr if stream == "stderr" else sys.stdout
    prefix = f"({name} pid={pid}) "
    lines = text.splitlines()
    target.write("".join(prefix + line + "\n" for line in lines))
    target.flush()


#: The function that shows task output in the driver; the Jupyter layer replaces it.
output_handler: Callable[[P.Msg], None] = print_output


def set_output_handler(handler: Callable[[P.Msg], None] | None) -> None:
    """Install ``handler(msg)`` for TASK_OUTPUT messages (None restores printing).

    It runs on the driver's output thread, not the main thread.
    """
    global output_handler
    output_handler = handler if handler is not None else print_output
