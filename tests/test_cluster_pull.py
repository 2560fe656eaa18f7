"""The object server and puller of ``net/objects.py`` on real sockets: a segment
copied in many chunks comes out byte for byte (and passes its MAC), requests
are checked before anything is read, a server answers only for its own files,
and a peer without the secret gets nothing. Every segment is removed."""

from __future__ import annotations

import os
import pickle
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import zmq

from jray._private import shm
from jray._private.net import curve, objects

SECRET = os.urandom(32)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[objects.ObjectServer]:
    session = tmp_path / "session"
    session.mkdir(mode=0o700)
    shm.new_session_key(str(session), SECRET)
    saved = shm._key, shm._key_dir
    shm.use_session(str(session))
    spill = tmp_path / "spill"
    spill.mkdir(mode=0o700)
    prefix = f"jray-pulltest{os.getpid()}-"
    srv = objects.ObjectServer("127.0.0.1", SECRET, prefix, str(spill))
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()
        shm.cleanup(prefix)
        shm._key, shm._key_dir = saved
    assert not srv.is_alive()


def _segment(srv: objects.ObjectServer, arr: np.ndarray) -> tuple[str, int]:
    name = srv.prefix + "src"
    bufs: list[memoryview] = []
    data = pickle.dumps(arr, protocol=5, buffer_callback=lambda b: bufs.append(b.raw()))
    return name, shm.write_segment(name, data, bufs)


def test_a_segment_is_copied_in_chunks_and_reads_back(
        server: objects.ObjectServer, monkeypatch: pytest.MonkeyPatch) -> None:
    arr = np.random.default_rng(1).integers(0, 255, (3 << 20) + 12345, dtype=np.uint8)
    name, size = _segment(server, arr)
    monkeypatch.setenv("JRAY_PULL_CHUNK", str(64 << 10))  # ~50 chunks on 3 streams
    monkeypatch.setenv("JRAY_PULL_STREAMS", "3")
    dest = server.prefix + "xcopy"
    objects.pull(server.address, SECRET, objects.KIND_SHM, name, 0, size, dest)
    st = os.stat(shm.segment_path(dest))
    assert st.st_size == size and st.st_mode & 0o777 == 0o600
    data, bufs = shm.read_segment(dest)  # its MAC checks out under the session key
    assert np.array_equal(pickle.loads(data, buffers=bufs), arr)
    assert server.served >= size // (64 << 10)


def test_a_spilled_range_is_copied(server: objects.ObjectServer) -> None:
    arr = np.arange(1 << 18, dtype=np.int64)
    name, size = _segment(server, arr)
    spill = os.path.join(server.spill_dir, "spill-00001.bin")
    with open(spill, "wb") as out, open(shm.segment_path(name), "rb") as src:
        out.write(b"\0" * 4096 + src.read())
    os.chmod(spill, 0o600)
    dest = server.prefix + "xspilled"
    objects.pull(server.address, SECRET, objects.KIND_SPILL, spill, 4096, size, dest)
    data, bufs = shm.read_segment(dest)
    assert np.array_equal(pickle.loads(data, buffers=bufs), arr)


@pytest.mark.parametrize(("kind", "name", "why"), [
    (objects.KIND_SHM, "jray-someone-else-src", "is not this node's"),
    (objects.KIND_SHM, "PREFIX../../etc/passwd", "is not this node's"),
    (objects.KIND_SPILL, "/etc/passwd", "is not one of this node's spill files"),
    (objects.KIND_SHM, "PREFIXmissing", "No such file"),
])
def test_the_server_answers_only_for_its_own_files(
        server: objects.ObjectServer, kind: int, name: str, why: str) -> None:
    dest = server.prefix + "xrefused"
    with pytest.raises(objects.PullError, match=why):
        objects.pull(server.address, SECRET, kind, name.replace("PREFIX", server.prefix),
                     0, 4096, dest)
    assert not os.path.exists(shm.segment_path(dest))


def test_requests_are_checked_before_anything_is_read() -> None:
    good = objects.request(SECRET, objects.KIND_SHM, "seg", 0, 100)
    assert objects.parse_request(SECRET, good) == (objects.KIND_SHM, "seg", 0, 100)
    flipped = bytearray(good)
    flipped[6] ^= 1
    bad = [bytes(flipped), good[:-1], good[:10], b"", os.urandom(len(good)),
           objects.request(os.urandom(32), objects.KIND_SHM, "seg", 0, 100),
           objects.request(SECRET, 7, "seg", 0, 100),
           objects.request(SECRET, objects.KIND_SHM, "seg", 0, 0),
           objects.request(SECRET, objects.KIND_SHM, "seg", 0, (64 << 20) + 1)]
    assert [objects.parse_request(SECRET, f) for f in bad] == [None] * len(bad)


def test_bad_frames_are_dropped_and_the_server_serves_on(
        server: objects.ObjectServer) -> None:
    name, size = _segment(server, np.ones(1 << 17))
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    curve.make_client(sock, SECRET)  # a peer with the keys, but forged requests
    sock.connect(server.address)
    rng = np.random.default_rng(2)
    good = objects.request(SECRET, objects.KIND_SHM, name, 0, 64)
    for i in range(300):
        frame = rng.bytes(int(rng.integers(0, 200))) if i % 3 else good[:-1] + b"\0"
        sock.send(frame)
    sock.send_multipart([b"two", b"parts"])
    deadline = time.monotonic() + 10
    while server.dropped < 301 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.dropped == 301 and server.served == 0
    sock.close(0)
    ctx.term()
    dest = server.prefix + "xafter"
    objects.pull(server.address, SECRET, objects.KIND_SHM, name, 0, size, dest)
    assert os.path.getsize(shm.segment_path(dest)) == size


def test_a_peer_without_the_secret_gets_nothing(
        server: objects.ObjectServer, monkeypatch: pytest.MonkeyPatch) -> None:
    name, size = _segment(server, np.ones(1 << 17))
    monkeypatch.setattr(objects, "STALL_S", 1.5)
    dest = server.prefix + "xthief"
    with pytest.raises(objects.PullError, match="no data"):
        objects.pull(server.address, os.urandom(32), objects.KIND_SHM, name, 0, size, dest)
    assert not os.path.exists(shm.segment_path(dest)) and server.served == 0


def test_random_tcp_bytes_leave_the_server_serving(server: objects.ObjectServer) -> None:
    import socket

    name, size = _segment(server, np.ones(1 << 17))
    host, port = server.address[len("tcp://"):].rsplit(":", 1)
    rng = np.random.default_rng(3)
    greeting = b"\xff" + b"\0" * 8 + b"\x7f\x03\x00CURVE" + b"\0" * 15  # a ZMTP 3.0 start
    for i in range(200):
        with socket.create_connection((host, int(port)), timeout=5) as s:
            junk = greeting[:int(rng.integers(1, len(greeting)))] if i % 2 else \
                rng.bytes(int(rng.integers(1, 4096)))
            try:
                s.sendall(junk)
            except OSError:  # the server may hang up first
                pass
    assert server.is_alive() and server.served == 0
    dest = server.prefix + "xafterjunk"
    objects.pull(server.address, SECRET, objects.KIND_SHM, name, 0, size, dest)
    assert os.path.getsize(shm.segment_path(dest)) == size


def test_without_encryption_requests_still_prove_the_secret(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JRAY_TCP_PLAINTEXT", "1")
    monkeypatch.setattr(objects, "STALL_S", 1.5)
    srv = objects.ObjectServer("127.0.0.1", SECRET, f"jray-pullplain{os.getpid()}-",
                               str(tmp_path))
    srv.start()
    try:
        name = srv.prefix + "src"
        size = shm.write_segment(name, b"x" * 200_000, [])
        with pytest.raises(objects.PullError, match="no data"):
            objects.pull(srv.address, os.urandom(32), objects.KIND_SHM, name, 0, size,
                         srv.prefix + "xthief")
        assert srv.dropped >= 1 and srv.served == 0
        objects.pull(srv.address, SECRET, objects.KIND_SHM, name, 0, size, srv.prefix + "xok")
        with open(shm.segment_path(srv.prefix + "xok"), "rb") as a, \
                open(shm.segment_path(name), "rb") as b:
            assert a.read() == b.read()
    finally:
        srv.stop()
        shm.cleanup(srv.prefix)
