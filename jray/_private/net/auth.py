"""The cluster secret and the handshake that proves it.

Every connection to the head starts with one *handshake frame*, a fixed binary
layout that is checked before anything else (never unpickled)::

    magic "JRHS" | version u16 | role u8 | flags u8 | time ns u64 | nonce 16 B | mac 32 B
    mac = HMAC-SHA256(secret, everything before it | the connection's identity)

The head (``Gate``) accepts it when the version is the head's, the role is the
one the identity's prefix implies, the time is within ``SKEW_S`` of the head's
clock, the nonce was not seen before (a replayed handshake is refused) and the
MAC matches. From then on frames from that identity are batches of messages;
frames from any identity that has not shaken hands are dropped and counted. A
handshake with ``FLAG_ACK`` is answered with ``OK`` or ``NO <reason>`` (a
joining driver reports a wrong secret or version at once instead of waiting).

The secret is 32 random bytes in a file of mode 0600 owned by the user (the
local cluster's ``session.key``, or the file ``jray start`` writes); the same key
authenticates shared-memory segment headers (``shm``).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
import struct
import time

from jray._private import shm
from jray._private.net import roles

VERSION = 1
MAGIC = b"JRHS"
FLAG_ACK = 1
OK = b"JROK"
NO = b"JRNO"
_HEAD = struct.Struct("<4sHBBQ16s")
SIZE = _HEAD.size + 32
#: how far a handshake's clock may be from the head's
SKEW_S = 300.0
SECRET_BYTES = 32

_secret: bytes | None = None


class AuthError(Exception):
    """A secret file that is missing, not private, or of the wrong size."""


# --- the secret ------------------------------------------------------------------------
def new_secret_file(path: str) -> None:
    """Write a fresh secret to ``path`` (created exclusively, mode 0600)."""
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, mode=0o700, exist_ok=True)
    fd = shm.create_private(path)
    try:
        os.write(fd, os.urandom(SECRET_BYTES))
    finally:
        os.close(fd)


def read_secret_file(path: str) -> bytes:
    """The secret in ``path``; ``AuthError`` naming the file unless it is a private
    regular file of this user holding exactly 32 bytes."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        raise AuthError(f"cluster secret file {path}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise AuthError(f"cluster secret file {path} is not a regular file")
        if st.st_uid != os.geteuid():
            raise AuthError(f"cluster secret file {path} is owned by uid {st.st_uid}, "
                            f"not by this user (uid {os.geteuid()})")
        if st.st_mode & 0o077:
            raise AuthError(f"cluster secret file {path} has mode "
                            f"{stat.S_IMODE(st.st_mode):04o}; it must be 0600 (chmod 600)")
        key = os.read(fd, SECRET_BYTES + 1)
    finally:
        os.close(fd)
    if len(key) != SECRET_BYTES:
        raise AuthError(f"cluster secret file {path} holds {len(key)} bytes, "
                        f"not {SECRET_BYTES}")
    return key


def use_secret(secret: bytes | None) -> None:
    """The secret this process's connections prove (None: the session key again)."""
    global _secret
    _secret = secret


def current_secret() -> bytes | None:
    """The secret set by ``use_secret``, else the loaded session key, else None."""
    if _secret is not None:
        return _secret
    return shm.session_key() or None


# --- the handshake ---------------------------------------------------------------------
def handshake(secret: bytes, role: int, ident: bytes, flags: int = 0,
              now: float | None = None, nonce: bytes | None = None) -> bytes:
    head = _HEAD.pack(MAGIC, VERSION, role, flags,
                      int((time.time() if now is None else now) * 1e9),
                      os.urandom(16) if nonce is None else nonce)
    return head + hmac.new(secret, head + ident, hashlib.sha256).digest()


class Gate:
    """The head's record of which identities shook hands, and as what."""

    def __init__(self, secret: bytes) -> None:
        self.secret = secret
        #: identity -> the ops its role may send
        self.allowed: dict[bytes, frozenset[int]] = {}
        self.roles: dict[bytes, int] = {}
        self._nonces: dict[bytes, float] = {}
        self.dropped: dict[str, int] = {}

    def count(self, why: str) -> int:
        n = self.dropped.get(why, 0) + 1
        self.dropped[why] = n
        return n

    def check(self, ident: bytes, frame: bytes) -> tuple[bool, str, bool]:
        """Check a handshake frame: (accepted, reason if not, whether to answer)."""
        if len(frame) != SIZE or frame[:4] != MAGIC:
            return False, "not a handshake", False
        magic, version, role, flags, t_ns, nonce = _HEAD.unpack_from(frame)
        want = hmac.new(self.secret, frame[:_HEAD.size] + ident, hashlib.sha256).digest()
        if not hmac.compare_digest(want, frame[_HEAD.size:]):
            return False, "bad secret", bool(flags & FLAG_ACK)
        ack = bool(flags & FLAG_ACK)
        if version != VERSION:
            return False, f"protocol version {version}, head speaks {VERSION}", ack
        try:
            expected = roles.for_identity(ident)
        except ValueError:
            return False, "unknown identity kind", ack
        if role != expected:
            return False, f"role {role} does not match its identity", ack
        now = time.time()
        if abs(now - t_ns / 1e9) > SKEW_S:
            return False, "clock skew or stale handshake", ack
        if nonce in self._nonces:
            return False, "replayed handshake", ack
        if len(self._nonces) > 100_000:
            self._nonces = {n: t for n, t in self._nonces.items() if t > now}
        self._nonces[nonce] = now + 2 * SKEW_S
        old = self.roles.get(ident)
        if old is not None and old != role:
            return False, "identity already has another role", ack
        self.roles[ident] = role
        self.allowed[ident] = roles.ALLOWED[role]
        return True, "", ack
