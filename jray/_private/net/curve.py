"""CurveZMQ for TCP: every TCP connection is encrypted and authenticated.

Both key pairs derive from the cluster secret (keyed BLAKE2b), so whoever holds
the secret can be a server or a client and no key files travel. A server socket
only completes a handshake with a client whose public key is the cluster's
client key (checked by a ZAP handler thread), so a peer without the secret gets
no connection at all; an observer of the wire sees only ciphertext. Setting
``JRAY_TCP_PLAINTEXT=1`` in every process turns encryption off (to measure what
it costs); the application handshake (``auth``) still proves the secret then.
"""

from __future__ import annotations

import hashlib
import os
import threading
from typing import Any

import zmq
from zmq.utils import z85

_lock = threading.Lock()
#: contexts that already run a ZAP handler
_authenticators: dict[int, Any] = {}


def enabled() -> bool:
    return os.environ.get("JRAY_TCP_PLAINTEXT", "") not in ("1", "true", "yes")


def keys(secret: bytes) -> tuple[bytes, bytes, bytes, bytes]:
    """(server public, server secret, client public, client secret), Z85-encoded."""
    out: list[bytes] = []
    for who in (b"jray-curve-srv", b"jray-curve-cli"):
        sk = z85.encode(hashlib.blake2b(who, key=secret, digest_size=32).digest())
        out += [zmq.curve_public(sk), sk]
    return out[0], out[1], out[2], out[3]


def make_server(ctx: zmq.Context[zmq.Socket[bytes]], sock: zmq.Socket[bytes],
                secret: bytes) -> None:
    """Before ``bind``: encrypt, and admit only clients holding the secret."""
    if not enabled():
        return
    _spk, ssk, cpk, _csk = keys(secret)
    _start_zap(ctx, cpk)
    sock.curve_server = True
    sock.curve_secretkey = ssk


def make_client(sock: zmq.Socket[bytes], secret: bytes) -> None:
    """Before ``connect``: encrypt and prove the secret to the server."""
    if not enabled():
        return
    spk, _ssk, cpk, csk = keys(secret)
    sock.curve_serverkey = spk
    sock.curve_publickey = cpk
    sock.curve_secretkey = csk


class _OnlyClusterKey:
    def __init__(self, key: bytes) -> None:
        self.key = key

    def callback(self, domain: str, key: bytes) -> bool:
        return key == self.key


def _start_zap(ctx: zmq.Context[zmq.Socket[bytes]], client_public: bytes) -> None:
    from zmq.auth.thread import ThreadAuthenticator

    with _lock:
        if id(ctx) in _authenticators:
            return
        auth = ThreadAuthenticator(ctx)
        auth.start()
        auth.configure_curve_callback(domain="*", credentials_provider=_OnlyClusterKey(
            client_public))
        _authenticators[id(ctx)] = auth


def stop_zap(ctx: zmq.Context[zmq.Socket[bytes]]) -> None:
    """Stop the ZAP thread of ``ctx`` (before ``ctx.term()``)."""
    with _lock:
        auth = _authenticators.pop(id(ctx), None)
    if auth is not None:
        auth.stop()
