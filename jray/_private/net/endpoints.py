"""Endpoint allocators: one per address scheme, the only places addresses are built.

``IpcEndpoints`` names socket files in a session directory (private, mode 0700,
so only this user reaches them); ``TcpEndpoints`` binds ports on one interface
(port 0: the kernel picks a free one) for peers on other machines.
``parse_host_port`` reads the ``HOST:PORT`` a user types, with an error that names
what is wrong.
"""

from __future__ import annotations

import os

import zmq

DEFAULT_PORT = 6380


class IpcEndpoints:
    scheme = "ipc"

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def address(self, name: str) -> str:
        return f"ipc://{os.path.join(self.directory, name)}"

    def bind(self, sock: zmq.Socket[bytes], name: str) -> str:
        addr = self.address(name)
        sock.bind(addr)
        return addr


class TcpEndpoints:
    scheme = "tcp"

    def __init__(self, host: str) -> None:
        self.host = host

    def address(self, port: int) -> str:
        return tcp_address(self.host, port)

    def bind(self, sock: zmq.Socket[bytes], name: str = "", port: int = 0) -> str:
        """Bind ``sock`` on this host at ``port`` (0: any free port); its address."""
        if port:
            addr = self.address(port)
            sock.bind(addr)
            return addr
        bound = sock.bind_to_random_port(f"tcp://{_bracket(self.host)}")
        return self.address(bound)


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def tcp_address(host: str, port: int) -> str:
    return f"tcp://{_bracket(host)}:{port}"


def parse_host_port(text: str, what: str = "address",
                    default_port: int | None = None) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT``; ``tcp://`` allowed) as (host, port)."""
    raw = text.strip()
    body = raw[6:] if raw.startswith("tcp://") else raw
    host, sep, port_text = body.rpartition(":")
    if not sep or (host.count(":") and not host.startswith("[")):
        if default_port is None or not body:
            raise ValueError(f"{what} {text!r} is not HOST:PORT (e.g. 127.0.0.1:6380)")
        host, port_text = body, str(default_port)
    host = host.strip("[]")
    if not host:
        raise ValueError(f"{what} {text!r} has no host (e.g. 127.0.0.1:6380)")
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"{what} {text!r}: port {port_text!r} is not a number") from None
    if not 0 < port < 65536:
        raise ValueError(f"{what} {text!r}: port {port} is not in 1-65535")
    return host, port
