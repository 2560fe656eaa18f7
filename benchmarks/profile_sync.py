"""Where the time of one one-at-a-time task goes (issue 16): a cProfile of both ends.

``python -m benchmarks.profile_sync [--n 3000] [--top 25]`` runs ``submit + get``
of a no-op task ``n`` times on a two-worker jray cluster, three ways:

1. unprofiled, for the rate;
2. with cProfile in the driver (the calling thread);
3. with cProfile in every worker's main thread (turned on and off by tasks that
   run there, so the worker's own loop is profiled, not a copy of it).

and, for scale, a bare ZeroMQ PUSH/PULL round trip between two Python
processes (``ipc://``, a poller, one pickled message each way): the floor any
design with one driver -> worker -> driver exchange per task stands on.

Each profile is split into *waiting* (``zmq.Poller.poll``: the process sleeps
until the other side's message arrives) and *working* (everything else, per
task), and the top functions by own time are printed. cProfile roughly doubles
the cost of Python calls, so the working times are upper bounds; the rates of
step 1 and of the bare round trip are unprofiled.
"""

from __future__ import annotations

import argparse
import builtins
import cProfile
import io
import os
import pickle
import pstats
import tempfile
import time
from typing import Any

import zmq

from benchmarks._tasks import noop

POLL_FUNC = "poll.py"  # zmq/sugar/poll.py: Poller.poll


def _split(stats: pstats.Stats, n: int) -> tuple[float, float]:
    """(waiting, working) seconds per task of a profile."""
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    total = stats.total_tt  # type: ignore[attr-defined]
    wait = sum(v[2] for k, v in raw.items() if k[0].endswith(POLL_FUNC) and k[2] == "poll")
    return wait / n, (total - wait) / n


def _report(title: str, prof: cProfile.Profile, n: int, top: int) -> str:
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out)
    wait, work = _split(stats, n)
    stats.sort_stats("tottime").print_stats(top)
    head = (f"=== {title}: {n} tasks; waiting in zmq poll {wait * 1e6:.0f} us/task, "
            f"working {work * 1e6:.0f} us/task (profiled)\n")
    return head + out.getvalue()


def _worker_on() -> int:
    if getattr(builtins, "_jray_profile", None) is None:
        prof = cProfile.Profile()
        builtins._jray_profile = prof  # type: ignore[attr-defined]
        prof.enable()
    return os.getpid()


def _worker_off(top: int) -> tuple[int, str, int]:
    prof = getattr(builtins, "_jray_profile", None)
    if prof is None:
        return os.getpid(), "", 0
    prof.disable()
    builtins._jray_profile = None  # type: ignore[attr-defined]
    stats = pstats.Stats(prof)
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    ran = sum(v[1] for k, v in raw.items() if k[2] == "noop")
    return os.getpid(), _report(f"worker {os.getpid()}", prof, max(ran, 1), top), ran


def bare_round_trip(n: int) -> float:
    """Round trips per second of one pickled message between two processes."""
    with tempfile.TemporaryDirectory(prefix="jray-pingpong-") as d:
        a, b = f"ipc://{d}/a.sock", f"ipc://{d}/b.sock"
        msg = pickle.dumps([(1, b"x" * 16, b"y" * 16, None)])
        pid = os.fork()
        if pid == 0:  # the echo side
            code = 1
            try:
                ctx = zmq.Context()
                pull, push = ctx.socket(zmq.PULL), ctx.socket(zmq.PUSH)
                pull.bind(b)
                push.connect(a)
                poller = zmq.Poller()
                poller.register(pull, zmq.POLLIN)
                for _ in range(n + 100):
                    if not poller.poll(5000):
                        break
                    push.send(pull.recv())
                pull.close(0)
                push.close(2000)  # the last answer leaves before the process exits
                ctx.term()
                code = 0
            finally:
                os._exit(code)
        ctx = zmq.Context()
        pull, push = ctx.socket(zmq.PULL), ctx.socket(zmq.PUSH)
        pull.bind(a)
        push.connect(b)
        poller = zmq.Poller()
        poller.register(pull, zmq.POLLIN)
        try:
            for i in range(n + 100):
                if i == 100:
                    start = time.perf_counter()
                push.send(msg)
                if not poller.poll(5000):
                    raise RuntimeError("bare_round_trip: the echo process did not answer")
                pull.recv()
            return n / (time.perf_counter() - start)
        finally:
            os.waitpid(pid, 0)
            pull.close(0)
            push.close(0)
            ctx.term()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3000, help="tasks per run")
    parser.add_argument("--top", type=int, default=25, help="functions shown per profile")
    args = parser.parse_args()
    if args.n < 1:
        parser.error(f"--n must be at least 1, got {args.n}")
    import jray

    print(f"bare ZeroMQ round trip: {bare_round_trip(args.n):,.0f}/s")
    jray.init(num_cpus=2)
    try:
        task = jray.remote(noop)
        on, off = jray.remote(_worker_on), jray.remote(_worker_off)
        for _ in range(300):
            jray.get(task.remote())
        start = time.perf_counter()
        for _ in range(args.n):
            jray.get(task.remote())
        rate = args.n / (time.perf_counter() - start)
        print(f"submit + get, unprofiled: {rate:,.0f} tasks/s ({1e6 / rate:.0f} us/task)")

        prof = cProfile.Profile()
        prof.enable()
        for _ in range(args.n):
            jray.get(task.remote())
        prof.disable()
        print(_report("driver", prof, args.n, args.top))

        pids: set[int] = set()
        for _ in range(20):  # bursts, so that every worker runs one
            pids.update(jray.get([on.remote() for _ in range(20)]))
        for _ in range(args.n):
            jray.get(task.remote())
        reports: dict[int, tuple[str, int]] = {}
        for _ in range(20):
            for pid, text, ran in jray.get([off.remote(args.top) for _ in range(20)]):
                if text:
                    reports[pid] = (text, ran)
        for pid in sorted(reports, key=lambda p: -reports[p][1]):
            if reports[pid][1] * 10 >= args.n:  # the leased worker (the other idles)
                print(reports[pid][0])
        print(f"(profiled workers: {sorted(pids)})")
    finally:
        jray.shutdown()


if __name__ == "__main__":
    main()
