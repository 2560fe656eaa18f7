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
it if its loop does not get there within 2 s. A message that is not
``[identity, one frame]`` (any local process of this user can reach the socket)
is dropped whole and counted (``malformed``), never half-read.
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
from jray._private.scheduler import Scheduler

MAX_DRAIN = 2000
NOBLOCK = int(zmq.NOBLOCK)
SNDMORE = int(zmq.SNDMORE)
log = logging.getLogger("jray.head")


def serve(address: str, parent_pid: int | None, session: str) -> None:
    ctx = transport.new_context()
    sock = transport.router(ctx, address)
    sched = Scheduler(session)
    ActorTable(sched)
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
    malformed = 0
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
                    malformed += 1
                    if malformed <= 10 or malformed % 1000 == 0:
                        log.warning("dropped a malformed message (%d parts, not 2) from %r; "
                                    "%d malformed so far", len(parts), parts[0][:32], malformed)
                    continue
                ident, frame = parts
                try:
                    handle_many(ident, unpack(frame))
                except Exception:  # one bad message must not take the cluster down
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
            if parent_pid is not None and os.getppid() != parent_pid:
                log.warning("parent %d died; head exits", parent_pid)
                break
    sock.close(0)
    ctx.term()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="jray-head")
    ap.add_argument("--address", required=True)
    ap.add_argument("--parent-pid", type=int, default=None)
    ap.add_argument("--session", default="")
    ap.add_argument("--log", default=None)
    ns = ap.parse_args(argv)
    logging.basicConfig(
        filename=ns.log, level=logging.INFO, format="%(asctime)s head %(levelname)s %(message)s"
    )
    profile_to = os.environ.get("JRAY_PROFILE_HEAD")
    if profile_to:  # developer aid: JRAY_PROFILE_HEAD=/path/to/file.prof
        import cProfile

        cProfile.runctx("serve(ns.address, ns.parent_pid, ns.session)", globals(), locals(),
                        profile_to)
    else:
        serve(ns.address, ns.parent_pid, ns.session)
    sys.exit(0)


if __name__ == "__main__":
    main()
