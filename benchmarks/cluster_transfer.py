"""Object transfer between nodes: ``python -m benchmarks.cluster_transfer [--json OUT]``.

- ``pull_100MiB_{encrypted,plaintext}_GB_per_s``: the path a node takes to copy an
  object from another machine's node (``jray._private.net.objects``): a node's
  object server in its own process holds a 100 MiB segment; this process pulls it
  into a new segment of its own over TCP loopback (chunks in flight on several
  streams), CurveZMQ on, then off (``JRAY_TCP_PLAINTEXT=1``); the median of
  ``--reps`` pulls, every pull's rate beside it, and the CPU seconds both
  processes spent per GB (``pull_*_cpu_s_per_GB``: on a machine with ``n`` free
  cores the rate cannot exceed ``n`` / that);
- ``libsodium_{encrypt,decrypt}_GB_per_s_one_core``: XSalsa20-Poly1305 (what a
  CurveZMQ connection runs on each message, ``crypto_box_*_afternm``) over 1 MiB
  buffers on one thread, calling pyzmq's own libsodium: the ceiling of one
  encrypted stream, since each connection encrypts on one ZeroMQ I/O thread and
  decrypts on one at the other end.
"""

from __future__ import annotations

import argparse
import ctypes
import glob
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

SIZE = 100 << 20


def _serve(secret_hex: str, prefix: str) -> None:
    """The source node's side: a segment and an object server, until stdin closes."""
    from jray._private import shm
    from jray._private.net import objects

    name = prefix + "src"
    fd = shm.create_private(shm.segment_path(name))
    try:
        block = os.urandom(1 << 20)
        for _ in range(SIZE >> 20):
            os.write(fd, block)
    finally:
        os.close(fd)
    srv = objects.ObjectServer("127.0.0.1", bytes.fromhex(secret_hex), prefix,
                                "/nonexistent")
    srv.start()
    try:
        print(srv.address, flush=True)
        sys.stdin.read()
    finally:
        srv.stop()
        shm.unlink(name)


def _cpu_s(pid: int | None) -> float:
    """User + system CPU seconds of process ``pid`` (None: this one), all threads."""
    if pid is None:
        t = os.times()
        return t.user + t.system
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _sodium() -> tuple[float, float]:
    import zmq

    libs = glob.glob(os.path.join(os.path.dirname(zmq.__file__), "..", "pyzmq.libs",
                                  "libsodium*"))
    lib = ctypes.CDLL(libs[0] if libs else "libsodium.so.23")
    lib.sodium_init()
    pk, sk, key = (ctypes.create_string_buffer(32) for _ in range(3))
    lib.crypto_box_keypair(pk, sk)
    lib.crypto_box_beforenm(key, pk, sk)
    n = 1 << 20
    msg = ctypes.create_string_buffer(os.urandom(n), n)
    box = ctypes.create_string_buffer(n + 16)
    nonce = ctypes.create_string_buffer(24)
    rates: list[list[float]] = [[], []]
    for _ in range(5):
        for i, call, args in ((0, lib.crypto_box_easy_afternm, (box, msg, n)),
                              (1, lib.crypto_box_open_easy_afternm, (msg, box, n + 16))):
            t = time.perf_counter()
            for _ in range(50):
                call(args[0], args[1], ctypes.c_ulonglong(args[2]), nonce, key)
            rates[i].append(50 * n / (time.perf_counter() - t) / 1e9)
    return statistics.median(rates[0]), statistics.median(rates[1])


def pulls(reps: int = 5) -> dict[str, Any]:
    from jray._private import shm
    from jray._private.net import objects

    out: dict[str, Any] = {}
    secret = os.urandom(32)
    prefix = f"jray-xferbench{os.getpid()}-"
    saved = os.environ.get("JRAY_TCP_PLAINTEXT")
    try:
        for label, plain in (("encrypted", ""), ("plaintext", "1")):
            os.environ["JRAY_TCP_PLAINTEXT"] = plain
            src = subprocess.Popen([sys.executable, "-m", "benchmarks.cluster_transfer",
                                    "--serve", secret.hex(), prefix], stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, text=True)
            try:
                assert src.stdout is not None and src.stdin is not None
                addr = src.stdout.readline().strip()
                rates = []
                cpu0 = _cpu_s(src.pid) + _cpu_s(None)
                for i in range(reps):
                    dest = f"{prefix}dst{i}"
                    t = time.perf_counter()
                    objects.pull(addr, secret, objects.KIND_SHM, prefix + "src", 0, SIZE,
                                 dest)
                    rates.append(SIZE / (time.perf_counter() - t) / 1e9)
                    shm.unlink(dest)
                cpu = _cpu_s(src.pid) + _cpu_s(None) - cpu0
                out[f"pull_100MiB_{label}_GB_per_s"] = round(statistics.median(rates), 3)
                # CPU time both processes spent per GB moved: the rate two free cores
                # could reach at most is 2 / this
                out[f"pull_{label}_cpu_s_per_GB"] = round(cpu / (reps * SIZE / 1e9), 2)
                out[f"pull_100MiB_{label}_each"] = [round(r, 2) for r in rates]
            finally:
                if src.stdin is not None:
                    src.stdin.close()
                src.wait(30)
    finally:
        if saved is None:
            os.environ.pop("JRAY_TCP_PLAINTEXT", None)
        else:
            os.environ["JRAY_TCP_PLAINTEXT"] = saved
    enc, dec = _sodium()
    out["libsodium_encrypt_GB_per_s_one_core"] = round(enc, 2)
    out["libsodium_decrypt_GB_per_s_one_core"] = round(dec, 2)
    out["pull_streams_chunk_window"] = [objects._env_int("JRAY_PULL_STREAMS", objects.STREAMS),
                                        objects._env_int("JRAY_PULL_CHUNK", objects.CHUNK),
                                        objects._env_int("JRAY_PULL_WINDOW", objects.WINDOW)]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.cluster_transfer")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--json", default=None)
    ap.add_argument("--serve", nargs=2, default=None, help=argparse.SUPPRESS)
    ns = ap.parse_args(argv)
    if ns.serve:
        _serve(*ns.serve)
        return 0
    doc = pulls(ns.reps)
    for k, v in doc.items():
        print(f"{k:40} {v}")
    if ns.json:
        with open(ns.json, "w") as f:
            json.dump(doc, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
