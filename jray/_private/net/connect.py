"""``jray.init(address=...)``: a driver joins a running cluster over TCP.

The driver needs a node on its own machine (the one ``jray start`` started
there: it finds its record by the head's address, or any head's for
``"auto"``): its large objects go into that node's shared memory. It proves the
secret from ``_secret_file=``, ``$JRAY_SECRET_FILE`` or the record, checks the
head's answer before anything else (a wrong secret or a head that is not there
is an ``InitError`` naming the address at once), and keeps a ``HeadWatch``.
Its own sockets live in a private session directory of its own; leaving
(``shutdown`` or exit) never stops the cluster.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from jray._private import shm
from jray._private.net import auth, endpoints, launch, probe
from jray._private.net.headwatch import HeadWatch
from jray.exceptions import InitError

HANDSHAKE_WAIT_S = 10.0


@dataclass
class Connection:
    """What a connected driver holds besides its core client."""

    address: str
    head_addr: str
    session_dir: str
    node_id: bytes
    shm_prefix: str
    watch: HeadWatch
    #: whether ``connect`` set ``JRAY_NODE_IP`` (taken back on close)
    set_node_ip: bool = False
    #: called on close (nodes this driver started over SSH)
    on_close: list[Callable[[], None]] = field(default_factory=list)

    def close(self) -> None:
        for fn in self.on_close:
            fn()
        self.watch.close()
        if self.set_node_ip:
            os.environ.pop("JRAY_NODE_IP", None)
        shutil.rmtree(self.session_dir, ignore_errors=True)


def connect(address: str, secret_file: str | None) -> tuple[Connection, dict[str, Any]]:
    what = f"jray.init(address={address!r})"
    rec = launch.find(address)
    if address == "auto":
        if rec is None:
            raise InitError(f"{what}: no cluster was started on this machine (jray start "
                            f"--head), and no address was given")
        address = rec.head_address
    try:
        host, port = endpoints.parse_host_port(address, f"{what}: address")
    except ValueError as exc:
        raise InitError(str(exc)) from None
    path = secret_file or os.environ.get("JRAY_SECRET_FILE") or (
        rec.secret_file if rec is not None else None)
    if not path:
        raise InitError(f"{what}: no cluster secret: pass _secret_file= or set "
                        f"JRAY_SECRET_FILE to the secret file jray start printed")
    try:
        secret = auth.read_secret_file(path)
    except auth.AuthError as exc:
        raise InitError(f"{what}: {exc}") from None
    head_addr = endpoints.tcp_address(host, port)
    why = probe.handshake(head_addr, secret, HANDSHAKE_WAIT_S)
    if why:
        raise InitError(f"{what}: the head at {address} {why}")
    if rec is None:
        raise InitError(f"{what}: no jray node runs on this machine for that cluster; "
                        f"start one first: jray start --address {address} --secret-file "
                        f"{path}")
    session_dir = tempfile.mkdtemp(prefix="jray-driver-")
    set_node_ip = not os.environ.get("JRAY_NODE_IP")
    try:
        shm.new_session_key(session_dir, secret)
        if set_node_ip:
            os.environ["JRAY_NODE_IP"] = launch.local_ip_for(host, port)
    except BaseException:
        shutil.rmtree(session_dir, ignore_errors=True)
        raise
    conn = Connection(address, head_addr, session_dir, bytes.fromhex(rec.node_id),
                      rec.shm_prefix, HeadWatch(head_addr, address, secret), set_node_ip)
    info = {"address": address, "session_dir": session_dir, "node_id": rec.node_id,
            "secret_file": os.path.abspath(path), "connected": True}
    return conn, info
