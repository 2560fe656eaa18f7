"""Objects between machines: each node of a TCP cluster serves the bytes of its
segments and spill files, and pulls the objects its readers need from other nodes.

::

    reader on node B ──LOST(oid, loc on A, B)──▶ head ──PULL_OBJECT──▶ node B daemon
                                                                         │ chunks, several
    node A's ObjectServer (ROUTER, CurveZMQ) ◀──── DEALER × streams ─────┘ in flight
                                                  node B writes its own segment, then
    reader ◀──OBJECT_READY(oid, B's copy)── head ◀──PULLED(oid, B's loc)──┘

The head asks each node for an object at most once at a time (every reader on
that node waits for the same pull) and remembers the copy (see ``pulls``). The
data goes from node to node, never through the head. A copy is a segment like any
other: same layout and MAC, so a reader checks it as it checks a local one.

A request is a fixed binary frame, never unpickled, MAC'd with the cluster
secret (keyed BLAKE2b), so even with ``JRAY_TCP_PLAINTEXT=1`` only holders of
the secret can read objects; a server answers only for its own node's segments
(names under its prefix) and spill files (in its spill directory).
"""

from __future__ import annotations

import ctypes
import hashlib
import hmac
import logging
import mmap
import os
import struct
import threading
import time

import zmq

from jray._private import shm
from jray._private.net import curve
from jray._private.net.endpoints import TcpEndpoints

log = logging.getLogger("jray.objects")

KIND_SHM = 0
KIND_SPILL = 1
_REQ = struct.Struct("<4sBQI")
_MAGIC = b"JROQ"
_MAC = 16
_REPLY = struct.Struct("<QB")
#: bytes per request and requests in flight per stream (``JRAY_PULL_CHUNK``,
#: ``JRAY_PULL_WINDOW``), streams (connections, each on its own I/O thread, so
#: encryption runs on several cores: ``JRAY_PULL_STREAMS``)
CHUNK = 1 << 20
WINDOW = 4
STREAMS = 4
#: a pull that gets no chunk for this long fails
STALL_S = 10.0


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    try:
        return max(1, int(raw)) if raw else default
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a whole number") from None


def tune_malloc() -> None:
    """Keep chunk-sized buffers in glibc's heap: above its default 128 KiB threshold
    every ZeroMQ message of a chunk is a fresh ``mmap`` whose pages fault in one by
    one, and that costs as much CPU as the copies themselves (Linux, glibc only)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 8 << 20)  # M_MMAP_THRESHOLD: chunks below 8 MiB from the heap
        libc.mallopt(-1, 128 << 20)  # M_TRIM_THRESHOLD: keep up to 128 MiB free in it
    except (OSError, AttributeError):
        pass


def _io_threads(streams: int) -> int:
    return max(1, min(streams, os.cpu_count() or 1, 4))


def store_domain() -> str:
    """Who shares this process's ``/dev/shm``: the kernel's boot id and the device of
    the directory (a container or a private mount has its own tmpfs)."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
    except OSError:
        boot = "?"
    return f"{boot}/{os.stat(shm.SHM_DIR).st_dev}"


def _mac(secret: bytes, body: bytes) -> bytes:
    return hashlib.blake2b(body, key=secret, digest_size=_MAC).digest()


def request(secret: bytes, kind: int, name: str, offset: int, length: int) -> bytes:
    body = _REQ.pack(_MAGIC, kind, offset, length) + name.encode()
    return body + _mac(secret, body)


def parse_request(secret: bytes, frame: bytes) -> tuple[int, str, int, int] | None:
    """(kind, name, offset, length) of a well-formed request with a good MAC, else None."""
    if len(frame) < _REQ.size + _MAC + 1 or frame[:4] != _MAGIC:
        return None
    body, mac = frame[:-_MAC], frame[-_MAC:]
    if not hmac.compare_digest(mac, _mac(secret, body)):
        return None
    _, kind, offset, length = _REQ.unpack_from(body)
    try:
        name = body[_REQ.size:].decode()
    except UnicodeDecodeError:
        return None
    if kind not in (KIND_SHM, KIND_SPILL) or not 0 < length <= 64 << 20:
        return None
    return kind, name, offset, length


class ObjectServer(threading.Thread):
    """Serves byte ranges of this node's segments and spill files to other nodes."""

    def __init__(self, host: str, secret: bytes, shm_prefix: str, spill_dir: str) -> None:
        super().__init__(name="jray-object-server", daemon=True)
        tune_malloc()
        # its own context: a connection's encryption runs on one I/O thread, so
        # several I/O threads serve a pull's streams on several cores
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context(io_threads=_io_threads(STREAMS))
        self.ctx = ctx
        self.secret = secret
        self.prefix = shm_prefix
        self.spill_dir = os.path.abspath(spill_dir)
        self.sock = ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SNDHWM, 0)
        self.sock.setsockopt(zmq.RCVHWM, 0)
        curve.make_server(ctx, self.sock, secret)
        self.address = TcpEndpoints(host).bind(self.sock)
        self.stopping = threading.Event()
        self.dropped = 0
        self.served = 0
        #: (kind, name) -> a read-only mapping of that file
        self._maps: dict[tuple[int, str], memoryview] = {}

    def _open(self, kind: int, name: str) -> memoryview:
        """A read-only mapping of the segment or spill file ``name`` (cached)."""
        hit = self._maps.get((kind, name))
        if hit is not None:
            return hit
        if kind == KIND_SHM:
            if not name.startswith(self.prefix) or "/" in name:
                raise PermissionError(f"segment {name} is not this node's")
            path = shm.segment_path(name)
        else:
            path = os.path.abspath(name)
            if os.path.dirname(path) != self.spill_dir:
                raise PermissionError(f"{name} is not one of this node's spill files")
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | os.O_CLOEXEC)
        try:
            st = shm.check_private(fd, path)
            m = mmap.mmap(fd, st.st_size, prot=mmap.PROT_READ)
        finally:
            os.close(fd)
        if len(self._maps) >= 16:
            for key in list(self._maps)[:8]:
                self._close(*key)
        view = self._maps[(kind, name)] = memoryview(m)
        return view

    def _close(self, kind: int, name: str) -> None:
        self._maps.pop((kind, name), None)  # (the mapping goes with its last view)

    def serve_one(self, ident: bytes, frame: bytes) -> None:
        req = parse_request(self.secret, frame)
        if req is None:
            self.dropped += 1
            return
        kind, name, offset, length = req
        try:
            view = self._open(kind, name)
            if offset + length > len(view):
                raise OSError(f"{name} holds {len(view)} bytes, not {offset + length}")
        except (OSError, ValueError, shm.Untrusted) as exc:
            self._close(kind, name)
            self.sock.send_multipart([ident, _REPLY.pack(offset, 1), str(exc).encode()])
            return
        self.served += 1
        # zero-copy: ZeroMQ reads (or encrypts) straight from the mapping, which stays
        # valid while it sends even if the segment is unlinked meanwhile
        self.sock.send_multipart([ident, _REPLY.pack(offset, 0),
                                  view[offset:offset + length]], copy=False)

    def run(self) -> None:
        sock = self.sock
        while not self.stopping.is_set():
            if not sock.poll(200):
                continue
            while True:
                try:
                    parts = sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                if len(parts) == 2:
                    self.serve_one(parts[0], parts[1])
                else:
                    self.dropped += 1
        sock.close(0)
        self._maps.clear()

    def stop(self) -> None:
        self.stopping.set()
        self.join(5.0)
        if not self.is_alive():
            curve.stop_zap(self.ctx)
            self.ctx.term()


def _write_all(fd: int, view: memoryview, at: int) -> None:
    done = 0
    while done < view.nbytes:
        done += os.pwrite(fd, view[done:], at + done)


def source_range(loc: tuple[object, ...]) -> tuple[int, str, int, int]:
    """(kind, name, offset, size) to ask an object server for, from a location."""
    from jray._private import protocol as P

    if loc[0] == P.LOC_SPILLED:
        return KIND_SPILL, str(loc[1]), int(loc[2]), int(loc[3])  # type: ignore[call-overload]
    return KIND_SHM, str(loc[1]), 0, int(loc[2])  # type: ignore[call-overload]


class PullError(Exception):
    """A pull failed (the source refused, went silent, or the store write failed)."""


def pull(address: str, secret: bytes, kind: int, name: str, offset: int, size: int,
         dest: str) -> None:
    """Copy ``size`` bytes at ``offset`` of the source's segment or spill file into a
    new private segment ``dest`` of this machine; ``PullError`` saying why if not."""
    tune_malloc()
    chunk = _env_int("JRAY_PULL_CHUNK", CHUNK)
    window = _env_int("JRAY_PULL_WINDOW", WINDOW)
    streams = min(_env_int("JRAY_PULL_STREAMS", STREAMS), max(1, -(-size // chunk)))
    path = shm.segment_path(dest)
    shm.unlink(dest)  # a stale copy of this object (only pulls write these names)
    fd = shm.create_private(path)
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context(io_threads=_io_threads(streams))
    socks: list[zmq.Socket[bytes]] = []
    ok = False
    try:
        os.ftruncate(fd, size)
        for _ in range(streams):
            s = ctx.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.RCVHWM, 0)
            curve.make_client(s, secret)
            s.connect(address)
            socks.append(s)
        todo = list(range(0, size, chunk))[::-1]
        inflight = dict.fromkeys(socks, 0)
        left = size
        poller = zmq.Poller()
        for s in socks:
            poller.register(s, zmq.POLLIN)
        last = time.monotonic()
        while left > 0:
            for s in socks:
                while todo and inflight[s] < window:
                    at = todo.pop()
                    s.send(request(secret, kind, name, offset + at, min(chunk, size - at)))
                    inflight[s] += 1
            events = poller.poll(1000)
            if not events and time.monotonic() - last > STALL_S:
                raise PullError(f"no data from {address} for {STALL_S:.0f} s")
            for s, _ in events:
                while True:
                    try:
                        head, data = s.recv_multipart(zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        break
                    at, status = _REPLY.unpack(head.bytes)
                    if status:
                        raise PullError(f"{address} refused: {data.bytes.decode(errors='replace')}")
                    at -= offset
                    n = len(data.buffer)
                    if at < 0 or at + n > size:
                        raise PullError(f"{address} sent bytes outside the object")
                    _write_all(fd, data.buffer, at)
                    left -= n
                    inflight[s] -= 1
                    last = time.monotonic()
        ok = True
    except OSError as exc:
        raise PullError(f"writing {path} failed ({exc})") from None
    finally:
        os.close(fd)
        for s in socks:
            s.close(0)
        ctx.term()
        if not ok:
            shm.unlink(dest)
