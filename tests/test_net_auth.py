"""The head's handshake and role filter (``jray._private.net``): unit checks of the
gate, then a real cluster that peers without the secret or outside their role
cannot drive, and a fuzz run of random, truncated and replayed frames."""

from __future__ import annotations

import os
import pickle
import random
import time

import pytest
import zmq

import jray
from jray._private import actor_protocol as A
from jray._private import protocol as P
from jray._private.api import _Session
from jray._private.net import auth, roles
from jray.testing import eventually

SECRET = os.urandom(32)


def test_gate_accepts_a_fresh_handshake_once() -> None:
    gate = auth.Gate(SECRET)
    ident = b"d" + os.urandom(7)
    frame = auth.handshake(SECRET, roles.DRIVER, ident)
    assert len(frame) == auth.SIZE
    assert gate.check(ident, frame) == (True, "", False)
    assert gate.allowed[ident] == roles.ALLOWED[roles.DRIVER]
    assert gate.check(ident, frame)[:2] == (False, "replayed handshake")


@pytest.mark.parametrize("case", ["secret", "version", "role", "stale", "identity",
                                  "truncated", "other identity"])
def test_gate_refuses_bad_handshakes(case: str) -> None:
    gate = auth.Gate(SECRET)
    ident = b"w" + os.urandom(7)
    frame = auth.handshake(SECRET, roles.WORKER, ident, auth.FLAG_ACK)
    if case == "secret":
        frame = auth.handshake(os.urandom(32), roles.WORKER, ident, auth.FLAG_ACK)
        want = "bad secret"
    elif case == "version":
        auth_version = auth.VERSION
        try:
            auth.VERSION = auth_version + 1  # type: ignore[misc]
            frame = auth.handshake(SECRET, roles.WORKER, ident, auth.FLAG_ACK)
        finally:
            auth.VERSION = auth_version  # type: ignore[misc]
        want = "protocol version"
    elif case == "role":  # a worker claiming to be a node
        frame = auth.handshake(SECRET, roles.NODE, ident, auth.FLAG_ACK)
        want = "does not match"
    elif case == "stale":
        frame = auth.handshake(SECRET, roles.WORKER, ident, auth.FLAG_ACK,
                               now=time.time() - 2 * auth.SKEW_S)
        want = "stale"
    elif case == "identity":
        ident = b"\x00zz"
        frame = auth.handshake(SECRET, roles.WORKER, ident, auth.FLAG_ACK)
        want = "unknown identity"
    elif case == "truncated":
        frame = frame[:-1]
        want = "not a handshake"
    else:  # a captured handshake replayed under another identity
        ident = b"w" + os.urandom(7)
        want = "bad secret"
    ok, why, _ = gate.check(ident, frame)
    assert not ok and want in why
    assert ident not in gate.allowed


def test_roles_keep_privileged_ops_apart() -> None:
    assert P.SHUTDOWN in roles.ALLOWED[roles.DRIVER]
    assert P.SHUTDOWN not in roles.ALLOWED[roles.WORKER]
    assert P.WORKER_READY not in roles.ALLOWED[roles.DRIVER]
    assert P.NODE_REGISTER not in roles.ALLOWED[roles.WORKER]
    assert P.SUBMIT not in roles.ALLOWED[roles.VIEWER]
    assert P.SUBMIT not in roles.ALLOWED[roles.NODE]
    assert A.ACTOR_ALIVE in roles.ALLOWED[roles.WORKER]


def test_secret_file_must_be_private(tmp_path: object) -> None:
    path = os.path.join(str(tmp_path), "secret")
    auth.new_secret_file(path)
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert len(auth.read_secret_file(path)) == 32
    os.chmod(path, 0o644)
    with pytest.raises(auth.AuthError, match="mode 0644"):
        auth.read_secret_file(path)
    with pytest.raises(auth.AuthError, match="No such file"):
        auth.read_secret_file(path + ".missing")


def _head_log() -> str:
    cl = _Session.cluster
    assert cl is not None
    with open(os.path.join(cl.session_dir, "head.log")) as f:
        return f.read()


def _secret(info: dict[str, object]) -> bytes:
    with open(os.path.join(str(info["session_dir"]), "session.key"), "rb") as f:
        return f.read()


def _peer(ctx: zmq.Context[zmq.Socket[bytes]], addr: str, ident: bytes) -> zmq.Socket[bytes]:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.IDENTITY, ident)
    sock.connect(addr)
    return sock


@jray.remote
def _add(x: int, y: int) -> int:
    return x + y


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_peers_without_the_secret_or_the_role_cannot_drive_the_cluster() -> None:
    info = jray.init(num_cpus=1)
    addr, secret = str(info["address"]), _secret(info)
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        # no handshake at all: a pickled SHUTDOWN (would stop the cluster) is not read
        bare = _peer(ctx, addr, b"d" + os.urandom(7))
        bare.send(pickle.dumps([(P.SHUTDOWN,)]))
        # a wrong secret: told so, and its SHUTDOWN is dropped too
        wrong_id = b"d" + os.urandom(7)
        wrong = _peer(ctx, addr, wrong_id)
        wrong.send(auth.handshake(os.urandom(32), roles.DRIVER, wrong_id, auth.FLAG_ACK))
        assert wrong.poll(10_000), "the head did not answer a handshake that asked for it"
        assert wrong.recv().startswith(auth.NO + b" bad secret")
        wrong.send(pickle.dumps([(P.SHUTDOWN,)]))
        # the right secret, but a worker's role: SHUTDOWN is not a worker's op
        wid = b"w" + os.urandom(7)
        worker = _peer(ctx, addr, wid)
        worker.send(auth.handshake(secret, roles.WORKER, wid, auth.FLAG_ACK))
        assert worker.poll(10_000) and worker.recv() == auth.OK
        worker.send(pickle.dumps([(P.SHUTDOWN,)]))
        assert jray.get([_add.remote(i, 1) for i in range(10)], timeout=30) == list(
            range(1, 11))
        assert eventually(lambda: "op 8 not allowed for a worker" in _head_log(), 10)
        log = _head_log()
        assert "unauthenticated peer" in log and "bad secret" in log
        cl = _Session.cluster
        assert cl is not None and all(p.poll() is None for p in cl.procs.values())
        for s in (bare, wrong, worker):
            s.close(0)
    finally:
        ctx.term()
        jray.shutdown()


@pytest.mark.integration
@pytest.mark.timeout(180)
def test_fuzzed_frames_leave_the_head_running() -> None:
    info = jray.init(num_cpus=1)
    addr, secret = str(info["address"]), _secret(info)
    rng = random.Random(15)
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        good_id = b"d" + os.urandom(7)
        good = auth.handshake(secret, roles.DRIVER, good_id)
        batch = pickle.dumps([(P.SUBMIT, ("junk",)), (P.FREE, [b"x" * 16])])
        socks = [_peer(ctx, addr, bytes([rng.choice(b"dwnvAs")]) + os.urandom(7))
                 for _ in range(8)]
        socks.append(_peer(ctx, addr, good_id))  # replays a real handshake below
        for i in range(4000):
            kind = i % 5
            if kind == 0:
                frame = os.urandom(rng.randrange(0, 200))
            elif kind == 1:
                frame = good[: rng.randrange(0, auth.SIZE)]
            elif kind == 2:
                frame = good
            elif kind == 3:
                frame = batch[: rng.randrange(0, len(batch))]
            else:
                frame = b"\x80\x05" + os.urandom(rng.randrange(0, 64))
            sock = socks[i % len(socks)]
            if rng.random() < 0.1:
                sock.send_multipart([frame, frame])
            else:
                sock.send(frame)
        assert jray.get([_add.remote(i, 2) for i in range(20)], timeout=60) == list(
            range(2, 22))
        cl = _Session.cluster
        assert cl is not None and all(p.poll() is None for p in cl.procs.values())
        assert eventually(lambda: "replayed handshake" in _head_log(), 10)
        for s in socks:
            s.close(0)
    finally:
        ctx.term()
        jray.shutdown()
